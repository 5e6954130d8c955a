"""The backbone registry itself: `BACKBONES` (name -> factory) and the factory maker
for the backbones defined in this package.

Each backbone module registers its backbones where it defines them,

    BACKBONES.register("vgg16")(own_backbone(vgg16, normalization=..., ...))

and `wsdhash.models.backbones` imports every backbone module (so the registry is
complete) and builds them (`build_backbone`). A factory is called as
`factory(weights=..., crop_size=..., dropout=..., seed=..., allow_pickle=...,
data_dir=...)` and returns a `BackboneSpec`.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from wsdhash.models import weights as weights_lib
from wsdhash.models.spec import BackboneSpec
from wsdhash.registry import Registry

BackboneFactory = Callable[..., BackboneSpec]
BACKBONES: Registry[BackboneFactory] = Registry("backbone")


class NoImageNetWeightsError(ValueError):
    """ "imagenet" was asked for a backbone whose ImageNet weights must be converted."""


def _load_weights(
    model: keras.Model,
    weights: str,
    *,
    allow_pickle: bool,
    converter: weights_lib.Converter | None,
    imagenet_help: str,
) -> None:
    """Fills a freshly built (randomly initialised) model from `weights`."""
    if weights == "none":
        return
    if weights == "imagenet":
        raise NoImageNetWeightsError(imagenet_help)
    weights_lib.load_weights_file(model, weights, allow_pickle=allow_pickle, converter=converter)


def own_backbone(
    build_model: Callable[..., keras.Model],
    *,
    normalization: str,
    image_size: int,
    default_crop_size: int,
    feature_dim: int,
    default_dropout: float | None,
    fixed_input: bool,
    converter: weights_lib.Converter | None,
    imagenet_help: str,
) -> BackboneFactory:
    """A factory for a backbone defined in this package (not keras.applications)."""

    def factory(*, weights, crop_size=None, dropout=None, seed=0, allow_pickle=False, **unused):
        crop = crop_size or default_crop_size
        rate = default_dropout if dropout is None else dropout
        size_kwargs = {"crop_size": crop} if fixed_input else {}
        model = build_model(dropout=rate, seed=seed, **size_kwargs)
        _load_weights(
            model,
            weights,
            allow_pickle=allow_pickle,
            converter=converter,
            imagenet_help=imagenet_help,
        )
        return BackboneSpec(model, normalization, max(image_size, crop), crop, feature_dim)

    return factory
