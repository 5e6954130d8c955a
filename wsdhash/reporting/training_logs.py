"""Scalar training curves from TensorBoard event files (tf.summary writes them)."""

from __future__ import annotations

import glob
import os

import numpy as np


def read_scalars(log_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """tag -> (steps, values), sorted by step, from every event file under `log_dir`.

    Scalars written by TF2's `tf.summary.scalar` are stored as tensors; TF1-style
    `simple_value`s are read too. A step logged twice keeps its last value.
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    files = sorted(glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True))
    curves: dict[str, dict[int, float]] = {}
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = value.simple_value
                elif value.HasField("tensor") and not value.tensor.tensor_shape.dim:
                    number = float(tf.make_ndarray(value.tensor))
                else:
                    continue
                curves.setdefault(value.tag, {})[int(event.step)] = float(number)
    return {
        tag: (np.array(sorted(points)), np.array([points[s] for s in sorted(points)]))
        for tag, points in curves.items()
    }
