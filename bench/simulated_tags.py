"""Simulated user tags made by corrupting ground-truth labels, for weak-supervision benches.

Real photo features with class labels (the shared CIFAR-10 features) have no user tags;
this draws tags whose noise is stated and seeded, so a bench can say how weak its
supervision is. Per image, independently, with one generator seeded by `seed`:

* every true label c (a 1 in its label row) gives its class tag (the class's name) with
  probability 1 - p_drop - p_swap; with probability p_drop it gives nothing (the user
  did not tag it); with probability p_swap it gives the tag of another class drawn
  uniformly from the other C - 1 (a wrong tag; on a multi-label image it may name
  another of its true labels, which then acts as a drop);
* k ~ Poisson(noise_mean) noise tags (capped at the noise vocabulary's size), distinct,
  drawn without replacement from `noise_vocabulary` noise words with Zipf weights
  1 / rank^zipf_exponent (rank 1, 2, ...: a few very frequent content-free tags such
  as "nikon" or "2008", and a long tail), independent of the image's content.

The tag vocabulary is the C class names followed by the noise words `noise000`, ...;
tag column c is class c for c < C.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def noise_words(count: int) -> tuple[str, ...]:
    """The names of `count` noise tags, most frequent first."""
    return tuple(f"noise{i:03d}" for i in range(count))


def simulated_tags(
    labels: np.ndarray,
    label_names: Sequence[str],
    *,
    p_drop: float,
    p_swap: float,
    noise_mean: float,
    noise_vocabulary: int,
    zipf_exponent: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """User tags drawn from `labels` (module doc).

    Args:
        labels: N x C 0/1 ground-truth labels.
        label_names: the C class names (the class tags).
        p_drop: probability that a true label gives no tag.
        p_swap: probability that it gives another class's tag; p_drop + p_swap <= 1.
        noise_mean: mean number of noise tags per image (Poisson).
        noise_vocabulary: V, the number of noise words (0: no noise tags).
        zipf_exponent: s in the noise words' weights 1 / rank^s.
        seed: seeds the one generator used.

    Returns:
        (uint8 N x (C + V) tags, the C + V tag names).
    """
    labels = np.asarray(labels).astype(bool)
    num_items, num_classes = labels.shape
    if len(label_names) != num_classes:
        raise ValueError(f"{len(label_names)} label names for {num_classes} label columns.")
    if min(p_drop, p_swap) < 0 or p_drop + p_swap > 1:
        raise ValueError(
            f"Need p_drop, p_swap >= 0 and p_drop + p_swap <= 1, got {p_drop}, {p_swap}."
        )
    if p_swap > 0 and num_classes < 2:
        raise ValueError("Swapping a tag needs at least two classes.")
    if noise_mean < 0 or noise_vocabulary < 0:
        raise ValueError(
            f"Need noise_mean, noise_vocabulary >= 0, got {noise_mean}, {noise_vocabulary}."
        )
    rng = np.random.default_rng(seed)
    tags = np.zeros((num_items, num_classes + noise_vocabulary), dtype=np.uint8)
    weights = 1.0 / np.arange(1, noise_vocabulary + 1) ** zipf_exponent
    weights = weights / weights.sum() if noise_vocabulary else weights
    for item in range(num_items):
        for label in np.flatnonzero(labels[item]):
            draw = rng.random()
            if draw < p_drop:
                continue
            if draw < p_drop + p_swap:
                other = rng.integers(num_classes - 1)
                tags[item, other + (other >= label)] = 1  # uniform over the other classes
            else:
                tags[item, label] = 1
        if noise_vocabulary:
            count = min(int(rng.poisson(noise_mean)), noise_vocabulary)
            if count:
                words = rng.choice(noise_vocabulary, size=count, replace=False, p=weights)
                tags[item, num_classes + words] = 1
    return tags, tuple(label_names) + noise_words(noise_vocabulary)
