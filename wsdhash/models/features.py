"""The `features` backbone: precomputed backbone features as the model's input.

`python -m wsdhash.extract` writes every split's features to an HDF5 file; training
with `--backbone=features --features=F.h5` then trains only the head. The backbone
passes the (B, F) feature rows through unchanged (no variables); its width comes from
the features file, its pipeline yields the stored rows (the crops, their 10-crop mean
and the normalisation were fixed at extraction, so the assembled model's input is the
float32 rows, used as they are).
"""

from __future__ import annotations

import dataclasses

import keras

from wsdhash.data import features_file, pipeline
from wsdhash.models.backbone_registry import BACKBONES
from wsdhash.models.spec import BackboneSpec

NAME = "features"


@dataclasses.dataclass(frozen=True)
class FeaturesSpec(BackboneSpec):
    """A `BackboneSpec` whose inputs are feature rows (module doc)."""

    def input_normalization(self, override: str = "") -> str:
        del override  # normalised at extraction
        return self.normalization

    def pipeline_config(
        self,
        image_size: int = 0,
        crop_size: int = 0,
        ten_crop: bool = False,
        augment: str = "random_crop_flip",
    ) -> pipeline.PipelineConfig:
        del image_size, crop_size, ten_crop, augment  # fixed at extraction
        return pipeline.PipelineConfig(image_size=1, crop_size=1, normalization=None)


@BACKBONES.register(NAME)
def features_backbone(*, data_dir: str, **unused) -> FeaturesSpec:
    """The backbone of the features file `data_dir` (weights, crop size, dropout, seed
    and pickles do not apply: it has no variables)."""
    del unused
    feature_dim = int(features_file.read_attributes(data_dir)["feature_dim"])
    inputs = keras.Input((feature_dim,), name="features")
    model = keras.Model(inputs, keras.layers.Identity()(inputs), name="features")
    return FeaturesSpec(model, "raw_pixels", 1, 1, feature_dim, input_dtype="float32")
