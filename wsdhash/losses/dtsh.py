"""DTSH loss: triplet likelihood of inner products, plus quantization.

Deep Supervised Hashing with Triplet Labels models the probability that an anchor a is
more similar to a positive p than to a negative n as sigmoid(t_apn), with u the model's
real-valued output (K) and

    theta_ij = scale * u_i . u_j           (scale = 1/2, the paper's Theta)
    t_apn    = theta_ap - theta_an - margin

and the negative log-likelihood of a triplet -(t - log(1 + exp t)) = softplus(-t)
(computed stably). Per anchor i against a reference set of R rows (default the batch
itself), with P_i the references similar to i (sharing at least one label) and N_i the
others:

    triplet_i      = R / A * mean_{p in P_i, n in N_i} softplus(-t_ipn)   (0 if P_i or N_i is empty)
    quantization_i = mean_k (u_ik - b_ik)^2,   b_ik = +1 where u_ik >= 0, else -1
    loss_i         = triplet_i + lambda * quantization_i

where A is the number of rows of the reference set that have both a positive and a
negative (counted over the whole reference set, so every replica uses the same A). The
mean over the R anchors is the mean, over the anchors with triplets, of each anchor's
mean triplet loss: DeepHash-pytorch's DTSHLoss when the references are the batch. Under
replicas the anchors are the local examples and positives and negatives come from the
global batch, so 2 replicas give the values of 1 device. The anchor is one of its own
positives only with `include_self` (DeepHash-pytorch's s = y y^T > 0 keeps it; the
authors draw positives from other images). Rows without labels are similar to nothing:
no positives, and a negative of every anchor.

Defaults: scale = 1/2 and margin = K/2 (`margin` 0; the authors' DTSH.m passes
codelens / 2), lambda = 1 (DeepHash-pytorch's, on the per-bit mean).

Scales. DeepHash-pytorch uses theta = u_i . u_j (scale 1) with margin alpha = 5 and
lambda = 1 on the mean over B x K entries: `scale=1, margin=5, quantization_weight=1,
include_self=True` is their loss exactly. The authors (train_triplet.m) sum, per anchor,
softplus(-t) over 50 positives x 50 negatives x 9 other classes = 22,500 sampled triplets
and add eta ||u - b||^2 with eta = 100; per anchor mean over its triplets that is
lambda = eta K / 22,500 on the per-bit mean (48 bits: 0.2133).

Departures from the authors' code (Minione/DTSH, MatConvNet) and DeepHash-pytorch DTSH.py:
    * references: the authors sample each anchor's triplets from a memory bank of all N
      training codes (the batch's own images excluded; stale codes elsewhere, zeros before
      their first visit) and back-propagate to the anchor only; wsdhash takes every
      triplet of the global batch (all replicas, fresh codes), gradients reaching anchor,
      positive and negative, as DeepHash-pytorch does within its batch;
    * DeepHash-pytorch clamps t to [-100, 50] before the loss (no gradient outside);
      wsdhash does not clamp (softplus(-t) is stable);
    * b = sign(u) with sign(0) = +1 (torch.sign and MATLAB's sign give 0).

Reference:
    Wang, Shi and Kitani, "Deep Supervised Hashing with Triplet Labels", ACCV 2016.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from wsdhash.losses import references
from wsdhash.losses.base import HashingLoss
from wsdhash.losses.dpsh import sign_codes


def _triplet_masks(s: tf.Tensor, include_self: bool, num_anchors, num_refs, anchor_offset):
    """(positives (B, R), negatives (B, R)) float 0/1 from the pair similarity s."""
    if include_self:
        positives = s
    else:
        positives = s * tf.cast(
            references.not_self(num_anchors, num_refs, anchor_offset), tf.float32
        )
    return positives, 1.0 - s


def anchors_with_triplets(ref_labels, include_self: bool = False) -> tf.Tensor:
    """A: the number of reference rows that have both a positive and a negative.

    Args:
        ref_labels: (R, C) 0/1 label rows of the reference set.
        include_self: whether a row is its own positive.
    """
    s = references.pair_similarity(ref_labels, ref_labels)
    rows = tf.shape(s)[0]
    positives, negatives = _triplet_masks(s, include_self, rows, rows, 0)
    has = (tf.reduce_sum(positives, axis=1) > 0) & (tf.reduce_sum(negatives, axis=1) > 0)
    return tf.reduce_sum(tf.cast(has, tf.float32))


def dtsh_terms(
    codes,
    labels,
    ref_codes=None,
    ref_labels=None,
    anchor_offset=0,
    *,
    margin=None,
    scale: float = 0.5,
    include_self: bool = False,
    num_classes=None,
):
    """DTSH's per-anchor terms (module doc), unweighted.

    Args:
        codes: (B, K) real-valued codes u of the anchors.
        labels: (B, C) labels or (B,) class ids (then `num_classes` is required).
        ref_codes, ref_labels: the references (R rows); default the anchors.
        anchor_offset: row of the first anchor inside the references.
        margin: the triplet margin; None: K / 2.
        scale: theta = scale * u_i . u_j.
        include_self: whether the anchor is one of its own positives.
        num_classes: C for class ids.

    Returns:
        (triplet (B,), quantization (B,)) float32.
    """
    u, y, ref_u, ref_y = references.resolve(codes, labels, ref_codes, ref_labels, num_classes)
    margin = u.shape[-1] / 2.0 if margin is None else float(margin)
    theta = float(scale) * tf.matmul(u, ref_u, transpose_b=True)  # (B, R)
    s = references.pair_similarity(y, ref_y)
    num_anchors, num_refs = tf.shape(u)[0], tf.shape(ref_u)[0]
    positives, negatives = _triplet_masks(s, include_self, num_anchors, num_refs, anchor_offset)
    # t[i, p, n] = theta_ip - theta_in - margin  (B, R, R)
    t = theta[:, :, None] - theta[:, None, :] - margin
    total = tf.einsum("bpn,bp,bn->b", tf.nn.softplus(-t), positives, negatives)
    count = tf.reduce_sum(positives, axis=1) * tf.reduce_sum(negatives, axis=1)
    mean = tf.math.divide_no_nan(total, count)
    refs = tf.cast(num_refs, tf.float32)
    triplet = refs * tf.math.divide_no_nan(mean, anchors_with_triplets(ref_y, include_self))
    quantization = tf.reduce_mean(tf.square(u - sign_codes(u)), axis=1)
    return triplet, quantization


class DTSHLoss(HashingLoss):
    """DTSH loss layer (no variables).

    `call` returns {"loss", "triplet", "quantization"}, each (B,), with
    loss = triplet + quantization_weight * quantization (terms unweighted).

    Args:
        bits: K.
        num_classes: C.
        seed: unused (no random state).
        margin: the triplet margin; 0 means K / 2 (the authors').
        scale: theta = scale * u_i . u_j (1/2, the paper; DeepHash-pytorch: 1).
        quantization_weight: lambda on mean_k (u - sign u)^2 (1, DeepHash-pytorch).
        include_self: the anchor is one of its own positives (DeepHash-pytorch).
    """

    hyperparameters = ("margin", "scale", "quantization_weight", "include_self")

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        margin: float = 0.0,
        scale: float = 0.5,
        quantization_weight: float = 1.0,
        include_self: bool = False,
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        self.margin = float(margin)
        self.scale = float(scale)
        self.quantization_weight = float(quantization_weight)
        self.include_self = bool(include_self)

    def terms(self, codes, labels, refs):
        triplet, quantization = dtsh_terms(
            codes,
            labels,
            refs.codes,
            refs.labels,
            refs.anchor_offset,
            margin=self.margin or None,
            scale=self.scale,
            include_self=self.include_self,
            num_classes=self.num_classes,
        )
        loss = triplet + self.quantization_weight * quantization
        return {"loss": loss, "triplet": triplet, "quantization": quantization}
