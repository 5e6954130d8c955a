"""BiHalf loss: codes from the bi-half layer (each bit split half +1, half -1 over the
batch) whose pair cosine similarities match the backbone features'. Unsupervised: the
labels are ignored (the trainer always passes them).

With u_r the model's output (K) for the R rows of the global batch (the references),
x_r the backbone's features and B = bihalf(U):

    bihalf(U)_rk = +1 if u_rk is among the floor(R/2) largest of column k, else -1
    forward:  b = bihalf(u)            backward:  dL/du = dL/db + gamma (u - b) / (R K)
    similarity_i   = ( cos(b_a, b_p) - cos(x_a, x_p) )^2   (a = anchor i's row, p its
                     partner row a +- R/2: losses/feature_similarity.py)
    quantization_i = gamma / 2 * mean_k (u_ik - b_ik)^2    (b held constant)
    loss_i         = similarity_i + quantization_i

The authors' autograd Function (liyunqianggyn/Deep-Unsupervised-Image-Hashing,
ImageHashing/Cifar10_I.py `hash`) returns B forward and g + gamma (U - B) / B.numel()
backward. wsdhash writes that backward as a straight-through bi-half (dL/du = dL/db) plus
the quantization term, whose gradient, averaged over the R rows as the trainer does, is
exactly gamma (U - B) / (R K): same gradient, and a term that is per anchor, so under
replicas each replica adds it for its own rows only (an extra term inside the backward
of a gathered tensor would be added once per replica). The similarity term alone is the
authors' loss value (F.mse_loss of the pair cosines); `loss` adds the quantization term.

The bi-half assignment is computed on the references (every replica's codes) and the
anchors' rows taken, so 1 and 2 replicas assign the same bits. At test time the codes
are sign(u) (the method's binarize; sign(0) = +1).

Defaults: gamma = 6 (`gamma`; every script of the authors' ImageHashing/, and
DeepHash-pytorch's Unsupervised_BiHalf.py; the paper's text gives gamma = 3 / (N K), i.e.
3 here). The authors' features x are VGG16's fc7 output (after ReLU and, in training
mode, dropout) with VGG16 frozen; wsdhash uses whatever its backbone outputs.

Departures from the authors' code:
    * ties inside a column are broken by row order (a stable sort; torch.sort's order for
      ties is unspecified); with real-valued outputs ties do not occur in practice;
    * the quantization term is reported in `loss` (the authors' loss.item() is the
      similarity term alone; their gamma term lives in the backward only);
    * an odd batch leaves its last row unpaired (similarity 0); the authors' batches are
      even (their code would fail on an odd one).

Reference:
    Li and van Gemert, "Deep Unsupervised Image Hashing by Maximizing Bit Entropy",
    AAAI 2021.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from wsdhash.losses import feature_similarity, references
from wsdhash.losses.base import HashingLoss


def bi_half(u: tf.Tensor) -> tf.Tensor:
    """(N, K) -> (N, K) of +-1: in each column the floor(N/2) largest entries +1, the
    rest -1 (ties by row order). No gradient."""
    u = tf.stop_gradient(tf.cast(u, tf.float32))
    order = tf.argsort(u, axis=0, direction="DESCENDING", stable=True)
    ranks = tf.argsort(order, axis=0, stable=True)  # each entry's rank in its column
    top = ranks < tf.shape(u)[0] // 2
    return tf.where(top, tf.ones_like(u), -tf.ones_like(u))


@tf.custom_gradient
def straight_through_bi_half(u: tf.Tensor):
    """`bi_half(u)` with the gradient passed through unchanged (the gamma part of the
    authors' backward is `BiHalfLoss`'s quantization term)."""

    def grad(upstream):
        return upstream

    return bi_half(u), grad


def bihalf_terms(
    codes, ref_codes=None, features=None, ref_features=None, anchor_offset=0, center_features=False
):
    """(similarity (B,), quantization (B,) without gamma / 2) for the anchors `codes`.

    `quantization_i` = mean_k (u_ik - b_ik)^2 with b the anchors' rows of the bi-half of
    the references (held constant).

    Raises:
        ValueError: `features` missing (feature_similarity.resolve_features).
    """
    codes = tf.cast(tf.convert_to_tensor(codes), tf.float32)
    features, ref_features = feature_similarity.resolve_features(
        "BiHalfLoss", ref_codes, features, ref_features
    )
    if ref_codes is None:
        ref_codes, anchor_offset = codes, 0
    ref_codes = tf.cast(tf.convert_to_tensor(ref_codes), tf.float32)
    num_anchors = tf.shape(codes)[0]
    ref_binary = straight_through_bi_half(ref_codes)
    rows = references.anchor_rows(num_anchors, anchor_offset)
    targets = tf.stop_gradient(tf.gather(ref_binary, rows))
    quantization = tf.reduce_mean(tf.square(codes - targets), axis=1)
    similarity = feature_similarity.pair_similarity_terms(
        ref_binary, ref_features, num_anchors, anchor_offset, center_features
    )
    return similarity, quantization


class BiHalfLoss(HashingLoss):
    """BiHalf loss layer (no variables); unsupervised: `labels` are ignored.

    `call` returns {"loss", "similarity", "quantization"}, each (B,), with
    quantization already weighted by gamma / 2 and loss = similarity + quantization.
    It needs the backbone's `features` (and `ref_features` with the references), which
    the trainer passes because the method sets `uses_backbone_features`; a call without
    them raises ValueError.

    Args:
        bits: K.
        num_classes: C (unused: unsupervised).
        seed: unused.
        gamma: weight of the bi-half layer's pull of u towards b (6, the authors' code).
        center_features: compare cosines of the features minus the global batch's mean
            (feature_similarity.centered_features; False in the authors' code).

    Reference:
        Li and van Gemert, "Deep Unsupervised Image Hashing by Maximizing Bit Entropy",
        AAAI 2021.
    """

    hyperparameters = ("gamma", "center_features")

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        gamma: float = 6.0,
        center_features: bool = False,
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        self.gamma = float(gamma)
        self.center_features = bool(center_features)

    def terms(self, codes, labels, refs, features=None, ref_features=None):
        del labels  # unsupervised
        similarity, quantization = bihalf_terms(
            codes, refs.codes, features, ref_features, refs.anchor_offset, self.center_features
        )
        quantization = 0.5 * self.gamma * quantization
        return {
            "loss": similarity + quantization,
            "similarity": similarity,
            "quantization": quantization,
        }
