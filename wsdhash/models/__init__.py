"""Backbones (feature extractors), hash heads and the hashing model.

from wsdhash.models import build_backbone, build_hashing_model

spec = build_backbone("alexnet", weights="alexnet_torchvision.npz")
model = build_hashing_model(spec, "linear_bn", bits=64, seed=0)
"""

from wsdhash.models.backbones import BACKBONES, build_backbone
from wsdhash.models.heads import HEADS, build_hashing_model, split_hashing_model
from wsdhash.models.spec import BackboneSpec
from wsdhash.models.weights import (
    LoadReport,
    PickleNotAllowedError,
    WeightsMismatchError,
    load_weights_file,
    save_named_arrays,
)

__all__ = [
    "BACKBONES",
    "HEADS",
    "BackboneSpec",
    "LoadReport",
    "PickleNotAllowedError",
    "WeightsMismatchError",
    "build_backbone",
    "build_hashing_model",
    "load_weights_file",
    "save_named_arrays",
    "split_hashing_model",
]
