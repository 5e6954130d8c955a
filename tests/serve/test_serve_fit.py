"""The service refuses a model and an index that do not fit (code width, a quantizer for
an AQD index, its codebooks, codes the model does not reproduce) with one line, and
searches an AQD index with the model's embedding (a stand-in WSDHQ model)."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from fastapi.testclient import TestClient
from PIL import Image

from wsdhash.index.sharded import ShardedIndex, build_index
from wsdhash.service import engine as engine_lib
from wsdhash.service.app import create_app


class _QuantizedStandIn:
    """A WSDHQ SavedModel's interface: an embedding drawn from the image bytes, its
    codeword indices (nearest codeword per codebook) and the codebooks."""

    def __init__(self, codebooks):
        self.codebooks = np.asarray(codebooks, np.float32)
        self.quantization_encoder = type("Encoder", (), {})()
        self.quantization_encoder.codebooks_additive = tf.constant(self.codebooks)
        self.signatures = {"serving_default": self.serve}

    def serve(self, images):
        data = [bytes(b) for b in images.numpy()]
        valid = np.array([d.startswith((b"\x89PNG", b"\xff\xd8\xff")) for d in data])
        seeds = [int.from_bytes(hashlib.sha256(d).digest()[:4], "big") for d in data]
        dimension = self.codebooks.shape[2]
        embedding = (
            np.stack(
                [np.random.default_rng(s).normal(size=dimension).astype(np.float32) for s in seeds]
            )
            * valid[:, None]
        )
        indices = np.argmax(np.einsum("bd,mkd->bmk", embedding, self.codebooks), axis=2)
        return {
            "embedding": tf.constant(embedding),
            "codes": tf.constant(np.where(embedding >= 0, 1, -1).astype(np.int8)),
            "packed_codes": tf.constant(np.packbits(embedding >= 0, axis=1)),
            "quantization_codes": tf.constant(indices.astype(np.uint8)),
            "valid": tf.constant(valid),
            "status": tf.constant(np.where(valid, 0, 1).astype(np.int32)),
        }


def _books(seed, shape=(2, 16, 8)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _pngs(folder, count=12):
    os.makedirs(folder, exist_ok=True)
    paths = []
    for number in range(count):
        pixels = np.random.default_rng(number).integers(0, 256, (6, 6, 3), np.uint8)
        path = os.path.join(folder, f"{number:02d}.png")
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def _aqd_index(tmp_path, model, labels=True):
    paths = _pngs(str(tmp_path / "images"))
    blobs = []
    for path in paths:
        with open(path, "rb") as f:
            blobs.append(f.read())
    codes = model.serve(tf.constant(blobs))["quantization_codes"].numpy()
    metadata = {"images": str(tmp_path / "images")}
    if labels:
        metadata["labels"] = {p: [f"class {i % 3}"] for i, p in enumerate(paths)}
    build_index(
        str(tmp_path / "index"),
        [(codes, np.array(paths))],
        kind="aqd",
        codebooks=model.codebooks,
        metadata=metadata,
    )
    return ShardedIndex(str(tmp_path / "index")), blobs


def test_an_aqd_index_is_searched_with_the_embedding(tmp_path):
    model = _QuantizedStandIn(_books(0))
    index, blobs = _aqd_index(tmp_path, model)
    engine = engine_lib.SearchEngine(model, index)  # images root: the index's folder
    assert engine.checked == {"images": 8, "agreement": 1.0}
    response = TestClient(create_app(engine)).post(
        "/search?k=5", files={"image": ("q.png", blobs[4])}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metric"] == "aqd" and body["kind"] == "aqd"
    [prediction] = body["predictions"]
    embedding = model.serve(tf.constant([blobs[4]]))["embedding"].numpy()
    expected = index.search(embedding, 5)
    assert prediction["positions"] == expected.positions[0].tolist()
    np.testing.assert_allclose(prediction["distances"], expected.distances[0], atol=1e-5)
    assert prediction["labels"] == [f"class {p % 3}" for p in prediction["positions"]]
    assert prediction["paths"] == [f"{p:02d}.png" for p in prediction["positions"]]
    assert len(prediction["quantization_codes"]) == 2
    info = TestClient(create_app(engine)).get("/info").json()
    assert info["model"]["quantizer"] == [2, 16, 8] and info["index"]["labels"] is True
    assert info["model"]["bits"] == 8  # 2 codebooks of 16 codewords: 2 x 4 bits


def test_other_codebooks_or_codes_are_refused(tmp_path):
    model = _QuantizedStandIn(_books(0))
    index, _ = _aqd_index(tmp_path, model, labels=False)
    with pytest.raises(engine_lib.MismatchError, match="other codebooks than"):
        engine_lib.SearchEngine(_QuantizedStandIn(_books(1)), index)
    with pytest.raises(
        engine_lib.MismatchError,
        match="2 codebooks of 16 codewords in 8 dimensions, the model has 4 x 16",
    ):
        engine_lib.SearchEngine(_QuantizedStandIn(_books(0, (4, 16, 8))), index)
    # The same codebooks but other codes than the model gives: built with another model.
    shuffled = np.asarray(index.shards[0].indices)[::-1]
    build_index(
        str(tmp_path / "shuffled"),
        [(shuffled, index.ids)],
        kind="aqd",
        codebooks=model.codebooks,
        metadata={"images": str(tmp_path / "images")},
    )
    with pytest.raises(engine_lib.MismatchError, match="does not reproduce the codes"):
        engine_lib.SearchEngine(model, ShardedIndex(str(tmp_path / "shuffled")))
    engine_lib.SearchEngine(model, ShardedIndex(str(tmp_path / "shuffled")), check_images=0)


def _binary_index(path, codes, ids, images=None):
    metadata = {"images": images} if images else {}
    build_index(str(path), [(codes, np.asarray(ids))], kind="flat", metadata=metadata)
    return str(path)


def test_a_trained_model_and_an_index_that_do_not_fit(tmp_path, served_files, engine):
    _, images, model_dir, _ = served_files
    model = engine.model
    ids = list(engine.index.ids)
    wide = _binary_index(tmp_path / "wide", np.zeros((len(ids), 4), np.uint8), ids, images)
    with pytest.raises(engine_lib.MismatchError, match="gives 16-bit codes .* holds 32-bit"):
        engine_lib.SearchEngine(model, ShardedIndex(wide), model_dir=model_dir, index_dir=wide)
    aqd = tmp_path / "aqd"
    build_index(
        str(aqd),
        [(np.zeros((3, 2), np.uint8), np.array(["a", "b", "c"]))],
        kind="aqd",
        codebooks=_books(0, (2, 16, 16)),
    )
    with pytest.raises(engine_lib.MismatchError, match="AQD index .* has no quantizer"):
        engine_lib.SearchEngine(model, ShardedIndex(str(aqd)))
    flipped = np.bitwise_not(
        np.stack([engine.index.shards[0].index.reconstruct(i) for i in range(len(ids))])
    )
    other = _binary_index(tmp_path / "other", flipped, ids, images)
    with pytest.raises(engine_lib.MismatchError, match="does not reproduce the codes"):
        engine_lib.SearchEngine(model, ShardedIndex(other))
    # Codes the method learned (ADSH's V, said so in the manifest) are not expected to
    # be the model's codes of the images: the same codes are served, with the check
    # skipped; the width is still checked.
    learned = tmp_path / "learned"
    build_index(
        str(learned),
        [(flipped, np.asarray(ids))],
        kind="flat",
        metadata={"images": images, "database_codes": "learned"},
    )
    served = engine_lib.SearchEngine(model, ShardedIndex(str(learned)))
    assert served.checked == {"skipped": "the index holds database codes the method learned"}
    assert TestClient(create_app(served)).get("/info").json()["start_check"] == served.checked
    build_index(
        str(learned),
        [(np.zeros((len(ids), 4), np.uint8), np.asarray(ids))],
        kind="flat",
        metadata={"images": images, "database_codes": "learned"},
    )
    with pytest.raises(engine_lib.MismatchError, match="gives 16-bit codes .* holds 32-bit"):
        engine_lib.SearchEngine(model, ShardedIndex(str(learned)))


def test_an_index_of_another_networks_codes_is_refused(tmp_path, served_files, engine):
    # The fixture's index was built through the export: both name the same network.
    _, images, model_dir, index_dir = served_files
    fingerprint = engine.model_fingerprint
    assert fingerprint and engine.index.manifest["model_fingerprint"] == fingerprint
    assert engine.describe()["model"]["fingerprint"] == fingerprint
    ids = list(engine.index.ids)
    codes = np.stack([engine.index.shards[0].index.reconstruct(i) for i in range(len(ids))])
    for name, recorded in (("same", fingerprint), ("other", "0" * 64)):
        build_index(
            str(tmp_path / name),
            [(codes, np.asarray(ids))],
            kind="flat",
            metadata={"images": images, "model_fingerprint": recorded},
        )
    # The same codes: accepted when the manifest names this network, refused when it
    # names another, even with the image check off or the codes learned (no re-encoding).
    engine_lib.SearchEngine(engine.model, ShardedIndex(str(tmp_path / "same")), model_dir=model_dir)
    with pytest.raises(engine_lib.MismatchError, match="codes of another network .*000000000000"):
        engine_lib.SearchEngine(
            engine.model, ShardedIndex(str(tmp_path / "other")), model_dir=model_dir, check_images=0
        )
    # Without a recorded fingerprint on either side (older files), nothing is compared.
    engine_lib.SearchEngine(engine.model, ShardedIndex(str(tmp_path / "other")), check_images=0)


def test_serve_refuses_to_start_with_one_line(tmp_path, served_files):
    _, images, model_dir, _ = served_files
    ids = [os.path.join(images, name) for name in sorted(os.listdir(images))[:4]]
    wide = _binary_index(tmp_path / "wide", np.zeros((4, 4), np.uint8), ids, images)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wsdhash.serve",
            f"--model={model_dir}",
            f"--index={wide}",
            "--port=0",
            f"--log_file={tmp_path / 'serve.log'}",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("wsdhash.serve")]
    expected = (
        f"wsdhash.serve: error: the model and the index do not fit: --model={model_dir} gives "
        f"16-bit codes (2 bytes) but --index={wide} holds 32-bit codes (4 bytes): build the "
        f"index with this model (python -m wsdhash.search build --images=FOLDER "
        f"--model={model_dir} --output=INDEX)."
    )
    assert lines == [expected], result.stderr
    assert "Traceback" not in result.stderr and not result.stdout
