"""Backbones from `keras.applications`, headless, with global average pooling.

Their ImageNet weights are Keras' own (downloaded on first use into `~/.keras/models`);
note that they differ from torchvision's weights that HyP² uses (docs/methods.md,
"HyP2: departures from the authors' code").
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import socket
from collections.abc import Iterator

import keras

from wsdhash.models import weights as weights_lib
from wsdhash.models.backbone_registry import BACKBONES, BackboneFactory
from wsdhash.models.spec import BackboneSpec


@dataclasses.dataclass(frozen=True)
class KerasApplication:
    """How to build one `keras.applications` backbone.

    Attributes:
        constructor: attribute name in `keras.applications` (looked up at build time).
        normalization: the `NORMALIZATIONS` entry its ImageNet weights expect.
        image_size: default resize side.
        crop_size: default crop side, the size the ImageNet weights were trained at.
        feature_dim: width of the pooled features.
    """

    constructor: str
    normalization: str
    image_size: int
    crop_size: int
    feature_dim: int


KERAS_APPLICATIONS = {
    # "caffe" mode: RGB -> BGR and the BGR mean.
    "resnet50": KerasApplication("ResNet50", "caffe_bgr", 256, 224, 2048),
    # "tf" mode, [-1, 1]; 299 / 0.875 rounds to 342.
    "inception_v3": KerasApplication("InceptionV3", "minus_one_to_one", 342, 299, 2048),
    "mobilenet_v2": KerasApplication("MobileNetV2", "minus_one_to_one", 256, 224, 1280),
    # EfficientNet rescales and normalises inside the model: feed [0, 255].
    "efficientnet_b0": KerasApplication("EfficientNetB0", "raw_pixels", 256, 224, 1280),
}


class ImageNetWeightsUnavailableError(OSError):
    """The Keras ImageNet weights could not be obtained (usually: no internet access)."""


WEIGHTS_HOST = ("storage.googleapis.com", 443)  # where keras.applications downloads from


def _weights_cached(name: str) -> bool:
    """Whether Keras' cache (~/.keras/models, or $KERAS_HOME/models) holds a weights
    file of this application (its file names start with the application's name)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    folder = os.path.join(home, "models")
    prefix = name.replace("_b0", "b0")
    return os.path.isdir(folder) and any(f.startswith(prefix) for f in os.listdir(folder))


def _reachable(address: tuple[str, int], timeout: float = 10.0) -> bool:
    try:
        with socket.create_connection(address, timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _python_random_seeded(seed: int) -> Iterator[None]:
    """Seeds Python's `random` for the duration, then restores its state.

    `keras.applications` creates unseeded initializers, which take their seed from
    Python's `random` module (`keras.random.make_default_seed`); seeding it locally
    makes `weights="none"` reproducible without touching the global state of the
    caller.
    """
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def keras_application(
    name: str,
    *,
    weights: str = "none",
    crop_size: int | None = None,
    dropout: float | None = None,
    seed: int = 0,
) -> keras.Model:
    """Builds a headless `keras.applications` model: images (B, S, S, 3) -> (B, F).

    Args:
        name: a key of `KERAS_APPLICATIONS`.
        weights: "none" (random, seeded) or "imagenet" (Keras' weights, downloaded).
            Weight files are loaded by the caller after the model is built.
        crop_size: input side (default: the application's own).
        dropout: optional dropout rate on the pooled features.
        seed: seeds the random initialisation and the dropout mask.

    Returns:
        A functional `keras.Model` named `name`.

    Raises:
        ImageNetWeightsUnavailableError: "imagenet" was asked for and Keras could not
            download (or read) the weights.
    """
    application = KERAS_APPLICATIONS[name]
    crop_size = crop_size or application.crop_size
    if weights not in ("none", "imagenet"):
        raise ValueError(f"weights must be 'none' or 'imagenet' here, got {weights!r}.")
    constructor = getattr(keras.applications, application.constructor)
    kwargs = {
        "include_top": False,
        "weights": "imagenet" if weights == "imagenet" else None,
        "input_shape": (crop_size, crop_size, 3),
        "pooling": "avg",
        "name": name,
    }
    offline_help = (
        "Without internet access, use --weights=none (random initialisation) or a local "
        "weights file (--weights=/path/to/file.weights.h5, a legacy Keras .h5, or an .npz "
        "of named arrays); files that keras downloads are cached in ~/.keras/models and "
        "can be copied from a machine with internet access."
    )
    # Fail in seconds, not after the download's own retries, when nothing is cached
    # and the download host cannot be reached.
    if weights == "imagenet" and not _weights_cached(name) and not _reachable(WEIGHTS_HOST):
        raise ImageNetWeightsUnavailableError(
            f"Cannot download the Keras ImageNet weights for {name}: {WEIGHTS_HOST[0]} is "
            f"unreachable and ~/.keras/models has no cached copy. {offline_help}"
        )
    try:
        with _python_random_seeded(seed):
            model = constructor(**kwargs)
    except Exception as error:
        if weights != "imagenet":
            raise
        raise ImageNetWeightsUnavailableError(
            f"Could not get the Keras ImageNet weights for {name} "
            f"(keras.applications.{application.constructor}): the download failed or the "
            f"cached file is unusable ({type(error).__name__}: {error}). {offline_help}"
        ) from error
    if dropout:
        features = keras.layers.Dropout(dropout, seed=seed, name="feature_dropout")(
            model.outputs[0]
        )
        model = keras.Model(model.inputs, features, name=name)
    return model


def application_backbone(name: str) -> BackboneFactory:
    """The registry factory of the keras.applications backbone `name`."""
    application = KERAS_APPLICATIONS[name]

    def factory(*, weights, crop_size=None, dropout=None, seed=0, allow_pickle=False, **unused):
        crop = crop_size or application.crop_size
        built_with = weights if weights in ("none", "imagenet") else "none"
        model = keras_application(
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


for _name in ("resnet50", "inception_v3", "mobilenet_v2", "efficientnet_b0"):
    BACKBONES.register(_name)(application_backbone(_name))
