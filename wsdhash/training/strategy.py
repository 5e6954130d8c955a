"""Choosing a `tf.distribute` strategy by name."""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


def make_strategy(name: str = "auto", gpus: str | None = None) -> tf.distribute.Strategy:
    """Builds the strategy `name`.

    Args:
        name: "auto" (mirrored when more than one GPU is visible, else one device),
            "one_device", "mirrored" (all visible GPUs, or all logical CPUs when there is
            no GPU, which is how the tests get two replicas on one CPU), or
            "multi_worker" (MultiWorkerMirroredStrategy configured by TF_CONFIG).
        gpus: comma-separated GPU ids to make visible (as CUDA_VISIBLE_DEVICES would),
            or None for all. Must be called before TensorFlow touches the GPUs.

    Returns:
        The strategy.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")
    if name == "multi_worker":
        # Before anything lists logical devices: collective ops must be configured
        # before TensorFlow's context is initialised.
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy=multi_worker needs TF_CONFIG to describe the cluster.")
        json.loads(os.environ["TF_CONFIG"])  # Fails early and clearly on malformed JSON.
        if gpus:
            _select_gpus(gpus)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if gpus:
        _select_gpus(gpus)
    gpu_devices = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpu_devices) > 1 else "one_device"
    if name == "one_device":
        device = gpu_devices[0].name if gpu_devices else "/cpu:0"
        return tf.distribute.OneDeviceStrategy(device)
    devices = [d.name for d in gpu_devices] or [
        d.name for d in tf.config.list_logical_devices("CPU")
    ]
    return tf.distribute.MirroredStrategy(devices)


def _select_gpus(gpus: str) -> None:
    """Makes only the GPUs with these comma-separated ids visible."""
    physical = tf.config.list_physical_devices("GPU")
    wanted = [int(g) for g in gpus.split(",")]
    missing = [g for g in wanted if g >= len(physical)]
    if missing:
        raise ValueError(f"--gpu={gpus}: GPU(s) {missing} not found; {len(physical)} visible.")
    tf.config.set_visible_devices([physical[g] for g in wanted], "GPU")


def split_cpu(count: int) -> None:
    """Splits the physical CPU into `count` logical devices (for tests and CPU runs of
    the multi-replica code path). Must run before TensorFlow initialises its devices."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )
