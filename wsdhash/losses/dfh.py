"""DFH loss: a margin pairwise likelihood plus quantization towards codes pushed to the
class centres ("push for quantization").

Deep Fisher Hashing keeps a binary centre per class, C (K x C, +-1), and quantizes each
code towards b = sign(mu C y + u): the sign of u pushed towards the centres of its
labels. With u the model's real-valued output (K), per anchor i against a reference set
of R rows (default the batch itself, the anchor's own row included):

    theta_ij       = 0.5 u_i . u_j
    metric_i       = mean_{j in refs} [ (1 - s_ij) log(1 + exp(m + theta_ij))
                                        + s_ij log(1 + exp(m - theta_ij)) ]
    quantization_i = mean_k (b_ik - u_ik)^2,     b_i = sign(mu C y_i + u_i)  (no gradient)
    loss_i         = metric_i + eta * quantization_i

s_ij = 1 when the label rows share a label. Defaults (DeepHash-pytorch DFH.py): margin
m = 3, push mu = 0.1, eta = 0.5; with m = 0 the metric is DPSH's likelihood
log(1 + exp(theta)) - s theta (the authors' released metric).

Centres (the "relax" C-step, DeepHash-pytorch's Center_gradient and the authors'
Relaxcenter): relaxed centres V (K x C) minimise, by 200 steps of gradient descent from
V = 0 (step 0.03, x0.1 after steps 150 and 180),

    mean_{K x R} (V Y^T - B)^2 + vul * mean_{C x C} (V^T V - K (2 I - 1))^2
                               + nta * mean_{K x C} (V - sign V)^2

over the references' labels Y (R x C) and codes B = sign(u) (K x R); C = sign(V)
(sign(0) = 0 there, as torch.sign). vul = nta = 1. With `normalize_labels` (the authors'
Main.py, for multi-label data) each label row is divided by its number of labels in the
C-step and in the push (mu C y is then the mean of the label centres).

Memory bank and centre state. DeepHash-pytorch keeps a bank of every training code
(U, Y) and compares the batch with all N codes; it also keeps V between steps: each step
quantizes with the centres of the previous steps, then refines V with 200 descent steps
on the batch. wsdhash has no memory banks and no per-step state (a state updated inside
the replicated step would have to be synchronised across replicas and would also move
on validation calls): the references are the codes of the global batch (all replicas,
all fresh), and the centres are fitted afresh on the global batch at every call, from
V = 0 and B = sign(u) (the fit DeepHash-pytorch's first call on a batch makes), and
then quantize in the same call; every replica fits the same centres from the same
global batch. DeepHash-pytorch quantizes before it refits V, so its first call on a
batch quantizes with V = 0 (b = sign(u)): the loss here equals its *second* call on
the same batch (bank = this batch), which quantizes with the V its first call fitted.
The push therefore uses the centres of the batch's own codes rather than those
accumulated over past batches.

Other departures from DeepHash-pytorch DFH.py and the authors' code
(liyunqianggyn/Push-for-Quantization-Deep-Fisher-Hashing, Main.py, center.py,
models/DFH_loss.py):
    * gradients reach both codes of a pair (the bank is detached in both codes), so
      their pair gradient with bank = batch is half of wsdhash's, at the same value;
    * their theta is clamped to [-100, 50] before exp (an overflow guard that also stops
      the gradient of pairs beyond it); wsdhash computes log(1 + exp(.)) as softplus,
      which needs no guard, and keeps every pair's gradient;
    * b = sign(.) with sign(0) = +1 (torch.sign gives 0); only exact zeros differ;
    * the authors' Main.py uses the discrete C-step (Discretecenter, cyclic coordinate
      descent); only the relaxed C-step (their Relaxcenter, DeepHash-pytorch's) is
      implemented.

Reference:
    Li, Pei, Zha and van Gemert, "Push for Quantization: Deep Fisher Hashing", BMVC 2019.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from wsdhash.losses import references
from wsdhash.losses.base import HashingLoss
from wsdhash.losses.dpsh import sign_codes

CENTER_STEPS = 200
CENTER_LEARNING_RATE = 0.03
# DeepHash-pytorch: the step is scaled by 0.1 after iterations 149 and 179 (0-based).
CENTER_DECAY_AFTER = (149, 179)


def _label_rows(y: tf.Tensor, normalize: bool) -> tf.Tensor:
    if not normalize:
        return y
    return tf.math.divide_no_nan(y, tf.reduce_sum(y, axis=1, keepdims=True))


def fit_centers(
    labels: tf.Tensor, codes: tf.Tensor, inter_weight: float = 1.0, quantization_weight: float = 1.0
) -> tf.Tensor:
    """Relaxed centres V (K, C) fitted to (R, C) label rows and (R, K) +-1 codes by
    200 gradient steps from 0 (module doc); returns V (C = sign(V))."""
    y = tf.cast(labels, tf.float32)
    b = tf.transpose(tf.cast(codes, tf.float32))  # (K, R)
    bits, num_refs = tf.shape(b)[0], tf.shape(b)[1]
    num_classes = tf.shape(y)[1]
    k = tf.cast(bits, tf.float32)
    target = k * (2.0 * tf.eye(num_classes) - 1.0)
    intra_scale = 2.0 / (k * tf.cast(num_refs, tf.float32))
    inter_scale = 4.0 / tf.cast(num_classes * num_classes, tf.float32)
    quant_scale = 2.0 / (k * tf.cast(num_classes, tf.float32))

    def step(i, v):
        rate = CENTER_LEARNING_RATE * tf.where(
            i >= CENTER_DECAY_AFTER[1], 0.01, tf.where(i >= CENTER_DECAY_AFTER[0], 0.1, 1.0)
        )
        grad = intra_scale * tf.matmul(tf.matmul(v, y, transpose_b=True) - b, y)
        grad += (
            inter_weight * inter_scale * tf.matmul(v, tf.matmul(v, v, transpose_a=True) - target)
        )
        grad += quantization_weight * quant_scale * (v - tf.sign(v))
        return i + 1, v - rate * grad

    _, v = tf.while_loop(
        lambda i, v: i < CENTER_STEPS,
        step,
        (tf.constant(0), tf.zeros(tf.stack([bits, num_classes]))),
    )
    return v


def dfh_terms(
    codes,
    labels,
    ref_codes=None,
    ref_labels=None,
    *,
    margin=3.0,
    push=0.1,
    inter_weight=1.0,
    center_quantization_weight=1.0,
    normalize_labels=False,
    num_classes=None,
):
    """DFH's per-anchor terms (module doc), unweighted.

    Returns:
        (metric (B,), quantization (B,), centres V (K, C)) float32.
    """
    u, y, ref_u, ref_y = references.resolve(codes, labels, ref_codes, ref_labels, num_classes)
    # C-step on the references (no gradient), then the pushed codes of the anchors.
    v = fit_centers(
        _label_rows(ref_y, normalize_labels),
        sign_codes(tf.stop_gradient(ref_u)),
        inter_weight,
        center_quantization_weight,
    )
    centers = tf.sign(v)
    pushed = push * tf.matmul(_label_rows(y, normalize_labels), centers, transpose_b=True)
    b = tf.stop_gradient(sign_codes(pushed + u))
    theta = 0.5 * tf.matmul(u, ref_u, transpose_b=True)  # (B, R)
    s = references.pair_similarity(y, ref_y)
    pair = (1.0 - s) * tf.nn.softplus(margin + theta) + s * tf.nn.softplus(margin - theta)
    metric = tf.reduce_mean(pair, axis=1)
    quantization = tf.reduce_mean(tf.square(b - u), axis=1)
    return metric, quantization, v


class DFHLoss(HashingLoss):
    """DFH loss layer (no variables: the centres are fitted per call, module doc).

    `call` returns {"loss", "metric", "quantization"}, each (B,), with
    loss = metric + quantization_weight * quantization.

    Args:
        bits: K.
        num_classes: C.
        seed: unused.
        margin: m (3, DeepHash-pytorch; 0 in the authors' Main.py).
        push: mu, the weight of the label centres in b (0.1; the authors' Main.py 1).
        quantization_weight: eta (0.5).
        inter_weight: vul, the C-step's inter-class term (1).
        center_quantization_weight: nta, the C-step's quantization term (1).
        normalize_labels: divide label rows by their label count in the C-step and the
            push (the authors' Main.py; DeepHash-pytorch: no).
    """

    hyperparameters = (
        "margin",
        "push",
        "quantization_weight",
        "inter_weight",
        "center_quantization_weight",
        "normalize_labels",
    )

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        margin: float = 3.0,
        push: float = 0.1,
        quantization_weight: float = 0.5,
        inter_weight: float = 1.0,
        center_quantization_weight: float = 1.0,
        normalize_labels: bool = False,
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        self.margin = float(margin)
        self.push = float(push)
        self.quantization_weight = float(quantization_weight)
        self.inter_weight = float(inter_weight)
        self.center_quantization_weight = float(center_quantization_weight)
        self.normalize_labels = bool(normalize_labels)

    def terms(self, codes, labels, refs):
        # The self pair counts, as with the authors' bank (module doc): no anchor_offset.
        metric, quantization, _ = dfh_terms(
            codes,
            labels,
            refs.codes,
            refs.labels,
            margin=self.margin,
            push=self.push,
            inter_weight=self.inter_weight,
            center_quantization_weight=self.center_quantization_weight,
            normalize_labels=self.normalize_labels,
            num_classes=self.num_classes,
        )
        loss = metric + self.quantization_weight * quantization
        return {"loss": loss, "metric": metric, "quantization": quantization}
