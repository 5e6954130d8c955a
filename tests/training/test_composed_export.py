"""A head trained on features, exported with its feature model in front: the SavedModel
takes images, loads without wsdhash and gives the codes the run wrote for the same
images; `search query --images` works with it and refuses a features-in export in one
line; a feature model other than the one the features came from is refused."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from wsdhash.data import features_file
from wsdhash.data.builtin import generate_builtin
from wsdhash.eval import read_codes_file
from wsdhash.model_fingerprint import EXPORT_INFO_FILE
from wsdhash.models import extraction_model, model_files
from wsdhash.service import engine

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
SIZES = {"num_train": 96, "num_query": 8, "num_database": 24}
# 32 x 32 PNGs, resized to 32 (no resampling) and cropped to 28: OpenCV (extract) and
# the SavedModel's decoder see the same pixels, so the codes must be equal.
IMAGE_FLAGS = ["--image_size=32", "--crop_size=28", "--normalization=unit_range"]


def _run(module, *args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        env=ENV,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _feature_network(seed=0):
    keras.utils.set_random_seed(seed)
    images = keras.Input((28, 28, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(images)
    return keras.Model(images, keras.layers.Conv2D(16, 3)(x))  # (B, 11, 11, 16) map


def _saved_model(network, path):
    """`network` as a plain TF2 SavedModel with one signature (not a wsdhash export)."""

    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.weights_ = [v.value for v in network.variables]

        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 3], tf.float32)])
        def serve(self, pixels):
            return {"output": network(pixels)}

    module = Module()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def _extract(data_dir, model, output, *extra):
    return _run(
        "wsdhash.extract",
        "--dataset=builtin",
        f"--data_dir={data_dir}",
        "--builtin_sizes=96,8,24",
        "--builtin_image_size=32",
        f"--model={model}",
        *IMAGE_FLAGS,
        "--batch_size=64",
        f"--output={output}",
        *extra,
    )


def _tflite(network, path):
    """`network` as a full-integer (int8) TFLite model, float in and out."""
    rng = np.random.default_rng(0)

    def representative():
        for _ in range(16):
            yield [rng.uniform(0, 1, (1, 28, 28, 3)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(network)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    path.write_bytes(converter.convert())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """For each feature model format, on first use: extract -> train a few steps on the
    features -> export composed. Returns a function format -> (folder, model file)."""
    root = tmp_path_factory.mktemp("composed")
    data_dir = root / "builtin"
    generate_builtin(data_dir, image_size=32, **SIZES)
    network = _feature_network()
    done = {}

    def run(kind):
        if kind in done:
            return done[kind]
        folder = root / kind
        folder.mkdir()
        model = (
            folder
            / {"keras": "encoder.keras", "saved_model": "encoder", "tflite": "encoder.tflite"}[kind]
        )
        {
            "keras": lambda: network.save(model),
            "saved_model": lambda: _saved_model(network, model),
            "tflite": lambda: _tflite(network, model),
        }[kind]()
        _extract(data_dir, model, folder / "features.h5")
        _run(
            "wsdhash.train",
            "--backbone=features",
            f"--features={folder / 'features.h5'}",
            "--method=orthohash",
            "--steps=4",
            "--batch_size=32",
            "--validation_size=16",
            "--hash_bit=16",
            f"--workdir={folder / 'run'}",
        )
        result = _run(
            "wsdhash.export", f"--workdir={folder / 'run'}", f"--output={folder / 'exported'}"
        )
        assert f"-> {kind} feature model" in result.stdout
        done[kind] = folder, model
        return done[kind]

    return run


def _serve_without_wsdhash(model_dir, paths, output):
    """serving_default on the files, in a fresh interpreter where wsdhash cannot load,
    through the TF2 loader and TensorFlow 1's session loader (TF Serving's path)."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["wsdhash"] = None
        import numpy as np, tensorflow as tf
        data = [open(p, "rb").read() for p in {list(map(str, paths))!r}]
        loaded = tf.saved_model.load({str(model_dir)!r})
        result = loaded.signatures["serving_default"](images=tf.constant(data))
        results = {{k: v.numpy() for k, v in result.items()}}
        with tf.Graph().as_default(), tf.compat.v1.Session() as session:
            graph = tf.compat.v1.saved_model.load(session, ["serve"], {str(model_dir)!r})
            signature = graph.signature_def["serving_default"]
            fetches = {{k: v.name for k, v in signature.outputs.items()}}
            out = session.run(fetches, {{signature.inputs["images"].name: data}})
            results.update({{f"session/{{k}}": v for k, v in out.items()}})
        np.savez({str(output)!r}, **results)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, env=ENV
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(output)


@pytest.mark.parametrize(
    "kind",
    [
        "keras",
        pytest.param("saved_model", marks=pytest.mark.slow),
        pytest.param("tflite", marks=pytest.mark.slow),
    ],
)
def test_composed_export_gives_the_run_codes_for_the_same_images(runs, kind, tmp_path):
    folder, model = runs(kind)
    codes = read_codes_file(folder / "run" / "codes.h5")
    query = features_file.read_split(str(folder / "features.h5"), "query")
    served = _serve_without_wsdhash(folder / "exported", query.paths, tmp_path / "served.npz")
    assert served["valid"].all()
    # Equal codes for every format: the TFLite graph reproduces the interpreter's
    # integers (tests/models/test_tflite_graph.py), so its features are equal too.
    np.testing.assert_array_equal(served["packed_codes"], codes.query.codes)
    np.testing.assert_allclose(served["embedding"], codes.query.features, atol=1e-4)
    np.testing.assert_array_equal(served["session/packed_codes"], codes.query.codes)
    loaded = tf.saved_model.load(str(folder / "exported"))
    assert sorted(loaded.signatures) == ["encode_images", "serving_default"]
    with open(folder / "exported" / EXPORT_INFO_FILE) as f:
        info = json.load(f)
    assert info["model_fingerprint"] == codes.model_fingerprint  # the head's, as recorded
    assert info["feature_model_sha256"] == model_files.fingerprint(str(model))


def test_search_by_image_with_a_composed_export_and_a_clear_error_without(runs, tmp_path):
    pytest.importorskip("faiss")
    root, _ = runs("keras")
    query = features_file.read_split(str(root / "features.h5"), "query")
    _run(
        "wsdhash.search",
        "build",
        f"--codes={root / 'run' / 'codes.h5'}",
        f"--output={tmp_path / 'index'}",
    )
    result = _run(
        "wsdhash.search",
        "query",
        f"--index={tmp_path / 'index'}",
        f"--images={query.paths[0]}",
        f"--model={root / 'exported'}",
        "--k=3",
        "--json",
    )
    (answer,) = json.loads(result.stdout)
    # Its own code is in the index's database only by chance; distances are Hamming.
    assert len(answer["results"]) == 3 and answer["results"][0]["distance"] >= 0

    # The service (python -m wsdhash.serve) takes the pair: its start-up re-encodes
    # database images by photo and finds the index's codes.
    data_dir = root.parent / "builtin"  # the codes file's ids are its image paths
    service = engine.load(str(root / "exported"), str(tmp_path / "index"), str(data_dir))
    assert service.checked == {"images": 8, "agreement": 1.0}

    features_in = tmp_path / "features_in"
    _run(
        "wsdhash.export", f"--workdir={root / 'run'}", f"--output={features_in}", "--input=features"
    )
    with pytest.raises(engine.MismatchError, match="takes \\['features'\\], not encoded images"):
        engine.load(str(features_in), str(tmp_path / "index"), str(data_dir))
    result = _run(
        "wsdhash.search",
        "query",
        f"--index={tmp_path / 'index'}",
        f"--images={query.paths[0]}",
        f"--model={features_in}",
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = [s for s in result.stderr.splitlines() if s.startswith("wsdhash.search: error:")]
    assert "takes features, not images" in line and "--feature_model=FILE" in line
    assert len(line) < 600 and "\\x" not in result.stderr  # not the image's bytes


def test_another_model_file_is_refused_and_a_moved_one_accepted(runs, tmp_path):
    root, model = runs("keras")
    other = tmp_path / "other.keras"
    _feature_network(seed=1).save(other)
    result = _run(
        "wsdhash.export",
        f"--workdir={root / 'run'}",
        f"--output={tmp_path / 'x'}",
        f"--feature_model={other}",
        check=False,
    )
    assert result.returncode == 2
    [line] = [s for s in result.stderr.splitlines() if s.startswith("wsdhash.export: error:")]
    assert f"{other} is not the model" in line and "SHA-256" in line
    assert not (tmp_path / "x").exists()

    # The recorded file gone: auto falls back to features in, saying so; a copy works.
    extraction = extraction_model.read_extraction(str(root / "features.h5"))
    assert extraction.model_path == str(model)
    assert extraction.model_format == "keras" and extraction.crop_size == 28
    moved = tmp_path / "moved.keras"
    os.replace(model, moved)
    try:
        result = _run(
            "wsdhash.export", f"--workdir={root / 'run'}", f"--output={tmp_path / 'auto'}"
        )
        assert "exporting a model that takes features" in result.stderr
        loaded = tf.saved_model.load(str(tmp_path / "auto"))
        assert "features" in loaded.signatures["serving_default"].structured_input_signature[1]
        result = _run(
            "wsdhash.export",
            f"--workdir={root / 'run'}",
            "--input=images",
            f"--output={tmp_path / 'strict'}",
            check=False,
        )
        assert result.returncode == 2 and "does not exist" in result.stderr
        _run(
            "wsdhash.export",
            f"--workdir={root / 'run'}",
            f"--feature_model={moved}",
            f"--output={tmp_path / 'moved'}",
        )
    finally:
        os.replace(moved, model)
