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
"""

from __future__ import annotations

import tensorflow as tf


def check_pair(ref_codes, ref_labels) -> None:
    """Raises ValueError unless both or neither of the references are given."""
    if (ref_codes is None) != (ref_labels is None):
        raise ValueError("Pass both ref_codes and ref_labels, or neither.")


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
