"""Whether extracted features have collapsed: many images with (nearly) the same row.

A feature model fed pixels in a range it does not expect (raw [0, 255] pixels into a
quantized MobileNet made for [-1, 1]) saturates its input: different images give
identical features, and every method trained on them learns little. Nothing fails, so
`python -m wsdhash.extract` looks at a sample of the rows it wrote and warns:

* near-identical rows: two rows count as one when their distance is below
  `NEAR_IDENTICAL` times the root-mean-square distance between rows of the sample
  (scale-free; exact repeats of a quantized output are at distance 0). Warn when fewer
  than `MIN_DISTINCT_FRACTION` of the sampled images have distinct rows;
* near-constant dimensions: a dimension whose standard deviation over the sample is
  below `NEAR_IDENTICAL` times the root-mean-square standard deviation of all
  dimensions. Warn when more than `MAX_CONSTANT_FRACTION` of them are (some dead ReLU
  units are normal; most are not).

The rows should be of distinct images (the same image twice is a legitimate repeat).
"""

from __future__ import annotations

import numpy as np

NEAR_IDENTICAL = 1e-3
MIN_DISTINCT_FRACTION = 0.5
MAX_CONSTANT_FRACTION = 0.5


def distinct_rows(features: np.ndarray) -> int:
    """How many rows of (N, F) `features` remain when near-identical ones count once."""
    x = np.asarray(features, np.float64)
    x = x - x.mean(axis=0)
    squared = (x * x).sum(axis=1)
    # (N, N) squared distances; the mean over all pairs is 2x the total variance.
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * x @ x.T, 0)
    tolerance = NEAR_IDENTICAL**2 * distances.mean()
    # A row repeats when some earlier row is within the tolerance.
    repeats = np.tril(distances <= tolerance, k=-1).any(axis=1)
    return int(len(x) - repeats.sum())


def constant_dimensions(features: np.ndarray) -> int:
    """How many of the F dimensions of (N, F) `features` are near-constant."""
    std = np.asarray(features, np.float64).std(axis=0)
    scale = np.sqrt(np.mean(std**2))
    return int(np.sum(std <= NEAR_IDENTICAL * scale))


def collapse_warning(features: np.ndarray) -> str | None:
    """A one-line description of how (N, F) `features` (distinct images) collapsed, or
    None when they look healthy (module doc)."""
    n, dims = features.shape
    if n < 2 or dims < 1:
        return None
    distinct, constant = distinct_rows(features), constant_dimensions(features)
    problems = []
    if distinct < MIN_DISTINCT_FRACTION * n:
        problems.append(f"only {distinct} of {n} sampled images have distinct features")
    if constant > MAX_CONSTANT_FRACTION * dims:
        problems.append(f"{constant} of {dims} dimensions are near-constant")
    if not problems:
        return None
    return "the features look collapsed: " + " and ".join(problems)
