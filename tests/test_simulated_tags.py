"""bench/simulated_tags.py: labels corrupted into user tags at stated rates."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "bench"))
from simulated_tags import simulated_tags  # noqa: E402

_NAMES = ("cat", "dog", "ship", "car")


def _single_labels(n, seed=0):
    return np.eye(4, dtype=np.uint8)[np.random.default_rng(seed).integers(0, 4, n)]


def test_no_noise_gives_the_labels_back():
    labels = _single_labels(50)
    tags, names = simulated_tags(
        labels, _NAMES, p_drop=0, p_swap=0, noise_mean=0, noise_vocabulary=3
    )
    assert names == _NAMES + ("noise000", "noise001", "noise002")
    np.testing.assert_array_equal(tags[:, :4], labels)
    assert not tags[:, 4:].any()


def test_drop_and_swap_rates():
    labels = _single_labels(20000)
    tags, _ = simulated_tags(
        labels, _NAMES, p_drop=0.3, p_swap=0.2, noise_mean=0, noise_vocabulary=0, seed=1
    )
    true_kept = (tags & labels).sum() / len(labels)
    wrong = (tags & (1 - labels)).sum() / len(labels)
    assert true_kept == pytest.approx(0.5, abs=0.015)
    assert wrong == pytest.approx(0.2, abs=0.015)
    assert tags.sum(axis=1).max() == 1  # one label: at most one class tag


def test_a_swap_is_uniform_over_the_other_classes():
    labels = _single_labels(12000, seed=2)
    tags, _ = simulated_tags(
        labels, _NAMES, p_drop=0, p_swap=1, noise_mean=0, noise_vocabulary=0, seed=3
    )
    assert not (tags & labels).any() and np.all(tags.sum(axis=1) == 1)
    for c in range(4):
        others = tags[labels[:, c] == 1].sum(axis=0)
        assert others[c] == 0
        shares = others[np.arange(4) != c] / others.sum()
        np.testing.assert_allclose(shares, 1 / 3, atol=0.03)


def test_noise_tags_count_and_zipf_order():
    labels = _single_labels(8000)
    tags, _ = simulated_tags(
        labels, _NAMES, p_drop=1, p_swap=0, noise_mean=2.0, noise_vocabulary=200, seed=4
    )
    assert not tags[:, :4].any()
    assert tags.sum(axis=1).mean() == pytest.approx(2.0, abs=0.06)
    frequency = tags[:, 4:].sum(axis=0)
    # Weights 1/rank: the first word is about twice as frequent as the second, and
    # far more than the tail.
    assert frequency[0] > 1.5 * frequency[1] > frequency[150:].max()


def test_seeded():
    labels = _single_labels(300)
    args = dict(p_drop=0.2, p_swap=0.1, noise_mean=1.5, noise_vocabulary=30)
    first, _ = simulated_tags(labels, _NAMES, seed=5, **args)
    np.testing.assert_array_equal(first, simulated_tags(labels, _NAMES, seed=5, **args)[0])
    assert (first != simulated_tags(labels, _NAMES, seed=6, **args)[0]).any()


def test_bad_rates():
    with pytest.raises(ValueError, match="p_drop"):
        simulated_tags(
            _single_labels(3), _NAMES, p_drop=0.7, p_swap=0.5, noise_mean=0, noise_vocabulary=0
        )
