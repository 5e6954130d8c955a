"""What a backbone is to the rest of wsdhash: its model and the inputs it expects.

A `BackboneSpec` carries everything generic code needs to feed a backbone: the
normalisation its weights expect, the resize and crop sides of the input pipeline,
the dtype of the model's input, and the width of its features. Generic code (model
assembly, training, serving, extraction) asks the spec and never asks which backbone
it is: the `features` backbone (precomputed features, `wsdhash.models.features`) is a
spec like any other, whose pipeline passes feature rows through.
"""

from __future__ import annotations

import dataclasses

import keras

from wsdhash.data import pipeline


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A feature extractor and the input pipeline its weights expect.

    Attributes:
        model: float inputs (B, S, S, 3) images, already normalised -> features (B, F).
        normalization: name in `wsdhash.data.preprocessing.NORMALIZATIONS`.
        image_size: default resize side before cropping.
        crop_size: default crop side (the model's input side where it is fixed).
        feature_dim: F.
        input_dtype: the dtype of the assembled model's input ("uint8" decoded images).
    """

    model: keras.Model
    normalization: str
    image_size: int
    crop_size: int
    feature_dim: int
    input_dtype: str = "uint8"

    def input_normalization(self, override: str = "") -> str:
        """The normalisation of the model's first layer: `override` (a user's
        `--normalization`) or the backbone's own."""
        return override or self.normalization

    def pipeline_config(
        self,
        image_size: int = 0,
        crop_size: int = 0,
        ten_crop: bool = False,
        augment: str = "random_crop_flip",
    ) -> pipeline.PipelineConfig:
        """The input pipeline of this backbone; 0 keeps the backbone's sizes; `augment`
        names the training augmentation (`preprocessing.AUGMENTATIONS`). The pipeline
        yields uint8 crops: the model's first layer normalises."""
        return pipeline.PipelineConfig(
            image_size=image_size or max(self.image_size, self.crop_size),
            crop_size=crop_size or self.crop_size,
            normalization=None,
            ten_crop=ten_crop,
            augment=augment,
        )
