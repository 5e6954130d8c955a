"""HashNet loss: weighted pairwise likelihood on tanh(beta z) codes, beta by continuation.

With z the model's output (K) and beta the continuation scale, u = tanh(beta z) and
theta_ij = alpha u_i . u_j (alpha = 10 / K by default, the authors' `sigmoid_param`).
Per pair: l_ij = log(1 + exp(theta_ij)) - s_ij theta_ij (softplus, stable), s_ij = 1 when
the label rows share at least one label. Over the pairs P of the reference set (R rows,
the global batch; the anchor's own row excluded unless `include_self`), split into
similar P1 and dissimilar P0 pairs, the batch loss is

    balanced (`class_num` <= 0, the default; the paper's weights w = |P|/|P1| or |P|/|P0|):
        L = sum_{P1} l / |P1| + sum_{P0} l / |P0|
    fixed positive weight c = `class_num` > 0 (the authors' released code):
        L = (c sum_{P1} l + sum_{P0} l) / (c |P1| + |P0|)

and the per-anchor value is R times the anchor's share of those sums (its row of pairs
with the normalisers counted over all R x R reference pairs), so the mean over the R
anchors is L. An empty P1 or P0 gives 0 for its half.

beta starts at 1 and follows the authors' schedule beta = (1 + 0.005 t)^0.5, refreshed
every 200 training steps (their ScaleTanh layer and AlexNetFc: `step_size` 200,
`gamma` 0.005, `power` 0.5; forward pass t = 200, 400, ... sets it). It is a
non-trainable variable of this layer (`scale`), assigned by the method after each step
(`HashNet.after_step`), so it is saved in every checkpoint and a resumed run continues
the schedule exactly; `scale_at(step)` is the value the step-th forward pass uses.

Departures from the authors' code (thuml/HashNet: caffe PairwiseLoss layer, the
pytorch release's loss.pairwise_loss and network.py; DeepHash-pytorch HashNet.py):
    * pairs: the authors compare two independently drawn batches (so no self pairs);
      wsdhash compares the anchors with every other row of the global batch.
      `include_self=True` adds the self pairs as DeepHash-pytorch's u @ u.T does;
    * the authors use log(1 + exp(theta)) - s theta below theta = 15 and (1 - s) theta
      above (l_threshold); wsdhash uses softplus throughout (differs by < 3.1e-7 there);
    * the caffe configs set `continous_similarity: true`, which rescales the backward
      pass of multi-label pairs by a label-overlap factor that the forward loss does not
      show; it is not implemented (the pytorch release has none);
    * DeepHash-pytorch raises beta per epoch ((epoch // 20 + 1)^0.5); wsdhash follows the
      authors' per-step schedule (`step_size`, `gamma`, `power` options).

Reference:
    Cao, Long, Wang and Yu, "HashNet: Deep Learning to Hash by Continuation", ICCV 2017.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from wsdhash.losses import references
from wsdhash.losses.base import HashingLoss


def scale_at(step: int, step_size: int = 200, gamma: float = 0.005, power: float = 0.5) -> float:
    """beta used by the step-th training forward pass (1-based), as the authors' layer:
    refreshed to (1 + gamma t)^power when t is a multiple of step_size."""
    last = (int(step) // int(step_size)) * int(step_size)
    return math.pow(1.0 + gamma * last, power)


def hashnet_terms(
    codes,
    labels,
    ref_codes=None,
    ref_labels=None,
    anchor_offset=0,
    *,
    scale=1.0,
    alpha=None,
    class_num=0.0,
    include_self=False,
    num_classes=None,
):
    """HashNet's per-anchor pair loss (module doc).

    Args:
        codes: (B, K) model outputs z of the anchors.
        labels: (B, C) labels or (B,) class ids.
        ref_codes, ref_labels: the references (R rows); default the anchors.
        anchor_offset: row of the first anchor inside the references.
        scale: beta (float or scalar tensor).
        alpha: theta scale; None: 10 / K.
        class_num: <= 0 balanced weights; > 0 the fixed positive weight.
        include_self: whether the anchor's own row is a pair.
        num_classes: C for class ids.

    Returns:
        (B,) float32.
    """
    z, y, ref_z, ref_y = references.resolve(codes, labels, ref_codes, ref_labels, num_classes)
    bits = z.shape[-1]
    alpha = 10.0 / bits if alpha is None else float(alpha)
    scale = tf.cast(scale, tf.float32)
    u, ref_u = tf.tanh(scale * z), tf.tanh(scale * ref_z)
    theta = alpha * tf.matmul(u, ref_u, transpose_b=True)  # (B, R)
    s = references.pair_similarity(y, ref_y)
    pair = tf.nn.softplus(theta) - s * theta
    valid, num_pos, num_neg = references.counted_pairs(s, ref_y, anchor_offset, include_self)
    pos_sum = tf.reduce_sum(pair * s * valid, axis=1)
    neg_sum = tf.reduce_sum(pair * (1.0 - s) * valid, axis=1)
    refs = tf.cast(tf.shape(ref_z)[0], tf.float32)
    if class_num > 0:
        total = tf.math.divide_no_nan(class_num * pos_sum + neg_sum, class_num * num_pos + num_neg)
    else:
        total = tf.math.divide_no_nan(pos_sum, num_pos) + tf.math.divide_no_nan(neg_sum, num_neg)
    return refs * total


class HashNetLoss(HashingLoss):
    """HashNet loss layer; owns the non-trainable continuation scale beta (`scale`).

    `call` returns {"loss", "scale"}, each (B,): the loss and beta (for the logs).

    Args:
        bits: K.
        num_classes: C.
        seed: unused.
        alpha: theta scale; 0 means 10 / K (the authors' sigmoid_param).
        class_num: 0 = balanced |P|/|P1|, |P|/|P0| weights (paper); > 0 = the authors'
            fixed weight of similar pairs (their configs: ImageNet 100, NUS-WIDE 5, COCO 1).
        include_self: count each anchor's pair with itself (DeepHash-pytorch).
        step_size, gamma, power: the beta schedule (200, 0.005, 0.5).
    """

    hyperparameters = ("alpha", "class_num", "include_self", "step_size", "gamma", "power")

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        alpha: float = 0.0,
        class_num: float = 0.0,
        include_self: bool = False,
        step_size: int = 200,
        gamma: float = 0.005,
        power: float = 0.5,
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        self.alpha = float(alpha)
        self.class_num = float(class_num)
        self.include_self = bool(include_self)
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        self.power = float(power)
        if self.step_size < 1:
            raise ValueError(f"step_size must be >= 1; got {step_size}.")
        self.scale = self.add_weight(
            name="scale", shape=(), trainable=False, initializer=keras.initializers.Ones()
        )

    def scale_at(self, step: int) -> float:
        """beta of the step-th training forward pass (1-based)."""
        return scale_at(step, self.step_size, self.gamma, self.power)

    def terms(self, codes, labels, refs):
        loss = hashnet_terms(
            codes,
            labels,
            refs.codes,
            refs.labels,
            refs.anchor_offset,
            scale=tf.convert_to_tensor(self.scale),
            alpha=self.alpha or None,
            class_num=self.class_num,
            include_self=self.include_self,
            num_classes=self.num_classes,
        )
        return {"loss": loss, "scale": tf.fill(tf.shape(loss), tf.convert_to_tensor(self.scale))}
