"""A trained run folder, rebuilt for export: its model with a checkpoint's weights
(`load_trained_model`) and its method's extra serving outputs (`load_quantization_encoder`).
"""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

from wsdhash.methods import METHODS
from wsdhash.models.assembly import build_model
from wsdhash.training.config import config_from_dict


def load_trained_model(workdir: str, checkpoint: str = "best"):
    """Rebuilds a run's model from `run_info.json` and restores a checkpoint.

    Args:
        workdir: the run folder.
        checkpoint: "best" (the selected checkpoint, falling back to the latest when the
            run kept none), "latest", or a checkpoint path.

    Returns:
        (model, TrainConfig, PipelineConfig).
    """
    info_path = os.path.join(workdir, "run_info.json")
    if not os.path.exists(info_path):
        raise FileNotFoundError(f"Not a wsdhash run folder (no run_info.json): {workdir}")
    with open(info_path) as f:
        config = config_from_dict(json.load(f)["config"])
    # Weights come from the checkpoint; never download or unpickle anything here.
    model_settings = dataclasses.replace(config.model, weights="none", allow_pickle=False)
    config = dataclasses.replace(config, model=model_settings)
    model, backbone, _ = build_model(config, METHODS.get(config.method.name)(config).output_dim())
    path = checkpoint_path(workdir, checkpoint)
    tf.train.Checkpoint(model=model).restore(
        path
    ).expect_partial().assert_existing_objects_matched()
    return (
        model,
        config,
        backbone.pipeline_config(
            config.data.image_size, config.data.crop_size, config.data.ten_crop
        ),
    )


def checkpoint_path(workdir: str, checkpoint: str = "best") -> str:
    """The checkpoint `load_trained_model` restores (see there for `checkpoint`)."""
    directory = os.path.join(workdir, "checkpoints")
    if checkpoint == "best":
        path = tf.train.latest_checkpoint(os.path.join(directory, "best"))
        path = path or tf.train.latest_checkpoint(directory)
    elif checkpoint == "latest":
        path = tf.train.latest_checkpoint(directory)
    else:
        path = checkpoint
    if not path:
        raise FileNotFoundError(f"No checkpoint found in {directory}.")
    return path


def load_quantization_encoder(workdir: str, checkpoint: str = "best"):
    """The extra serving outputs' encoder of a run's method (`Method.serving_encoder`):
    WSDHQ's quantizer as graph ops; None for binary-code methods."""
    with open(os.path.join(workdir, "run_info.json")) as f:
        config = config_from_dict(json.load(f)["config"])
    method = METHODS.get(config.method.name)(config)
    return method.serving_encoder(checkpoint_path(workdir, checkpoint), workdir)
