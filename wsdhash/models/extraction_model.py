"""The feature model a features file was extracted with, found again for export.

    extraction = read_extraction("features/mine.h5")
    path = locate_feature_model(extraction, feature_model=None)   # or a moved copy
    features = ImageFeatures(extraction, path)   # [0, 255] crops (B, S, S, 3) -> (B, F)

A head trained on features (`python -m wsdhash.train --backbone=features`) takes
feature rows. To serve it by photo, `python -m wsdhash.export` puts the feature model
in front of it, with what `python -m wsdhash.extract --model=FILE` recorded in the
features file (wsdhash/data/features_file.py): the model's absolute path
(`backbone="model:PATH"`), its SHA-256 (`weights="sha256:HEX"`), format, SavedModel
signature and output, the normalisation, the resize and crop sides. A model file given
instead of the recorded path must have the recorded SHA-256: a model that merely has
the same shapes would give features the head was never trained on.

Features of registered backbones (`extract --backbone=NAME`) record no file to load
again, so they stay features-in exports.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf

from wsdhash.data import features_file, preprocessing
from wsdhash.data.types import DataFormatError
from wsdhash.models import model_files

MODEL_PREFIX = "model:"
SHA256_PREFIX = "sha256:"


class FeatureModelError(ValueError):
    """The feature model of a features file cannot be found, or is another model."""


@dataclasses.dataclass(frozen=True)
class Extraction:
    """How a features file's rows were made (the attributes `extract` records).

    Attributes:
        features_path: the features file.
        model_path: the feature model file extract loaded, or None for a registered
            backbone.
        sha256: that file's SHA-256 (`model_files.fingerprint`), or None.
        model_format: "keras", "saved_model" or "tflite" (None: not recorded).
        signature, output: the SavedModel signature and output ("" output: its only one).
        backbone: the recorded backbone (a registered name, or "model:PATH").
        normalization, image_size, crop_size, ten_crop, feature_dim: as recorded.
    """

    features_path: str
    model_path: str | None
    sha256: str | None
    model_format: str | None
    signature: str
    output: str
    backbone: str
    normalization: str
    image_size: int
    crop_size: int
    ten_crop: bool
    feature_dim: int


def read_extraction(features_path: str) -> Extraction:
    """The extraction settings of a features file; DataFormatError when unreadable."""
    attrs = features_file.read_attributes(features_path)
    backbone = str(attrs.get("backbone", ""))
    weights = str(attrs.get("weights", ""))
    is_file = backbone.startswith(MODEL_PREFIX)
    return Extraction(
        features_path=features_path,
        model_path=backbone[len(MODEL_PREFIX) :] if is_file else None,
        sha256=weights[len(SHA256_PREFIX) :] if weights.startswith(SHA256_PREFIX) else None,
        model_format=str(attrs["model_format"]) if "model_format" in attrs else None,
        signature=str(attrs.get("model_signature", "serving_default")),
        output=str(attrs.get("model_output", "")),
        backbone=backbone,
        normalization=str(attrs["normalization"]),
        image_size=int(attrs["image_size"]),
        crop_size=int(attrs["crop_size"]),
        ten_crop=bool(attrs["ten_crop"]),
        feature_dim=int(attrs["feature_dim"]),
    )


def locate_feature_model(extraction: Extraction, feature_model: str | None = None) -> str:
    """The feature model file to compose: `feature_model` when given, else the path the
    features file recorded; checked against the recorded SHA-256.

    Raises:
        FeatureModelError: a registered backbone (no model file), a missing file, or a
            file with another SHA-256; the message names the file and the flag to use.
    """
    name = extraction.features_path
    if extraction.model_path is None:
        raise FeatureModelError(
            f"{name} holds features of the registered backbone {extraction.backbone!r}, "
            "not of a model file (`python -m wsdhash.extract --model=FILE`)"
        )
    path = feature_model or extraction.model_path
    if not os.path.exists(path):
        where = "--feature_model" if feature_model else f"{name} names"
        raise FeatureModelError(
            f"the feature model {path} ({where}) does not exist; give the file the "
            "features were extracted with as --feature_model=FILE"
        )
    if extraction.sha256 is None:
        raise FeatureModelError(f"{name} records no SHA-256 of its feature model")
    digest = model_files.fingerprint(path)
    if digest != extraction.sha256:
        raise FeatureModelError(
            f"{path} is not the model {name} was extracted with (SHA-256 {digest[:12]}, "
            f"recorded {extraction.sha256[:12]})"
        )
    return path


class ImageFeatures:
    """[0, 255] float32 images (B, P, P, 3) -> the features the extraction gave (B, F).

    The normalisation the extraction used, then the feature model as graph ops (a
    `.tflite` model through wsdhash/models/tflite_graph.py), pooled as extract pools.
    P (`input_side`) is the crop side S; for features extracted with `--ten_crop` it
    is the resize side, and the features are the mean over WSDHQ's 10 crops, as
    extract averaged them.

    Args:
        extraction: `read_extraction(...)`.
        path: `locate_feature_model(...)`.

    Attributes:
        variables: the model's `tf.Variable`s (a saving module must track them).
        kind: the model's format.
        input_side: P.
    """

    def __init__(self, extraction: Extraction, path: str):
        try:
            model = model_files.load_feature_model(
                path,
                signature=extraction.signature or "serving_default",
                output=extraction.output or None,
                savable=True,
            )
        except model_files.ModelFileError as error:
            raise FeatureModelError(str(error)) from None
        if model.feature_dim != extraction.feature_dim:
            raise FeatureModelError(
                f"{path} gives {model.feature_dim}-d features, {extraction.features_path} "
                f"holds {extraction.feature_dim}-d ones"
            )
        if model.crop_size and model.crop_size != extraction.crop_size:
            raise FeatureModelError(
                f"{path} takes {model.crop_size}x{model.crop_size} images, the features "
                f"were extracted from {extraction.crop_size}x{extraction.crop_size} crops"
            )
        self._model = model
        self._normalize = preprocessing.NORMALIZATIONS.get(extraction.normalization)
        self.variables = model.variables
        self.kind = model.kind
        self.ten_crop = extraction.ten_crop
        self.crop_size = extraction.crop_size
        self.input_side = extraction.image_size if self.ten_crop else extraction.crop_size

    def __call__(self, pixels: tf.Tensor) -> tf.Tensor:
        pixels = self._normalize(tf.cast(pixels, tf.float32))
        if not self.ten_crop:
            return self._model(pixels)
        # preprocessing.ten_crop's crops, in its order, on the whole batch at once.
        crop = self.crop_size
        crops = [
            view[:, top : top + crop, left : left + crop]
            for view in (pixels[:, :, ::-1], pixels)
            for top, left in preprocessing.ten_crop_offsets(self.input_side, crop)
        ]
        count = tf.shape(pixels)[0]
        features = self._model(tf.concat(crops, axis=0))  # (10 B, F), crop-major
        return tf.reduce_mean(tf.reshape(features, [10, count, -1]), axis=0)


def image_features_for(
    features_path: str, feature_model: str | None = None
) -> tuple[ImageFeatures, Extraction]:
    """`ImageFeatures` of a features file's model (`locate_feature_model`); raises
    FeatureModelError, or DataFormatError for an unreadable features file."""
    try:
        extraction = read_extraction(features_path)
    except (DataFormatError, OSError) as error:
        raise FeatureModelError(str(error)) from None
    path = locate_feature_model(extraction, feature_model)
    return ImageFeatures(extraction, path), extraction
