"""Batch-all triplet hashing loss (DNNH, as re-implemented with ResNet-18 by zhongzhh8).

The re-implementation forms, for every class of the batch, all unordered pairs (i, j) of
its images with i < j in batch order, takes the lower-indexed image i as the anchor and j
as the positive, and pairs each with every image of another class as the negative:

    L = mean over triplets (a, p, n) of max(0, ||h_a - h_p||^2 - ||h_a - h_n||^2 + margin)

including the triplets whose loss is 0. The term is not symmetric in a and p (the
negative distance is measured from the anchor), so the "i < j, i is the anchor" rule is
reproduced exactly: a 10-class x 8-image batch has 10 * C(8, 2) * 72 = 20,160 triplets.

Per example (anchors, B) against a reference set (R rows, default the batch itself) with
the anchors at rows anchor_offset .. anchor_offset + B - 1 of the references:

    triplet_i = R * sum_{p > row(i), p relevant} sum_{n irrelevant} hinge(i, p, n) / T

where "p > row(i)" compares positions in the reference set and T is the number of triplets
in the whole reference set. When the references are the gathered global batch, the mean
over the global batch is the published loss.

Relevance: integer class ids (B,) -> same class; (B, C) one-hot or multi-hot labels ->
a positive shares at least one label with the anchor, a negative shares none (the natural
multi-label extension; for one-hot labels it is "same class"). Rows without any label (or
with a negative class id) take no part in any triplet, as anchor, positive or negative.
A batch without triplets (e.g. a single class) gives 0, not NaN.

`dnnh_sigmoid=True` selects the original DNNH form: codes are sigmoid outputs in [0, 1]
(the caller's head provides them; nothing is clipped here) and the margin is 1.

Reference:
    Lai et al., "Simultaneous Feature Learning and Hash Coding with Deep Neural
    Networks", CVPR 2015; re-implementation github.com/zhongzhh8/Image-Retrieval.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from wsdhash.losses import references
from wsdhash.losses.base import HashingLoss


def default_margin(bits: int, dnnh_sigmoid: bool = False) -> float:
    """The margin used when none is given.

    DNNH (codes in [0, 1]) uses 1. For tanh codes the re-implementation uses 20 at 64 bits
    and 8 at 16 bits ("a bit more than K/4"); K/4 + 4 gives exactly both.

    Args:
        bits: K.
        dnnh_sigmoid: whether codes are the original DNNH sigmoid outputs.

    Returns:
        The margin.
    """
    return 1.0 if dnnh_sigmoid else bits / 4.0 + 4.0


def _relevance(labels: tf.Tensor, ref_labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Returns (relevant (B, R), anchor labelled (B,), reference labelled (R,)), all bool."""
    labels = tf.convert_to_tensor(labels)
    ref_labels = tf.convert_to_tensor(ref_labels)
    if labels.shape.rank != ref_labels.shape.rank or labels.shape.rank not in (1, 2):
        raise ValueError(
            "labels and ref_labels must both be class ids (B,) or both label matrices "
            f"(B, C); got shapes {labels.shape} and {ref_labels.shape}."
        )
    if labels.shape.rank == 1:
        labelled = labels >= 0
        ref_labelled = ref_labels >= 0
        relevant = labels[:, None] == ref_labels[None, :]
    else:
        positive = tf.cast(tf.cast(labels, tf.float32) > 0, tf.float32)  # (B, C)
        ref_positive = tf.cast(tf.cast(ref_labels, tf.float32) > 0, tf.float32)  # (R, C)
        labelled = tf.reduce_any(positive > 0, axis=1)
        ref_labelled = tf.reduce_any(ref_positive > 0, axis=1)
        relevant = tf.matmul(positive, ref_positive, transpose_b=True) > 0
    relevant = relevant & labelled[:, None] & ref_labelled[None, :]
    return relevant, labelled, ref_labelled


def _triplet_masks(
    labels: tf.Tensor, ref_labels: tf.Tensor, anchor_offset: int | tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """(B, R) float masks of the positives (after the anchor) and negatives of each anchor."""
    relevant, labelled, ref_labelled = _relevance(labels, ref_labels)
    shape = tf.shape(relevant)
    positives = relevant & references.after_anchor(shape[0], shape[1], anchor_offset)
    negatives = ~relevant & labelled[:, None] & ref_labelled[None, :]
    return tf.cast(positives, tf.float32), tf.cast(negatives, tf.float32)


def count_triplets(labels: tf.Tensor) -> tf.Tensor:
    """Number of (anchor, positive, negative) triplets the original forms on a batch.

    Args:
        labels: (R,) class ids or (R, C) label matrix of the batch (or reference set).

    Returns:
        float32 scalar T.
    """
    positives, negatives = _triplet_masks(labels, labels, 0)
    return tf.reduce_sum(tf.reduce_sum(positives, axis=1) * tf.reduce_sum(negatives, axis=1))


def triplet_loss(
    codes: tf.Tensor,
    labels: tf.Tensor,
    margin: float,
    ref_codes: tf.Tensor | None = None,
    ref_labels: tf.Tensor | None = None,
    anchor_offset: int | tf.Tensor = 0,
) -> tf.Tensor:
    """Batch-all triplet loss per anchor, normalised by the triplets of the references.

    Args:
        codes: (B, K) relaxed codes of the anchors (tanh outputs; [0, 1] for DNNH).
        labels: (B,) class ids or (B, C) one-hot / multi-hot labels of the anchors.
        margin: the hinge margin.
        ref_codes: (R, K) reference codes; defaults to `codes`. Not stop-gradiented.
        ref_labels: references' labels, same format as `labels`; defaults to `labels`.
        anchor_offset: row of the first anchor inside the references. The anchors must be
            rows of the reference set: positives are the relevant references after the
            anchor's row. With all_gather across replicas: replica_id * B.

    Returns:
        (B,) float32; mean over the R references as anchors = the published loss.
    """
    references.check_pair(ref_codes, ref_labels)
    codes = tf.cast(codes, tf.float32)
    if ref_codes is None:
        ref_codes, ref_labels = codes, labels
    ref_codes = tf.cast(ref_codes, tf.float32)

    positives, negatives = _triplet_masks(labels, ref_labels, anchor_offset)  # (B, R) each
    # Squared distances from the difference, not |a|^2 + |b|^2 - 2ab, so that identical
    # codes are exactly 0 apart.
    distances = tf.reduce_sum(
        tf.square(codes[:, None, :] - ref_codes[None, :, :]), axis=2
    )  # (B, R)
    # hinge[i, p, n] = max(0, d(i, p) - d(i, n) + margin)  (B, R, R)
    hinge = tf.nn.relu(distances[:, :, None] - distances[:, None, :] + margin)
    per_anchor = tf.einsum("bpn,bp,bn->b", hinge, positives, negatives)  # (B,)

    num_triplets = count_triplets(ref_labels)
    num_refs = tf.cast(tf.shape(ref_codes)[0], tf.float32)
    return num_refs * tf.math.divide_no_nan(per_anchor, num_triplets)


class TripletLoss(HashingLoss):
    """Batch-all triplet loss layer (stateless; a layer for the trainer's uniform interface).

    `call` returns {"loss", "triplet"}, each (B,), equal to each other.

    Args:
        bits: K (sets the default margin).
        num_classes: C (unused; accepted for the common constructor contract).
        seed: unused; accepted for the common constructor contract.
        margin: hinge margin; None uses `default_margin(bits, dnnh_sigmoid)`.
        dnnh_sigmoid: the original DNNH form on [0, 1] codes (margin 1 by default).

    Reference:
        Lai et al., "Simultaneous Feature Learning and Hash Coding with Deep Neural
        Networks", CVPR 2015.
    """

    hyperparameters = ("margin", "dnnh_sigmoid")
    config_attributes = {"margin": "margin_override"}

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        margin: float | None = None,
        dnnh_sigmoid: bool = False,
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        self.margin_override = None if margin is None else float(margin)
        self.dnnh_sigmoid = bool(dnnh_sigmoid)
        self.margin = (
            default_margin(self.bits, self.dnnh_sigmoid) if margin is None else float(margin)
        )

    def terms(self, codes, labels, refs) -> dict[str, tf.Tensor]:
        loss = triplet_loss(codes, labels, self.margin, refs.codes, refs.labels, refs.anchor_offset)
        return {"loss": loss, "triplet": loss}


class BatchAllTripletLoss(keras.losses.Loss):
    """Stateless Keras triplet loss on the batch: y_true labels, y_pred relaxed codes.

    Returns (B,) values (reduction=None by default) whose mean is the batch-all loss.

    Args:
        margin: hinge margin.
        reduction: Keras reduction; None keeps one value per example.
        name: loss name.
    """

    def __init__(
        self,
        margin: float,
        reduction: str | None = None,
        name: str = "batch_all_triplet",
        dtype: str | None = "float32",
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = float(margin)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return triplet_loss(y_pred, y_true, self.margin)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(margin=self.margin)
        return config
