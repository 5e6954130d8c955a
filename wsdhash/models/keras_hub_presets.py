"""Backbones from keras-hub presets: `--backbone=keras_hub:PRESET`.

    spec = keras_hub_backbone("resnet_50_imagenet", weights="preset")
    spec = keras_hub_backbone("/path/to/a/preset/folder", weights="preset")

PRESET is a keras-hub preset name (ResNet, EfficientNet, MobileNet, ViT, DINOv2,
CLIP or SigLIP image encoders, ... downloaded from Kaggle / Hugging Face on first use)
or a local preset folder (`Backbone.save_to_preset`). The model wsdhash trains or
extracts with:

    raw RGB pixels in [0, 255] (B, S, S, 3)
      -> the preset's own image converter scale and offset (its ImageNet mean / std)
      -> the image encoder (a CLIP / SigLIP backbone's `vision_encoder`)
      -> (B, F): feature maps are averaged over space, token sequences give their
         first (class) token, a dict output its pooled entry

so the backbone's normalisation is `raw_pixels` and no wsdhash normalisation needs to
know the preset. A preset without an image converter gets `unit_range` inputs ([0, 1])
unless `--normalization` says otherwise. The crop size is the converter's image size
(224 when it has none) unless `--crop_size` is given; the resize side is 8/7 of it, as
for the ImageNet backbones (256 for 224).

`weights`: "preset" (or "imagenet") loads the preset's pretrained weights; "none" builds
the preset's architecture with a seeded random initialisation; a `.weights.h5` file
loads those weights into it.

keras-hub is an optional dependency (`pip install wsdhash[hub]`); without it, the
error says how to install it.
"""

from __future__ import annotations

import keras
import numpy as np
from absl import logging

from wsdhash.models import weights as weights_lib
from wsdhash.models.spec import BackboneSpec

PREFIX = "keras_hub:"
PRETRAINED = ("preset", "imagenet")


class KerasHubUnavailableError(ImportError):
    """keras-hub is not installed."""


def _keras_hub():
    try:
        import keras_hub
    except ImportError as error:
        raise KerasHubUnavailableError(
            f"--backbone={PREFIX}...: keras-hub is not installed ({error}); "
            "pip install keras-hub (or wsdhash[hub])."
        ) from None
    return keras_hub


def _image_converter(keras_hub, preset: str):
    try:
        return keras_hub.layers.ImageConverter.from_preset(preset)
    except (FileNotFoundError, ValueError):  # no image_converter.json in the preset
        return None


def _as_features(outputs) -> keras.KerasTensor:
    """(B, F) features from an encoder's outputs (module doc)."""
    if isinstance(outputs, dict):
        for key in ("pooled_output", "image_embeddings", "sequence_output"):
            if key in outputs:
                outputs = outputs[key]
                break
        else:
            raise ValueError(f"keras-hub encoder outputs {sorted(outputs)}; expected a pooled one.")
    rank = len(outputs.shape)
    if rank == 4:
        return keras.layers.GlobalAveragePooling2D(name="pool")(outputs)
    if rank == 3:
        return outputs[:, 0, :]  # the class token
    if rank == 2:
        return outputs
    raise ValueError(f"keras-hub encoder output has shape {outputs.shape}; expected rank 2-4.")


def keras_hub_backbone(
    preset: str,
    *,
    weights: str = "preset",
    crop_size: int | None = None,
    dropout: float | None = None,
    seed: int = 0,
    allow_pickle: bool = False,
):
    """The `BackboneSpec` of a keras-hub preset (module doc)."""

    keras_hub = _keras_hub()
    pretrained = weights in PRETRAINED
    if weights == "none":
        logging.warning(
            "%s%s with --weights=none: random initialisation; --weights=preset loads the "
            "preset's pretrained weights.",
            PREFIX,
            preset,
        )
    keras.utils.set_random_seed(seed)
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset, load_weights=pretrained)
    except (FileNotFoundError, ValueError, KeyError, OSError) as error:
        raise ValueError(
            f"--backbone={PREFIX}{preset}: cannot load the preset ({error}). Give a "
            "keras-hub preset name (it downloads on first use) or a preset folder."
        ) from None
    encoder = getattr(backbone, "vision_encoder", None) or backbone
    converter = _image_converter(keras_hub, preset)
    converter_size = getattr(converter, "image_size", None) if converter else None
    crop = crop_size or (int(converter_size[0]) if converter_size else 224)
    images = keras.Input((crop, crop, 3), name="images")
    x = images
    normalization = "unit_range"
    if converter is not None and converter.scale is not None:
        scale = np.asarray(converter.scale, np.float32)
        offset = np.asarray(converter.offset if converter.offset is not None else 0.0, np.float32)
        x = keras.layers.Rescaling(scale, offset, name="preset_rescaling")(x)
        normalization = "raw_pixels"
    features = _as_features(encoder(x))
    if dropout:
        features = keras.layers.Dropout(dropout, seed=seed, name="feature_dropout")(features)
    model = keras.Model(images, features, name=f"keras_hub_{type(encoder).__name__}")
    if not pretrained and weights != "none":
        weights_lib.load_weights_file(model, weights, allow_pickle=allow_pickle)
    return BackboneSpec(
        model,
        normalization,
        max(round(crop * 8 / 7), crop),
        crop,
        int(model.output_shape[-1]),
    )
