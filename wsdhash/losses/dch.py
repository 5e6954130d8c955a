"""DCH loss: class-balanced Cauchy cross-entropy on normalised Hamming distances, plus a
Cauchy quantization loss.

Deep Cauchy Hashing models the probability that two examples are similar with a Cauchy
kernel of their distance, p_ij = gamma / (gamma + d_ij), where d is the normalised
Hamming distance of the real-valued codes u (K bits):

    d(u, v) = K / 2 * (1 - cos(u, v))         (the Hamming distance when u, v are +-1)

Per anchor i against a reference set of R rows (default the batch itself):

    l_ij           = s_ij log(1 + d_ij / gamma) + (1 - s_ij) log(1 + gamma / d_ij)
                     (-s log p - (1 - s) log(1 - p))
    cauchy_i       = mean_{j in refs} w_ij l_ij
    quantization_i = log(1 + d(|u_i|, 1) / gamma)
    loss_i         = cauchy_i + lambda * quantization_i

with s_ij = 1 when the label rows share at least one label. The weights balance the
similar and dissimilar pairs (the paper's Eq. 2): over the pairs P of the reference set
(every R x R pair whichever rows are anchors here, so that replicas agree), w = |P| / |P1|
for a similar pair and |P| / |P0| for a dissimilar one; when P1 or P0 is empty all
weights are 1 (as DeepHash-pytorch). The anchor's pair with itself is left out of the
pairs and of the counts unless `include_self` (DeepHash-pytorch's u u^T keeps it; the
authors' TensorFlow code masks it out of the loss). With the references equal to the
batch, the mean over the R anchors is DeepHash-pytorch's DCHLoss exactly
(`include_self=True`): mean over the pairs of w l plus lambda times the mean
quantization.

Clipping (DeepHash-pytorch's): cos is computed with the norm product clamped to >= 1e-4
and then clamped to <= 0.99, so d >= 0.005 K and log(1 + gamma / d) stays finite for
identical codes (their gradient through d is 0 there). The same clamp applies to the
quantization distance, whose minimum is therefore log(1 + 0.005 K / gamma), not 0.

Defaults: gamma = 20 (the authors' train_val_script.py and DeepHash-pytorch), lambda =
0.1 (DeepHash-pytorch; `quantization_weight`).

Departures from the authors' code (thuml/DeepHash, DeepHash/model/dch/dch.py) and
DeepHash-pytorch DCH.py:
    * the authors' released training calls their cauchy_cross_entropy with
      normed=False, i.e. on the squared Euclidean distance |u_i - u_j|^2 + 0.001, and
      their quantization term is mean (|u| - 1)^2 with weight q_lambda = 0 by default;
      wsdhash implements the paper's loss (normalised distance, Cauchy quantization),
      as DeepHash-pytorch does;
    * the authors weight dissimilar pairs by 1 and similar ones by (all pairs) / (similar
      pairs, self pairs counted) while averaging over the off-diagonal pairs; wsdhash uses
      the paper's |P| / |P1| and |P| / |P0| with P the pairs that enter the loss;
    * the authors add 1e-6 to the norm product and to d; wsdhash clamps as
      DeepHash-pytorch (above);
    * pairs are taken within the global batch (all replicas), as the authors and
      DeepHash-pytorch do within their batch; gradients reach both codes of a pair.

Reference:
    Cao, Long, Liu and Wang, "Deep Cauchy Hashing for Hamming Space Retrieval", CVPR 2018.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from wsdhash.losses import references
from wsdhash.losses.base import HashingLoss

# DeepHash-pytorch's clamps: norm product >= NORM_FLOOR, cosine <= COSINE_CEILING.
NORM_FLOOR = 1e-4
COSINE_CEILING = 0.99


def _norm(x: tf.Tensor) -> tf.Tensor:
    """Row norms; the floor inside the root keeps the gradient of a zero row finite (0
    after the clamp) where tf.norm's would be NaN. It changes no norm above 1e-15."""
    return tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(x), axis=1), 1e-30))


def normalized_distance(u: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """(N, M) K / 2 (1 - cos(u_i, v_j)) with the module's clamps; u (N, K), v (M, K)."""
    bits = float(u.shape[-1])
    norms = _norm(u)[:, None] * _norm(v)[None, :]
    cos = tf.matmul(u, v, transpose_b=True) / tf.maximum(norms, NORM_FLOOR)
    return bits / 2.0 * (1.0 - tf.minimum(cos, COSINE_CEILING))


def dch_terms(
    codes,
    labels,
    ref_codes=None,
    ref_labels=None,
    anchor_offset=0,
    *,
    gamma: float = 20.0,
    include_self: bool = False,
    num_classes: int | None = None,
):
    """DCH's per-anchor terms (module doc), unweighted.

    Args:
        codes: (B, K) real-valued codes u of the anchors.
        labels: (B, C) labels or (B,) class ids (then `num_classes` is required).
        ref_codes, ref_labels: the references (R rows); default the anchors.
        anchor_offset: row of the first anchor inside the references.
        gamma: the Cauchy scale.
        include_self: whether each anchor's pair with itself counts.
        num_classes: C for class ids.

    Returns:
        (cauchy (B,), quantization (B,)) float32.
    """
    u, y, ref_u, ref_y = references.resolve(codes, labels, ref_codes, ref_labels, num_classes)
    gamma = float(gamma)
    distance = normalized_distance(u, ref_u)  # (B, R)
    s = references.pair_similarity(y, ref_y)
    pair = s * tf.math.log1p(distance / gamma) + (1.0 - s) * tf.math.log1p(gamma / distance)

    valid, num_pos, num_neg = references.counted_pairs(s, ref_y, anchor_offset, include_self)
    num_all = num_pos + num_neg
    balanced = s * tf.math.divide_no_nan(num_all, num_pos) + (1.0 - s) * tf.math.divide_no_nan(
        num_all, num_neg
    )
    weight = tf.where((num_pos > 0) & (num_neg > 0), balanced, tf.ones_like(s))
    pairs_per_anchor = tf.reduce_sum(valid, axis=1)
    cauchy = tf.math.divide_no_nan(tf.reduce_sum(weight * pair * valid, axis=1), pairs_per_anchor)

    ones = tf.ones([1, u.shape[-1]], tf.float32)
    to_ones = normalized_distance(tf.abs(u), ones)[:, 0]  # (B,)
    quantization = tf.math.log1p(to_ones / gamma)
    return cauchy, quantization


class DCHLoss(HashingLoss):
    """DCH loss layer (no variables).

    `call` returns {"loss", "cauchy", "quantization"}, each (B,), with
    loss = cauchy + quantization_weight * quantization (terms unweighted).

    Args:
        bits: K.
        num_classes: C.
        seed: unused (no random state).
        gamma: the Cauchy scale (20).
        quantization_weight: lambda on the Cauchy quantization loss (0.1).
        include_self: count each anchor's pair with itself (DeepHash-pytorch); default
            off (the authors mask it out).
    """

    hyperparameters = ("gamma", "quantization_weight", "include_self")

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        gamma: float = 20.0,
        quantization_weight: float = 0.1,
        include_self: bool = False,
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        self.gamma = float(gamma)
        self.quantization_weight = float(quantization_weight)
        self.include_self = bool(include_self)
        if self.gamma <= 0:
            raise ValueError(f"gamma must be > 0; got {gamma}.")

    def terms(self, codes, labels, refs):
        cauchy, quantization = dch_terms(
            codes,
            labels,
            refs.codes,
            refs.labels,
            refs.anchor_offset,
            gamma=self.gamma,
            include_self=self.include_self,
            num_classes=self.num_classes,
        )
        loss = cauchy + self.quantization_weight * quantization
        return {"loss": loss, "cauchy": cauchy, "quantization": quantization}
