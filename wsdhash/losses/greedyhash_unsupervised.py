"""GreedyHash-unsupervised loss: sign codes (straight-through gradient) whose pair cosine
similarities match the backbone features', plus GreedyHash's cubic penalty. Unsupervised:
the labels are ignored (the trainer always passes them).

With h_r the model's output (K), b_r = sign(h_r) (+1 where h >= 0) and x_r the
backbone's features, for the R rows of the global batch (the references):

    forward:  b = sign(h)                 backward:  dL/dh = dL/db   (straight through)
    similarity_i = ( cos(b_a, b_p) - cos(x_a, x_p) )^2   (a = anchor i's row, p its
                   partner row a +- R/2: losses/feature_similarity.py)
    penalty_i    = mean_k | |h_ik| - 1 |^3
    loss_i       = similarity_i + alpha * penalty_i

The mean over the batch is the authors' loss (ssppp/GreedyHash unsupervised_vgg.py:
loss1 = F.mse_loss of the half-batch pair cosines, loss2 = mean over B x K of
| (|h| - 1)^3 |, loss = loss1 + 0.1 loss2): the pairs are row i with row i + N/2, not an
N x N similarity matrix. alpha = 0.1 (`alpha`; the authors' script and DeepHash-pytorch's
Unsupervised_GreedyHash.py). Their features x are VGG16's fc7 output (after ReLU and, in
training mode, dropout) with VGG16 frozen; wsdhash uses whatever its backbone outputs.
The sign and the penalty are those of the supervised GreedyHash loss
(wsdhash/losses/greedyhash.py).

Departures from the authors' code:
    * sign(0) = +1, as wsdhash.eval.binarize (torch.sign gives 0, a third value);
    * pairs are taken in the global batch (every replica's codes and features), so 2
      replicas pair the same rows as 1 device; an odd batch leaves its last row unpaired
      (similarity 0; the authors' batches are even).

Reference:
    Su et al., "Greedy Hash: Towards Fast Optimization for Accurate Hash Coding in CNN",
    NeurIPS 2018.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from wsdhash.losses import feature_similarity
from wsdhash.losses.base import HashingLoss
from wsdhash.losses.greedyhash import cubic_penalty, straight_through_sign


def greedyhash_unsupervised_terms(
    codes, ref_codes=None, features=None, ref_features=None, anchor_offset=0, center_features=False
):
    """(similarity (B,), penalty (B,)) for the anchors `codes` (module doc).

    Raises:
        ValueError: `features` missing (feature_similarity.resolve_features).
    """
    codes = tf.cast(tf.convert_to_tensor(codes), tf.float32)
    features, ref_features = feature_similarity.resolve_features(
        "GreedyHashUnsupervisedLoss", ref_codes, features, ref_features
    )
    penalty = cubic_penalty(codes)
    if ref_codes is None:
        ref_codes, anchor_offset = codes, 0
    ref_binary = straight_through_sign(tf.cast(tf.convert_to_tensor(ref_codes), tf.float32))
    similarity = feature_similarity.pair_similarity_terms(
        ref_binary, ref_features, tf.shape(codes)[0], anchor_offset, center_features
    )
    return similarity, penalty


class GreedyHashUnsupervisedLoss(HashingLoss):
    """GreedyHash-unsupervised loss layer (no variables); `labels` are ignored.

    `call` returns {"loss", "similarity", "penalty"}, each (B,), with
    loss = similarity + alpha * penalty (terms unweighted). It needs the backbone's
    `features` (and `ref_features` with the references), which the trainer passes
    because the method sets `uses_backbone_features`; a call without them raises
    ValueError.

    Args:
        bits: K.
        num_classes: C (unused: unsupervised).
        seed: unused.
        alpha: weight of the cubic penalty (0.1, the authors' unsupervised script).
        center_features: compare cosines of the features minus the global batch's mean
            (feature_similarity.centered_features; False in the authors' code).

    Reference:
        Su et al., "Greedy Hash: Towards Fast Optimization for Accurate Hash Coding in
        CNN", NeurIPS 2018.
    """

    hyperparameters = ("alpha", "center_features")

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        alpha: float = 0.1,
        center_features: bool = False,
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        self.alpha = float(alpha)
        self.center_features = bool(center_features)

    def terms(self, codes, labels, refs, features=None, ref_features=None):
        del labels  # unsupervised
        similarity, penalty = greedyhash_unsupervised_terms(
            codes, refs.codes, features, ref_features, refs.anchor_offset, self.center_features
        )
        return {
            "loss": similarity + self.alpha * penalty,
            "similarity": similarity,
            "penalty": penalty,
        }
