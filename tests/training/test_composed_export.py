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

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
SIZES = {"num_train": 96, "num_query": 8, "num_database": 24}
# 32 x 32 PNGs, resized to 32 (no resampling) and cropped to 28: OpenCV (extract) and
# the SavedModel's decoder see the same pixels, so the codes must be equal.
IMAGE_FLAGS = ["--image_size=32", "--crop_size=28", "--normalization=unit_range"]


def _run(module, *args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
        env=ENV,
    )  # fmt: skip
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
        "wsdhash.extract", "--dataset=builtin", f"--data_dir={data_dir}",
        "--builtin_sizes=96,8,24", "--builtin_image_size=32", f"--model={model}",
        *IMAGE_FLAGS, "--batch_size=64", f"--output={output}", *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """extract (.keras) -> train a few steps on the features -> export composed."""
    root = tmp_path_factory.mktemp("composed")
    data_dir = root / "builtin"
    generate_builtin(data_dir, image_size=32, **SIZES)
    network = _feature_network()
    network.save(root / "encoder.keras")
    _extract(data_dir, root / "encoder.keras", root / "features.h5")
    workdir = root / "run"
    _run(
        "wsdhash.train", "--backbone=features", f"--features={root / 'features.h5'}",
        "--method=orthohash", "--steps=4", "--batch_size=32", "--validation_size=16",
        "--hash_bit=16", f"--workdir={workdir}",
    )  # fmt: skip
    result = _run("wsdhash.export", f"--workdir={workdir}", f"--output={root / 'exported'}")
    assert "-> keras feature model" in result.stdout
    return root, network


def _serve_without_wsdhash(model_dir, paths, output):
    """serving_default on the files, in a fresh interpreter where wsdhash cannot load."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["wsdhash"] = None
        import numpy as np, tensorflow as tf
        loaded = tf.saved_model.load({str(model_dir)!r})
        data = tf.constant([open(p, "rb").read() for p in {list(map(str, paths))!r}])
        result = loaded.signatures["serving_default"](images=data)
        np.savez({str(output)!r}, **{{k: v.numpy() for k, v in result.items()}})
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(output)


def test_composed_export_gives_the_run_codes_for_the_same_images(run, tmp_path):
    root, _ = run
    codes = read_codes_file(root / "run" / "codes.h5")
    query = features_file.read_split(str(root / "features.h5"), "query")
    served = _serve_without_wsdhash(root / "exported", query.paths, tmp_path / "served.npz")
    assert served["valid"].all()
    np.testing.assert_array_equal(served["packed_codes"], codes.query.codes)
    np.testing.assert_allclose(served["embedding"], codes.query.features, atol=1e-4)
    loaded = tf.saved_model.load(str(root / "exported"))
    assert sorted(loaded.signatures) == ["encode_images", "serving_default"]
    with open(root / "exported" / EXPORT_INFO_FILE) as f:
        info = json.load(f)
    assert info["model_fingerprint"] == codes.model_fingerprint  # the head's, as recorded
    assert info["feature_model_sha256"] == model_files.fingerprint(str(root / "encoder.keras"))


def test_search_by_image_with_a_composed_export_and_a_clear_error_without(run, tmp_path):
    pytest.importorskip("faiss")
    root, _ = run
    query = features_file.read_split(str(root / "features.h5"), "query")
    _run(
        "wsdhash.search", "build", f"--codes={root / 'run' / 'codes.h5'}",
        f"--output={tmp_path / 'index'}",
    )  # fmt: skip
    result = _run(
        "wsdhash.search", "query", f"--index={tmp_path / 'index'}",
        f"--images={query.paths[0]}", f"--model={root / 'exported'}", "--k=3", "--json",
    )  # fmt: skip
    (answer,) = json.loads(result.stdout)
    # Its own code is in the index's database only by chance; distances are Hamming.
    assert len(answer["results"]) == 3 and answer["results"][0]["distance"] >= 0

    features_in = tmp_path / "features_in"
    _run("wsdhash.export", f"--workdir={root / 'run'}", f"--output={features_in}",
         "--input=features")  # fmt: skip
    result = _run(
        "wsdhash.search", "query", f"--index={tmp_path / 'index'}",
        f"--images={query.paths[0]}", f"--model={features_in}", check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = [s for s in result.stderr.splitlines() if s.startswith("wsdhash.search: error:")]
    assert "takes features, not images" in line and "--feature_model=FILE" in line
    assert len(result.stderr) < 2000  # not the image bytes


def test_another_model_file_is_refused_and_a_moved_one_accepted(run, tmp_path):
    root, network = run
    other = tmp_path / "other.keras"
    _feature_network(seed=1).save(other)
    result = _run(
        "wsdhash.export", f"--workdir={root / 'run'}", f"--output={tmp_path / 'x'}",
        f"--feature_model={other}", check=False,
    )  # fmt: skip
    assert result.returncode == 2
    [line] = [s for s in result.stderr.splitlines() if s.startswith("wsdhash.export: error:")]
    assert f"{other} is not the model" in line and "SHA-256" in line
    assert not (tmp_path / "x").exists()

    # The recorded file gone: auto falls back to features in, saying so; a copy works.
    extraction = extraction_model.read_extraction(str(root / "features.h5"))
    assert extraction.model_path == str(root / "encoder.keras")
    assert extraction.model_format == "keras" and extraction.crop_size == 28
    moved = tmp_path / "moved.keras"
    os.replace(root / "encoder.keras", moved)
    try:
        result = _run("wsdhash.export", f"--workdir={root / 'run'}",
                      f"--output={tmp_path / 'auto'}")  # fmt: skip
        assert "exporting a model that takes features" in result.stderr
        loaded = tf.saved_model.load(str(tmp_path / "auto"))
        assert "features" in loaded.signatures["serving_default"].structured_input_signature[1]
        result = _run("wsdhash.export", f"--workdir={root / 'run'}", "--input=images",
                      f"--output={tmp_path / 'strict'}", check=False)  # fmt: skip
        assert result.returncode == 2 and "does not exist" in result.stderr
        _run("wsdhash.export", f"--workdir={root / 'run'}", f"--feature_model={moved}",
             f"--output={tmp_path / 'moved'}")  # fmt: skip
    finally:
        os.replace(moved, root / "encoder.keras")
