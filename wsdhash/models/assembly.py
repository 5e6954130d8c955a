"""The model a run trains and serves: inputs -> normalisation -> backbone -> head.

    model, backbone, hashing = build_model(config, output_dim=64)
    features_model = with_backbone_features(model, hashing)  # images -> (codes, features)
    pipeline_config = backbone.pipeline_config(config.data.image_size, config.data.crop_size)

Training, serving (export) and feature extraction build their models here, from the
run's settings, so the three agree by construction. `config` is the run's
`wsdhash.training.config.TrainConfig`: its `model` settings (backbone, weights,
allow_pickle, head), `data` settings (crop_size, normalization, data_dir) and seed.
"""

from __future__ import annotations

import keras

from wsdhash.models.backbones import build_backbone
from wsdhash.models.heads import build_hashing_model, split_hashing_model
from wsdhash.models.normalization import ImageNormalization
from wsdhash.models.spec import BackboneSpec


def build_backbone_for(config) -> BackboneSpec:
    """The run's backbone (see `build_backbone`)."""
    return build_backbone(
        config.model.backbone,
        weights=config.model.weights,
        crop_size=config.data.crop_size or None,
        allow_pickle=config.model.allow_pickle,
        seed=config.seed,
        data_dir=config.data.data_dir,
    )


def build_model(
    config, output_dim: int, sync_batch_norm: bool = False
) -> tuple[keras.Model, BackboneSpec, keras.Model]:
    """The model of a run with `output_dim` outputs (the method's `output_dim()`).

    Args:
        sync_batch_norm: batch statistics over the global batch, so that replicas of a
            `tf.distribute` strategy train like one device.

    Returns:
        (model taking the backbone's input dtype, backbone spec, hashing model without
        the normalisation layer).
    """
    backbone = build_backbone_for(config)
    hashing = build_hashing_model(
        backbone,
        config.model.head,
        output_dim,
        seed=config.seed,
        hidden=config.model.head_hidden,
        dropout=config.model.head_dropout,
    )
    if sync_batch_norm:
        for layer in hashing._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
    normalization = backbone.input_normalization(config.data.normalization)
    return with_normalization(hashing, normalization, backbone.input_dtype), backbone, hashing


def with_normalization(
    hashing: keras.Model, normalization: str, input_dtype: str = "uint8"
) -> keras.Model:
    """uint8 images (float32 features) -> normalisation -> `hashing` -> relaxed codes."""
    images = keras.Input(hashing.input_shape[1:], dtype=input_dtype, name="image")
    codes = hashing(ImageNormalization(normalization, name="normalization")(images))
    return keras.Model(images, codes, name="wsdhash_model")


def with_backbone_features(model: keras.Model, hashing: keras.Model) -> keras.Model:
    """The same layers as `model` (weights shared), returning (codes, backbone features):
    for losses that compare codes with what the backbone sees (unsupervised methods).

    Args:
        model: from `with_normalization` (or `build_model`).
        hashing: its hashing model (`.backbone`, `.head`).
    """
    backbone, head = split_hashing_model(hashing)
    images = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name="image")
    features = backbone(model.get_layer("normalization")(images))
    return keras.Model(images, (head(features), features), name="wsdhash_features_model")


def backbone_features_model(model: keras.Model, hashing: keras.Model) -> keras.Model:
    """The same layers as `model` (weights shared) up to the backbone: images (or feature
    rows) -> the backbone's features, which the head takes."""
    backbone, _ = split_hashing_model(hashing)
    images = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name="image")
    features = backbone(model.get_layer("normalization")(images))
    return keras.Model(images, features, name="wsdhash_backbone_features")
