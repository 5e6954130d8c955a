"""Feature models from files (.keras, SavedModel, .tflite) give the features of the
model they hold, pooled to (B, F); unusable files are one clear error naming them."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from wsdhash.models import model_files


def _keras_model(side=16, seed=0):
    keras.utils.set_random_seed(seed)
    images = keras.Input((side, side, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu")(images)
    return keras.Model(images, keras.layers.Conv2D(8, 3)(x))  # (B, H, W, 8) feature map


def _images(side=16):
    return np.random.default_rng(1).uniform(0, 1, (4, side, side, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    model = _keras_model()
    model.save(root / "encoder.keras")

    class Module(tf.Module):
        def __init__(self):
            super().__init__()
            self.variables_ = [v.value for v in model.variables]

        @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32)])
        def serve(self, pixels):
            return {"output": model(pixels), "other": tf.zeros([tf.shape(pixels)[0], 2])}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def files(self, data):
            return {"output": tf.zeros([tf.shape(data)[0], 2])}

    module = Module()
    tf.saved_model.save(
        module,
        str(root / "saved"),
        signatures={"serving_default": module.serve, "bytes": module.files},
    )
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    (root / "encoder.tflite").write_bytes(converter.convert())
    expected = model(_images()).numpy().mean(axis=(1, 2))
    return root, expected


@pytest.mark.parametrize("name", ["encoder.keras", "saved", "encoder.tflite"])
def test_each_format_gives_the_pooled_features(files, name):
    root, expected = files
    kwargs = {"output": "output"} if name == "saved" else {}
    feature_model = model_files.load_feature_model(str(root / name), **kwargs)
    assert (feature_model.crop_size, feature_model.feature_dim) == (16, 8)
    features = tf.function(feature_model.__call__)(tf.constant(_images())).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)


def test_fingerprint_changes_with_the_weights(files, tmp_path):
    root, _ = files
    first = model_files.fingerprint(str(root / "encoder.keras"))
    assert first == model_files.fingerprint(str(root / "encoder.keras"))
    _keras_model(seed=5).save(tmp_path / "other.keras")
    assert model_files.fingerprint(str(tmp_path / "other.keras")) != first
    assert len(model_files.fingerprint(str(root / "saved"))) == 64


def test_unusable_files_are_clear_errors(files, tmp_path):
    root, _ = files
    (tmp_path / "weights.h5").write_bytes(b"x")
    os.makedirs(tmp_path / "folder")
    cases = {
        "does not exist": (str(tmp_path / "missing.keras"), {}),
        "not a .keras file, a SavedModel": (str(tmp_path / "weights.h5"), {}),
        "no saved_model.pb": (str(tmp_path / "folder"), {}),
        "choose one with --model_output": (str(root / "saved"), {}),
        "no output 'codes'": (str(root / "saved"), {"output": "codes"}),
        "no signature 'nope'": (str(root / "saved"), {"signature": "nope"}),
        "takes string": (str(root / "saved"), {"signature": "bytes"}),
    }
    for expected, (path, kwargs) in cases.items():
        with pytest.raises(model_files.ModelFileError, match=expected):
            model_files.load_feature_model(path, **kwargs)
