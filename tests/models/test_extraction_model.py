"""The feature model of a features file, found again for export: the recorded file or a
copy with the recorded SHA-256, never another model; its image features equal the
model's on the extraction's crops, with the 10-crop mean when the file says so."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from wsdhash.data import preprocessing
from wsdhash.models import extraction_model, model_files


def _network(seed):
    keras.utils.set_random_seed(seed)
    images = keras.Input((12, 12, 3))
    return keras.Model(images, keras.layers.Conv2D(5, 3, activation="relu")(images))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("extraction") / "encoder.keras"
    _network(0).save(path)
    return path


def _extraction(path, **changes):
    fields = {
        "features_path": "features.h5",
        "model_path": str(path),
        "sha256": model_files.fingerprint(str(path)) if path.exists() else "0" * 64,
        "model_format": "keras",
        "signature": "serving_default",
        "output": "",
        "backbone": f"model:{path}",
        "normalization": "torch_imagenet",
        "image_size": 16,
        "crop_size": 12,
        "ten_crop": False,
        "feature_dim": 5,
    }
    return extraction_model.Extraction(**{**fields, **changes})


def test_the_recorded_file_or_an_identical_copy_is_found(model_file, tmp_path):
    extraction = _extraction(model_file)
    assert extraction_model.locate_feature_model(extraction) == str(model_file)
    copy = tmp_path / "copy.keras"
    copy.write_bytes(model_file.read_bytes())
    assert extraction_model.locate_feature_model(extraction, str(copy)) == str(copy)


def test_another_missing_or_unrecorded_model_is_refused(model_file, tmp_path):
    other = tmp_path / "other.keras"
    _network(1).save(other)
    extraction = _extraction(model_file)
    with pytest.raises(extraction_model.FeatureModelError, match="is not the model"):
        extraction_model.locate_feature_model(extraction, str(other))
    with pytest.raises(extraction_model.FeatureModelError, match="does not exist"):
        extraction_model.locate_feature_model(_extraction(tmp_path / "gone.keras"))
    registered = dataclasses.replace(extraction, model_path=None, backbone="small_cnn")
    with pytest.raises(extraction_model.FeatureModelError, match="registered backbone"):
        extraction_model.locate_feature_model(registered)
    wrong_width = _extraction(model_file, feature_dim=7)
    with pytest.raises(extraction_model.FeatureModelError, match="5-d features"):
        extraction_model.ImageFeatures(wrong_width, str(model_file))


@pytest.mark.parametrize("ten_crop", [False, True])
def test_image_features_are_the_models_on_the_extractions_crops(model_file, ten_crop):
    extraction = _extraction(model_file, ten_crop=ten_crop)
    features = extraction_model.ImageFeatures(extraction, str(model_file))
    side = 16 if ten_crop else 12
    assert features.input_side == side
    pixels = np.random.default_rng(0).integers(0, 256, (3, side, side, 3)).astype(np.float32)
    network = keras.saving.load_model(model_file)

    def reference(crops):  # extract: normalise, the model, mean over space
        normalised = preprocessing.torch_imagenet(tf.constant(crops))
        return network(normalised).numpy().mean(axis=(1, 2))

    if ten_crop:  # extract's Encoder: the model on each of the 10 crops, averaged
        expected = np.stack(
            [reference(preprocessing.ten_crop(tf.constant(p), 12).numpy()).mean(0) for p in pixels]
        )
    else:
        expected = reference(pixels)
    np.testing.assert_allclose(features(tf.constant(pixels)).numpy(), expected, atol=1e-5)
