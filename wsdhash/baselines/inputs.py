"""Input checks shared by the baselines, so that all of them reject bad input with the
same messages."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np


def check_bits(bits: Any, *, method: str) -> int:
    """Returns `bits` as an int after checking that it is a positive integer.

    Args:
        bits: The requested code length K.
        method: Name of the calling baseline, used in the error message.

    Returns:
        `bits` as a Python int.

    Raises:
        ValueError: If `bits` is not an integer (bools are refused too) or is < 1.
    """
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral):
        raise ValueError(
            f"{method}: bits must be an integer >= 1; got {bits!r} ({type(bits).__name__})."
        )
    if bits < 1:
        raise ValueError(f"{method}: bits must be an integer >= 1; got {bits}.")
    return int(bits)


def check_features(
    features: Any,
    *,
    method: str,
    min_samples: int = 1,
    dimension: int | None = None,
) -> np.ndarray:
    """Validates a feature matrix and returns it as float64.

    Fitting is done in float64 because covariances and the ITQ Procrustes step
    lose noticeable precision in float32 for feature dimensions in the thousands.

    Args:
        features: Array-like of shape (N, D), real-valued.
        method: Name of the calling baseline, used in error messages.
        min_samples: Smallest N accepted.
        dimension: When given, the D that the model was fitted on.

    Returns:
        The features as a float64 array of shape (N, D).

    Raises:
        ValueError: If the features are not a 2-D real array, have fewer than
            `min_samples` rows, a different dimension than `dimension`, or contain
            NaN or infinite values.
    """
    array = np.asarray(features)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{method}: features must be real numbers; got dtype {array.dtype}.")
    if array.ndim != 2:
        raise ValueError(
            f"{method}: features must be a 2-D array of shape (N, D); got shape {array.shape} "
            f"({array.ndim}-D)."
        )
    num_samples, feature_dim = array.shape
    if feature_dim == 0:
        raise ValueError(
            f"{method}: features have shape {array.shape}; the feature dimension D must be >= 1."
        )
    if num_samples < min_samples:
        raise ValueError(
            f"{method}: needs at least {min_samples} samples; got {num_samples} (shape {array.shape})."
        )
    if dimension is not None and feature_dim != dimension:
        raise ValueError(
            f"{method}: was fitted on features of dimension D={dimension}; got D={feature_dim} "
            f"(shape {array.shape})."
        )
    array = array.astype(np.float64, copy=False)
    finite = np.isfinite(array)
    if not finite.all():
        # Report counts and the first position: one stray NaN in a large matrix is
        # otherwise hard to find.
        num_nan = int(np.isnan(array).sum())
        num_inf = int(np.isinf(array).sum())
        row, column = np.argwhere(~finite)[0]
        raise ValueError(
            f"{method}: features contain {num_nan} NaN and {num_inf} infinite values "
            f"(first at row {row}, column {column})."
        )
    return array
