"""DSH loss: contrastive loss on squared Euclidean distances, plus an L1 pull to +-1.

With u the model's real-valued output (K) and D_ij = ||u_i - u_j||^2, per anchor i
against a reference set of R rows (default the batch itself, the anchor's own row
included, where D_ii = 0 and the pair costs 0):

    contrastive_i    = mean_{j in refs} [ 0.5 s_ij D_ij + 0.5 (1 - s_ij) max(m - D_ij, 0) ]
    regularization_i = mean_k | |u_ik| - 1 |
    loss_i           = contrastive_i + alpha * regularization_i

with s_ij = 1 when the label rows share at least one label, m = 2K (`margin` 0 means
2K) and alpha = 0.1 (`regularization_weight`). The mean over the R anchors is the mean
over the R x R pairs plus alpha times the mean over the R x K entries: DeepHash-pytorch's
DSHLoss with its memory bank equal to the batch.

Departures from DeepHash-pytorch DSH.py (the authors released no code; the paper sums
over pairs, with the regulariser of both codes in each pair):
    * references: DeepHash-pytorch keeps a memory bank of every training code and
      compares the batch with all N of them (stale codes outside the batch); wsdhash
      compares with the fresh codes of the global batch. The pair mean is the same
      quantity on a sample of the references;
    * gradients reach both codes of a pair; the bank is detached, so DeepHash-pytorch's
      contrastive gradient with bank = batch is half of wsdhash's, at the same value.

Reference:
    Liu, Wang, Shan and Chen, "Deep Supervised Hashing for Fast Image Retrieval",
    CVPR 2016.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from wsdhash.losses import references
from wsdhash.losses.base import HashingLoss


def dsh_terms(codes, labels, ref_codes=None, ref_labels=None, *, margin=None, num_classes=None):
    """DSH's per-anchor terms (module doc), unweighted.

    Returns:
        (contrastive (B,), regularization (B,)) float32.
    """
    u, y, ref_u, ref_y = references.resolve(codes, labels, ref_codes, ref_labels, num_classes)
    margin = 2.0 * u.shape[-1] if margin is None else float(margin)
    # Squared distances by differences (exact 0 on the self pair, unlike the expanded form).
    distance = tf.reduce_sum(tf.square(u[:, None, :] - ref_u[None, :, :]), axis=2)  # (B, R)
    s = references.pair_similarity(y, ref_y)
    pair = 0.5 * s * distance + 0.5 * (1.0 - s) * tf.nn.relu(margin - distance)
    contrastive = tf.reduce_mean(pair, axis=1)
    regularization = tf.reduce_mean(tf.abs(tf.abs(u) - 1.0), axis=1)
    return contrastive, regularization


class DSHLoss(HashingLoss):
    """DSH loss layer (no variables).

    `call` returns {"loss", "contrastive", "regularization"}, each (B,), with
    loss = contrastive + regularization_weight * regularization.

    Args:
        bits: K.
        num_classes: C.
        seed: unused.
        margin: m; 0 means 2K.
        regularization_weight: alpha (0.1, DeepHash-pytorch).
    """

    hyperparameters = ("margin", "regularization_weight")

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        margin: float = 0.0,
        regularization_weight: float = 0.1,
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        self.margin = float(margin)
        self.regularization_weight = float(regularization_weight)

    def terms(self, codes, labels, refs):
        # The self pair counts and costs 0 (module doc): no anchor_offset.
        contrastive, regularization = dsh_terms(
            codes,
            labels,
            refs.codes,
            refs.labels,
            margin=self.margin or None,
            num_classes=self.num_classes,
        )
        loss = contrastive + self.regularization_weight * regularization
        return {"loss": loss, "contrastive": contrastive, "regularization": regularization}
