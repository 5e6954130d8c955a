"""The reference set every pairwise loss compares its anchors with.

Under tf.distribute a replica's anchors are its own B examples, and the references are
the codes and labels gathered from every replica (R = replicas x B), with the local
anchors at rows `anchor_offset .. anchor_offset + B - 1`. Without references, the
anchors are their own reference set (offset 0). These helpers hold the rules every
pairwise loss shares, so each states them once:

- references come as a pair (codes and labels) or not at all;
- an anchor's own row in the references is found by position, not by value, so the
  self pair is excluded even when two examples are identical.
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
