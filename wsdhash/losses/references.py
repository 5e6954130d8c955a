"""The reference set every pairwise loss compares its anchors with.

Under tf.distribute a replica's anchors are its own B examples, and the references are
the codes and labels gathered from every replica (R = replicas x B), with the local
anchors at rows `anchor_offset .. anchor_offset + B - 1`. Without references, the
anchors are their own reference set (offset 0). These helpers hold the rules every
pairwise loss shares, so each states them once:

- references come as a pair (codes and labels) or not at all;
- an anchor's own row in the references is found by position, not by value, so the
  self pair is excluded even when two examples are identical;
- labels are read as "positive where > 0" (multi-hot rows) or as class ids (a vector),
  and two rows are similar when they share at least one label.

`HashingLoss.call` (losses/base.py) checks the pair once and hands the loss's `terms`
one `References` value; the pure functions of each loss take its fields as they were
given (None: no references), as their authors' code did, and resolve them with
`resolve` below.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf


def check_pair(ref_codes, ref_labels) -> None:
    """Raises ValueError unless both or neither of the references are given."""
    if (ref_codes is None) != (ref_labels is None):
        raise ValueError("Pass both ref_codes and ref_labels, or neither.")


@dataclasses.dataclass(frozen=True)
class References:
    """The reference set of one loss call, as the caller gave it.

    Attributes:
        codes: (R, K) codes of the references, or None: the anchors are their own
            reference set.
        labels: (R, C) labels or (R,) class ids of the references; None exactly when
            `codes` is None (checked on construction).
        anchor_offset: the anchors' first row in the references (0 without them).
    """

    codes: Any = None
    labels: Any = None
    anchor_offset: int | tf.Tensor = 0

    def __post_init__(self):
        check_pair(self.codes, self.labels)

    @property
    def given(self) -> bool:
        """Whether references were passed (else the anchors are their own)."""
        return self.codes is not None


def anchor_rows(num_anchors: tf.Tensor, anchor_offset: int | tf.Tensor) -> tf.Tensor:
    """(B,) int32 rows of the anchors inside the references."""
    return tf.range(num_anchors) + tf.cast(anchor_offset, tf.int32)


def not_self(num_anchors: tf.Tensor, num_refs: tf.Tensor, anchor_offset) -> tf.Tensor:
    """(B, R) bool: False exactly at each anchor's own row."""
    return anchor_rows(num_anchors, anchor_offset)[:, None] != tf.range(num_refs)[None, :]


def after_anchor(num_anchors: tf.Tensor, num_refs: tf.Tensor, anchor_offset) -> tf.Tensor:
    """(B, R) bool: True at the reference rows after each anchor's own row (unordered
    pairs counted once, as in batch-all triplets)."""
    return tf.range(num_refs)[None, :] > anchor_rows(num_anchors, anchor_offset)[:, None]


def positive_labels(labels: tf.Tensor, num_classes: int | tf.Tensor) -> tf.Tensor:
    """(N, C) float 0/1 from (N, C) labels (positive where > 0) or (N,) class ids."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 1:
        return tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
    return tf.cast(tf.cast(labels, tf.float32) > 0, tf.float32)


def pair_similarity(labels: tf.Tensor, ref_labels: tf.Tensor) -> tf.Tensor:
    """(B, R) float 0/1 from 0/1 label rows: 1 where the rows share at least one label."""
    return tf.cast(tf.matmul(labels, ref_labels, transpose_b=True) > 0, tf.float32)


def resolve(codes, labels, ref_codes, ref_labels, num_classes):
    """(codes, 0/1 labels, ref codes, ref 0/1 labels) as float32, after `check_pair`;
    without references the anchors are their own reference set."""
    check_pair(ref_codes, ref_labels)
    codes = tf.cast(tf.convert_to_tensor(codes), tf.float32)
    labels = positive_labels(labels, num_classes)
    if ref_codes is None:
        return codes, labels, codes, labels
    ref_codes = tf.cast(tf.convert_to_tensor(ref_codes), tf.float32)
    return codes, labels, ref_codes, positive_labels(ref_labels, num_classes)


def counted_pairs(s, ref_labels, anchor_offset, include_self: bool):
    """The pairs a class-balanced pairwise loss counts, and their counts.

    Args:
        s: (B, R) 0/1 similarity of the anchors to the references.
        ref_labels: (R, C) 0/1 labels of the references.
        anchor_offset: the anchors' first row in the references.
        include_self: whether each row's pair with itself counts.

    Returns:
        (valid (B, R) float 0/1: the anchors' pairs that count, number of similar and
        number of dissimilar pairs over every R x R reference pair, whichever rows are
        anchors here, so every replica weighs its pairs alike).
    """
    num_anchors, num_refs = tf.shape(s)[0], tf.shape(s)[1]
    if include_self:
        valid = tf.ones_like(s)
        ref_valid = tf.ones([num_refs, num_refs], tf.float32)
    else:
        valid = tf.cast(not_self(num_anchors, num_refs, anchor_offset), tf.float32)
        ref_valid = 1.0 - tf.eye(num_refs)
    ref_s = pair_similarity(ref_labels, ref_labels)
    num_pos = tf.reduce_sum(ref_s * ref_valid)
    num_neg = tf.reduce_sum((1.0 - ref_s) * ref_valid)
    return valid, num_pos, num_neg
