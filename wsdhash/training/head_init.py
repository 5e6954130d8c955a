"""Starting a hash head from an unsupervised solution: `--head_init=itq|pcarr|pcah|lsh`.

A head trained on frozen features starts, by default, from a random projection of
them. It can instead start where a classic unsupervised hash ends: the head's Dense
layer takes a fitted linear baseline's projection (wsdhash/baselines/: LSH, PCAH, ITQ,
PCA-RR), so that before the first step sign(head(x)) are that baseline's codes of x
(for the `linear` and `tanh` heads; with `linear_bn` the batch norm's centring replaces
the bias). Training then moves from the features' own neighbourhoods rather than from
noise: an unsupervised or weakly supervised loss refines codes that already rank like
ITQ instead of having to rediscover them.

The baseline is fitted on the backbone's features of the training split (the rows of
a features file, or the images encoded once by the initial backbone), seeded by the
run's seed, with as many outputs as the head has (K bits, or WSDHQ's embedding width
when it is at most the feature width). The projection is divided by one number, the
standard deviation of the projected training features, so that the head's outputs
start at unit scale (a tanh head then starts out of saturation); one global factor
keeps every output's sign, so the initial codes stay the baseline's.
"""

from __future__ import annotations

import keras
import numpy as np


def baseline_head_weights(
    features: np.ndarray, baseline: str, outputs: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(kernel (F, outputs), bias (outputs,)) with sign(x @ kernel + bias) equal to the
    baseline's codes of x (module doc).

    Raises:
        ValueError: an unknown baseline, or more outputs than the features have
            dimensions (for the PCA-based ones), naming both.
    """
    from wsdhash.baselines import BASELINES

    features = np.asarray(features, np.float64)
    if baseline not in BASELINES.names():
        raise ValueError(
            f"--head_init={baseline}: not a registered baseline ({', '.join(BASELINES.names())})."
        )
    model = BASELINES.get(baseline)(outputs, seed=seed).fit(features)
    projection = np.asarray(model.projection(), np.float64)  # (F, outputs)
    offset = np.asarray(model.mean_, np.float64) @ projection
    scale = float(np.std(features @ projection - offset)) or 1.0
    return (projection / scale).astype(np.float32), (-offset / scale).astype(np.float32)


def initialize_head(head: keras.Layer, features: np.ndarray, baseline: str, seed: int) -> None:
    """Sets the first Dense layer of `head` (the hashing model's "hash_head") from
    `baseline` fitted on `features` (N, F), the backbone's features of the training
    split: its kernel, and its bias where it has one.

    Raises:
        ValueError: the head has no Dense layer, or its kernel does not fit.
    """
    dense = next((layer for layer in head.layers if isinstance(layer, keras.layers.Dense)), None)
    if dense is None:
        raise ValueError(f"--head_init={baseline}: the head has no Dense layer to initialise.")
    kernel, bias = baseline_head_weights(features, baseline, int(dense.kernel.shape[1]), seed)
    if tuple(dense.kernel.shape) != kernel.shape:
        raise ValueError(
            f"--head_init={baseline}: the head's kernel is {tuple(dense.kernel.shape)}, "
            f"the features give {kernel.shape}."
        )
    dense.kernel.assign(kernel)
    if dense.use_bias:
        dense.bias.assign(bias)
