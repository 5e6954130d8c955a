"""IDHN loss: pairwise likelihood on hard pairs, squared error on soft pairs, with the
soft pairwise similarity of multi-label rows, plus an L1 pull to +-1.

Improved Deep Hashing Network measures the similarity of two label rows by their cosine,
s_ij = y_i . y_j / (|y_i| |y_j|) in [0, 1] (0 when a row has no label). Pairs with
s_ij > 0.99 or s_ij < 0.01 ("hard": same label set or no shared label) get a
cross-entropy on the scaled inner product; the other ("soft") pairs a squared error
between s_ij and the inner product mapped to [0, 1]. With u = softsign(z) = z / (1 + |z|)
the relaxed codes (K) and per anchor i against a reference set of R rows (default the
batch itself, the anchor's own row included):

    theta_ij       = (beta / K) u_i . u_j
    likelihood_i   = mean_{j in refs} hard_ij [ log(1 + exp(theta_ij)) - s_ij theta_ij ]
    soft_i         = mean_{j in refs} (1 - hard_ij) K ((t_ij + K) / (2K) - s_ij)^2
    quantization_i = mean_k | |u_ik| - 1 |
    loss_i         = likelihood_i + gamma * soft_i + lambda * quantization_i

with t_ij = u_i . u_j (the authors' code) or theta_ij (`soft_scaled`, DeepHash-pytorch).
Defaults are the authors' (pectinid16/IDHN train.py, hashing_loss): beta = 5 ("belta"),
gamma = 0.1 ("gama"), lambda = 0.1 ("alpha"), t unscaled. The mean over the R anchors is
the authors' mean over the B x B pairs plus lambda times the mean over the B x K entries.

DeepHash-pytorch IDHN.py writes theta = alpha u_i . u_j (alpha = 0.5) and the soft cost
gamma_dh (theta + K - 2 s K)^2 = 4 K gamma_dh * K ((theta + K) / (2K) - s)^2: it is
beta = alpha K, soft_scaled = True and gamma = 4 K gamma_dh (their gamma_dh = 0.1,
lambda = 0.1). Their soft term is therefore 4K times the authors' at the same gamma.

Departures from the authors' code and DeepHash-pytorch IDHN.py:
    * references: DeepHash-pytorch compares the batch with a memory bank of every
      training code (stale outside the batch, detached); wsdhash, like the authors'
      TensorFlow code, compares the anchors with the fresh codes of the (global) batch,
      and gradients reach both codes of a pair. DeepHash-pytorch's gradient with its
      bank equal to the batch is the anchor side only;
    * the cosine is exact, with 0 for a row without labels (the authors' code divides by
      0 there; DeepHash-pytorch adds 1e-5 to the norm product, which moves s of labelled
      pairs by about 1e-5 relative);
    * softsign is applied inside the loss to the model's output (`apply_softsign`; the
      authors' network ends in softsign). sign(softsign z) = sign z, so the codes are
      unchanged.

Reference:
    Zhang, Zou, Lin, Chen and Wang, "Improved Deep Hashing with Soft Pairwise Similarity
    for Multi-label Image Retrieval", IEEE Transactions on Multimedia, 2019.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from wsdhash.losses import references
from wsdhash.losses.base import HashingLoss

HARD_SIMILAR = 0.99
HARD_DISSIMILAR = 0.01


def cosine_similarity(labels: tf.Tensor, ref_labels: tf.Tensor) -> tf.Tensor:
    """(B, R) cosine of 0/1 label rows, 0 where a row has no label."""
    norms = (
        tf.sqrt(tf.reduce_sum(labels, axis=1))[:, None]
        * tf.sqrt(tf.reduce_sum(ref_labels, axis=1))[None, :]
    )
    return tf.math.divide_no_nan(tf.matmul(labels, ref_labels, transpose_b=True), norms)


def idhn_terms(
    codes,
    labels,
    ref_codes=None,
    ref_labels=None,
    *,
    beta=5.0,
    soft_scaled=False,
    apply_softsign=True,
    num_classes=None,
):
    """IDHN's per-anchor terms (module doc), unweighted.

    Returns:
        (likelihood (B,), soft (B,), quantization (B,)) float32.
    """
    z, y, ref_z, ref_y = references.resolve(codes, labels, ref_codes, ref_labels, num_classes)
    u, ref_u = (tf.nn.softsign(z), tf.nn.softsign(ref_z)) if apply_softsign else (z, ref_z)
    bits = float(u.shape[-1])
    s = cosine_similarity(y, ref_y)
    hard = tf.cast((s > HARD_SIMILAR) | (s < HARD_DISSIMILAR), tf.float32)
    inner = tf.matmul(u, ref_u, transpose_b=True)  # (B, R)
    theta = (beta / bits) * inner
    likelihood = tf.reduce_mean(hard * (tf.nn.softplus(theta) - s * theta), axis=1)
    t = theta if soft_scaled else inner
    soft = tf.reduce_mean((1.0 - hard) * bits * tf.square((t + bits) / (2.0 * bits) - s), axis=1)
    quantization = tf.reduce_mean(tf.abs(tf.abs(u) - 1.0), axis=1)
    return likelihood, soft, quantization


class IDHNLoss(HashingLoss):
    """IDHN loss layer (no variables).

    `call` returns {"loss", "likelihood", "soft", "quantization"}, each (B,), with
    loss = likelihood + soft_weight * soft + quantization_weight * quantization.

    Args:
        bits: K.
        num_classes: C.
        seed: unused.
        beta: theta = (beta / K) u_i . u_j (5, the authors'; DeepHash-pytorch 0.5 K).
        soft_weight: gamma on the soft-pair squared error (0.1).
        quantization_weight: lambda on mean_k ||u| - 1| (0.1).
        soft_scaled: the soft term uses theta instead of u_i . u_j (DeepHash-pytorch).
        apply_softsign: u = softsign(model output) (True); False: the output is u.
    """

    hyperparameters = (
        "beta",
        "soft_weight",
        "quantization_weight",
        "soft_scaled",
        "apply_softsign",
    )

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        beta: float = 5.0,
        soft_weight: float = 0.1,
        quantization_weight: float = 0.1,
        soft_scaled: bool = False,
        apply_softsign: bool = True,
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        self.beta = float(beta)
        self.soft_weight = float(soft_weight)
        self.quantization_weight = float(quantization_weight)
        self.soft_scaled = bool(soft_scaled)
        self.apply_softsign = bool(apply_softsign)

    def terms(self, codes, labels, refs):
        # The self pair counts, as in the authors' B x B pairs: no anchor_offset.
        likelihood, soft, quantization = idhn_terms(
            codes,
            labels,
            refs.codes,
            refs.labels,
            beta=self.beta,
            soft_scaled=self.soft_scaled,
            apply_softsign=self.apply_softsign,
            num_classes=self.num_classes,
        )
        loss = likelihood + self.soft_weight * soft + self.quantization_weight * quantization
        return {"loss": loss, "likelihood": likelihood, "soft": soft, "quantization": quantization}
