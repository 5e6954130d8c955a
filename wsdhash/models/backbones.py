"""The backbone registry: name -> feature extractor with its preprocessing defaults.

Each backbone registers itself in its own module (`BACKBONES`, backbone_registry.py);
this module imports them all, in registration order, so the registry is complete, and
builds them.

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

# Every backbone module, so that each has registered itself, in registration order.
# isort: off
from wsdhash.models import alexnet  # noqa: F401  alexnet_caffe, alexnet
from wsdhash.models import vgg16  # noqa: F401
from wsdhash.models import resnet18  # noqa: F401
from wsdhash.models import small_cnn  # noqa: F401
from wsdhash.models import features  # noqa: F401
from wsdhash.models import keras_applications  # noqa: F401  resnet50, ..., efficientnet_b0

# isort: on
from wsdhash.models import keras_hub_presets
from wsdhash.models.backbone_registry import BACKBONES, BackboneFactory, NoImageNetWeightsError
from wsdhash.models.spec import BackboneSpec

__all__ = ["BACKBONES", "BackboneFactory", "NoImageNetWeightsError", "build_backbone"]


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
