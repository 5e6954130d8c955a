"""The backbone registry: name -> feature extractor with its preprocessing defaults.

    spec = build_backbone("alexnet_caffe", weights="alexnet.npy", allow_pickle=True)
    features = spec.model(NORMALIZATIONS.get(spec.normalization)(images))  # (B, 4096)

| name            | layout / source               | normalization     | size    | F    |
|-----------------|-------------------------------|-------------------|---------|------|
| alexnet_caffe   | CaffeNet (DeepHash, WSDHQ)    | caffe_mean_on_rgb | 256/227 | 4096 |
| alexnet         | torchvision (HyP², OrthoHash) | torch_imagenet    | 256/224 | 4096 |
| vgg16           | torchvision (BiHalf, GreedyHash-unsup.) | torch_imagenet | 256/224 | 4096 |
| resnet18        | torchvision (DNNH re-impl.)   | torch_imagenet    | 256/224 | 512  |
| resnet50        | keras.applications            | caffe_bgr         | 256/224 | 2048 |
| inception_v3    | keras.applications            | minus_one_to_one  | 342/299 | 2048 |
| mobilenet_v2    | keras.applications            | minus_one_to_one  | 256/224 | 1280 |
| efficientnet_b0 | keras.applications            | raw_pixels        | 256/224 | 1280 |
| small_cnn       | tests and the CPU demo        | unit_range        | 64/56   | 128  |
| keras_hub:P     | keras-hub preset P (name or folder; keras_hub_presets.py) | in the model | preset | any |
| features        | precomputed features (`--features=F.h5`; features.py) | at extraction | - | file's |

`weights` is "none" (seeded random initialisation), "imagenet" (Keras' download for
keras.applications backbones; for the others an error explains how to convert the
published weights), or a file: `.weights.h5`, legacy `.h5`, `.npz` of named arrays
(Keras variable paths, or a torchvision `state_dict` for alexnet/vgg16/resnet18) or a pickled
`.npy` dict as DeepHash's `alexnet.npy` (needs `allow_pickle=True`).
See `wsdhash.models.weights` for the formats.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from wsdhash.models import (
    alexnet,
    keras_applications,
    keras_hub_presets,
    resnet18,
    small_cnn,
    vgg16,
)
from wsdhash.models import weights as weights_lib
from wsdhash.models.features import NAME as FEATURES
from wsdhash.models.features import features_backbone
from wsdhash.models.spec import BackboneSpec
from wsdhash.registry import Registry

BackboneFactory = Callable[..., BackboneSpec]
BACKBONES: Registry[BackboneFactory] = Registry("backbone")


def build_backbone(
    name: str,
    *,
    weights: str = "none",
    crop_size: int | None = None,
    dropout: float | None = None,
    seed: int = 0,
    allow_pickle: bool = False,
    data_dir: str = "",
) -> BackboneSpec:
    """Builds the backbone registered as `name`.

    Args:
        name: a name in `BACKBONES` (see the module docstring), or `keras_hub:PRESET`.
        weights: "none", "imagenet", or a weights file path.
        crop_size: input side; default: the backbone's `crop_size`.
        dropout: dropout rate. For the AlexNets and VGG16 the fc6/fc7 dropout (default 0.5, as
            published); for the others an optional dropout on the pooled features
            (default none).
        seed: seeds the random initialisation and the dropout masks.
        allow_pickle: allow reading a pickled `.npy` dict (DeepHash's `alexnet.npy`).
            Pickles can execute code; only pass True for files you trust.
        data_dir: the dataset's location, for a backbone shaped by its data (`features`:
            the features file, whose width it takes).

    Returns:
        A `BackboneSpec`.

    Raises:
        KeyError: unknown name.
        ValueError (WeightsMismatchError, PickleNotAllowedError): unusable weights file,
            or "imagenet" for a backbone without downloadable ImageNet weights.
        keras_applications.ImageNetWeightsUnavailableError: the Keras download failed.
    """
    if name.startswith(keras_hub_presets.PREFIX):  # keras_hub:PRESET (a name or a folder)
        return keras_hub_presets.keras_hub_backbone(
            name[len(keras_hub_presets.PREFIX) :],
            weights="preset" if weights == "imagenet" else weights,
            crop_size=crop_size,
            dropout=dropout,
            seed=seed,
            allow_pickle=allow_pickle,
        )
    factory = BACKBONES.get(name)
    return factory(
        weights=weights,
        crop_size=crop_size,
        dropout=dropout,
        seed=seed,
        allow_pickle=allow_pickle,
        data_dir=data_dir,
    )


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


def _own_backbone(
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


def _keras_application_backbone(name: str) -> BackboneFactory:
    application = keras_applications.KERAS_APPLICATIONS[name]

    def factory(*, weights, crop_size=None, dropout=None, seed=0, allow_pickle=False, **unused):
        crop = crop_size or application.crop_size
        built_with = weights if weights in ("none", "imagenet") else "none"
        model = keras_applications.keras_application(
            name, weights=built_with, crop_size=crop, dropout=dropout, seed=seed
        )
        if built_with != weights:
            weights_lib.load_weights_file(model, weights, allow_pickle=allow_pickle)
        return BackboneSpec(
            model,
            application.normalization,
            max(application.image_size, crop),
            crop,
            application.feature_dim,
        )

    return factory


# -----------------------------------------------------------------------------
# Registrations
# -----------------------------------------------------------------------------

BACKBONES.register("alexnet_caffe")(
    _own_backbone(
        alexnet.caffenet,
        normalization="caffe_mean_on_rgb",
        image_size=256,
        default_crop_size=227,
        feature_dim=alexnet.FEATURE_DIM,
        default_dropout=0.5,
        fixed_input=True,
        converter=alexnet.convert_deephash_caffenet,
        imagenet_help=alexnet.CAFFENET_IMAGENET_HELP,
    )
)
BACKBONES.register("alexnet")(
    _own_backbone(
        alexnet.torchvision_alexnet,
        normalization="torch_imagenet",
        image_size=256,
        default_crop_size=224,
        feature_dim=alexnet.FEATURE_DIM,
        default_dropout=0.5,
        fixed_input=True,
        converter=alexnet.convert_torchvision_alexnet,
        imagenet_help=alexnet.TORCHVISION_ALEXNET_IMAGENET_HELP,
    )
)
BACKBONES.register("vgg16")(
    _own_backbone(
        vgg16.vgg16,
        normalization="torch_imagenet",
        image_size=256,
        default_crop_size=224,
        feature_dim=vgg16.FEATURE_DIM,
        default_dropout=0.5,
        fixed_input=True,
        converter=vgg16.convert_torchvision_vgg16,
        imagenet_help=vgg16.TORCHVISION_VGG16_IMAGENET_HELP,
    )
)
BACKBONES.register("resnet18")(
    _own_backbone(
        resnet18.resnet18,
        normalization="torch_imagenet",
        image_size=256,
        default_crop_size=224,
        feature_dim=resnet18.FEATURE_DIM,
        default_dropout=None,
        fixed_input=False,
        converter=resnet18.convert_torchvision_resnet18,
        imagenet_help=resnet18.RESNET18_IMAGENET_HELP,
    )
)
BACKBONES.register("small_cnn")(
    _own_backbone(
        small_cnn.small_cnn,
        normalization="unit_range",
        image_size=64,
        default_crop_size=56,
        feature_dim=small_cnn.FEATURE_DIM,
        default_dropout=None,
        fixed_input=False,
        converter=None,
        imagenet_help=(
            "small_cnn is a test/demo network and has no ImageNet weights; use "
            "--weights=none or a weights file saved from it."
        ),
    )
)
BACKBONES.register(FEATURES)(features_backbone)
BACKBONES.register("resnet50")(_keras_application_backbone("resnet50"))
BACKBONES.register("inception_v3")(_keras_application_backbone("inception_v3"))
BACKBONES.register("mobilenet_v2")(_keras_application_backbone("mobilenet_v2"))
BACKBONES.register("efficientnet_b0")(_keras_application_backbone("efficientnet_b0"))
