"""Collapsed features (many images with the same row, mostly constant dimensions) are
told apart from healthy ones, on rows built by hand."""

import numpy as np

from wsdhash.data.feature_collapse import (
    collapse_warning,
    constant_dimensions,
    distinct_rows,
)


def test_repeated_rows_count_once_within_the_tolerance():
    rng = np.random.default_rng(0)
    # What the saturated MobileNet gave: 64 images, 26 distinct rows (quantized outputs
    # repeat exactly; 1e-7 jitter stands for float models' near-repeats).
    values = rng.normal(size=(26, 16))
    rows = values[np.r_[np.arange(26), rng.integers(0, 26, 38)]]
    rows = rows + rng.normal(scale=1e-7, size=rows.shape)
    assert distinct_rows(rows) == 26
    assert collapse_warning(rows) == (
        "the features look collapsed: only 26 of 64 sampled images have distinct features"
    )
    healthy = rng.normal(size=(64, 16))
    assert distinct_rows(healthy) == 64 and collapse_warning(healthy) is None
    assert distinct_rows(np.zeros((5, 3))) == 1  # all the same: one row


def test_near_constant_dimensions_are_counted():
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(50, 10))
    rows[:, :6] = 3.0 + rng.normal(scale=1e-6, size=(50, 6))  # 6 of 10 barely move
    assert constant_dimensions(rows) == 6
    assert collapse_warning(rows) == (
        "the features look collapsed: 6 of 10 dimensions are near-constant"
    )
    rows[:, :6] = 0.0
    rows[:, 6] = 0.0  # dead units alone, up to half of them, are no warning
    assert constant_dimensions(rows[:, 4:]) == 3 and collapse_warning(rows[:, 4:]) is None
    zeros = collapse_warning(np.zeros((4, 8)))
    assert zeros == (
        "the features look collapsed: only 1 of 4 sampled images have distinct features "
        "and 8 of 8 dimensions are near-constant"
    )
