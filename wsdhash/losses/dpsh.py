"""DPSH loss: pairwise likelihood of the labels given inner products, plus quantization.

Deep Pairwise-Supervised Hashing models the probability that two examples are similar
as sigmoid(theta_ij), theta_ij = 0.5 u_i . u_j, with u the model's real-valued output
(K). Per anchor i against a reference set of R rows (default the batch itself):

    likelihood_i   = mean_{j in refs} [ log(1 + exp(theta_ij)) - s_ij theta_ij ]
    quantization_i = sum_k (u_ik - b_ik)^2,   b_ik = +1 where u_ik >= 0, else -1
    loss_i         = likelihood_i + eta * quantization_i     (eta = `quantization_weight`)

s_ij = 1 when the two label rows share at least one label (multi-hot labels, or class
ids), else 0. The anchor's own row is one of its references (theta_ii = 0.5 ||u_i||^2,
s_ii = 1 for a labelled row), as in the authors' code, where the memory bank holds the
anchor's own current code. log(1 + exp(.)) is computed stably (softplus).

Scales. The mean over R anchors of loss_i is (sum over the R x R pairs) / R^2 plus
eta / R * sum_i ||u_i - b_i||^2. The authors' DPSH_CIFAR_10.py divides both sums by
N x B (N training images in the bank, B the batch) and weights the quantization by
lambda = 50, so their setting is eta = lambda / N (CIFAR-10, N = 5,000: eta = 0.01, the
default). DeepHash-pytorch's DPSH.py averages the quantization over the B x K entries
with alpha = 0.1: eta = alpha / K.

Departures from the authors' code (jiangqy/DPSH-pytorch, DPSH_CIFAR_10.py, and
DeepHash-pytorch DPSH.py):
    * references: both keep a memory bank of every training code (updated with the
      batch's codes each step, stale elsewhere) and compare the batch with all N of
      them; wsdhash compares the anchors with the codes of the global batch (all
      replicas), all fresh. The pair average is the same quantity on a sample of the
      references; a bank is not implemented because it would be per-run state updated
      inside the replicated step (see the method's docstring);
    * gradients reach both codes of a pair (the paper's gradient, where u_i appears as
      anchor and as reference); the bank is detached, so the authors' pair gradient
      with the bank equal to the batch is half of wsdhash's, at the same loss value;
    * b = sign(u) with sign(0) = +1 (torch.sign gives 0); only exact zeros differ.

Reference:
    Li, Wang and Kang, "Feature Learning based Deep Supervised Hashing with Pairwise
    Labels", IJCAI 2016.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from wsdhash.losses import references
from wsdhash.losses.base import HashingLoss


def sign_codes(u: tf.Tensor) -> tf.Tensor:
    """+1 where u >= 0, else -1 (wsdhash's binarisation)."""
    return tf.where(u >= 0, tf.ones_like(u), -tf.ones_like(u))


def dpsh_terms(codes, labels, ref_codes=None, ref_labels=None, num_classes: int | None = None):
    """DPSH's per-anchor terms (module doc), unweighted.

    Args:
        codes: (B, K) real-valued codes u of the anchors.
        labels: (B, C) labels or (B,) class ids (then `num_classes` is required).
        ref_codes, ref_labels: the references (R rows); default the anchors.
        num_classes: C for class ids.

    Returns:
        (likelihood (B,), quantization (B,)) float32.
    """
    u, y, ref_u, ref_y = references.resolve(codes, labels, ref_codes, ref_labels, num_classes)
    theta = 0.5 * tf.matmul(u, ref_u, transpose_b=True)  # (B, R)
    s = references.pair_similarity(y, ref_y)
    likelihood = tf.reduce_mean(tf.nn.softplus(theta) - s * theta, axis=1)
    quantization = tf.reduce_sum(tf.square(u - sign_codes(u)), axis=1)
    return likelihood, quantization


class DPSHLoss(HashingLoss):
    """DPSH loss layer (no variables).

    `call` returns {"loss", "likelihood", "quantization"}, each (B,), with
    loss = likelihood + quantization_weight * quantization (terms unweighted).

    Args:
        bits: K.
        num_classes: C.
        seed: unused (no random state).
        quantization_weight: eta on sum_k (u - sign u)^2 (0.01 = the authors' lambda 50
            over their N = 5,000 CIFAR-10 training images).
    """

    hyperparameters = ("quantization_weight",)

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        quantization_weight: float = 0.01,
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        self.quantization_weight = float(quantization_weight)

    def terms(self, codes, labels, refs):
        # The anchor's own row counts (module doc), so the offset is not needed.
        likelihood, quantization = dpsh_terms(
            codes, labels, refs.codes, refs.labels, self.num_classes
        )
        loss = likelihood + self.quantization_weight * quantization
        return {"loss": loss, "likelihood": likelihood, "quantization": quantization}
