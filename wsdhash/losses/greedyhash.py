"""GreedyHash loss: a classifier on sign codes with a straight-through gradient, plus a
cubic penalty pulling the relaxed code towards +-1.

With h_i the model's output (K), b_i = sign(h_i) (+1 where h >= 0) and W the (K, C)
classification weights of this layer (no bias, trained with the network):

    forward:   b = sign(h)                 backward:   dL/dh = dL/db   (straight through)
    logits_i       = b_i W
    classification_i = -sum_c (y_ic / sum_c' y_ic') log softmax(logits_i)_c      (default)
                     = -log softmax(logits_i)[t_i]   for a one-hot row (the authors' CE)
    classification_i = mean_c BCE(sigmoid(logits_ic), y_ic)                  (multiclass=True)
    penalty_i        = mean_k | |h_ik| - 1 |^3
    loss_i           = classification_i + alpha * penalty_i

alpha = 0.1 (`alpha`; the authors' CIFAR-10 scripts and DeepHash-pytorch; 1 for
ImageNet in both). W starts as PyTorch's default for Linear(K, C): U(-1/sqrt K, 1/sqrt K).
Every term is per example (the authors' CrossEntropyLoss and penalty average over the
batch, and over B x K entries), so the mean over any batch is the authors' loss and no
reference set is needed (the references are checked and otherwise unused).

Departures from the authors' code (ssppp/GreedyHash cifar1.py / imagenet.py and
DeepHash-pytorch GreedyHash.py):
    * sign(0) = +1, as wsdhash.eval.binarize (torch.sign gives 0, a third value);
    * multi-label data: the authors' code is single-label only (DeepHash-pytorch takes the
      argmax, i.e. the first label, of a multi-hot row). wsdhash's default softmax loss uses
      the normalised label row as the target, which is the authors' CE for one-hot rows;
      `multiclass=True` uses a sigmoid binary cross-entropy per class instead (mean over
      classes), the usual multi-label classifier. Rows without any label contribute 0 to
      the softmax loss (the authors' argmax would pick class 0); under `multiclass=True`
      they are all-negative targets;
    * the authors keep W in the network (an nn.Linear after the hash layer); here it is a
      variable of the loss layer, trained by the same optimiser at the head's rate.

Reference:
    Su et al., "Greedy Hash: Towards Fast Optimization for Accurate Hash Coding in CNN",
    NeurIPS 2018.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from wsdhash.losses import references
from wsdhash.losses.base import HashingLoss


@tf.custom_gradient
def straight_through_sign(h: tf.Tensor):
    """+1 where h >= 0, else -1, with the gradient passed through unchanged."""
    signs = tf.where(h >= 0, tf.ones_like(h), -tf.ones_like(h))

    def grad(upstream):
        return upstream

    return signs, grad


def classification_loss(logits: tf.Tensor, labels: tf.Tensor, multiclass: bool = False):
    """(B,) classification term on (B, C) logits (module doc)."""
    logits = tf.cast(logits, tf.float32)
    positive = references.positive_labels(labels, tf.shape(logits)[1])
    if multiclass:
        bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=positive, logits=logits)
        return tf.reduce_mean(bce, axis=1)
    count = tf.reduce_sum(positive, axis=1, keepdims=True)
    target = tf.math.divide_no_nan(positive, count)
    return -tf.reduce_sum(target * tf.nn.log_softmax(logits, axis=1), axis=1)


def cubic_penalty(codes: tf.Tensor) -> tf.Tensor:
    """(B,) mean_k | |h_k| - 1 |^3."""
    codes = tf.cast(codes, tf.float32)
    return tf.reduce_mean(tf.abs(tf.abs(codes) - 1.0) ** 3, axis=1)


def greedyhash_terms(codes, labels, weights, multiclass: bool = False):
    """(classification (B,), penalty (B,)) for relaxed codes h and (K, C) weights."""
    codes = tf.cast(codes, tf.float32)
    logits = tf.matmul(straight_through_sign(codes), tf.cast(weights, tf.float32))
    return classification_loss(logits, labels, multiclass), cubic_penalty(codes)


class GreedyHashLoss(HashingLoss):
    """GreedyHash loss layer; owns the trainable (K, C) classification weights.

    `call` returns {"loss", "classification", "penalty"}, each (B,), with
    loss = classification + alpha * penalty (terms unweighted).

    Args:
        bits: K.
        num_classes: C.
        seed: seeds the classification weights' initialisation.
        alpha: weight of the cubic penalty (0.1; the authors use 1 on ImageNet).
        multiclass: sigmoid BCE per class (True) or softmax CE (False, the authors').

    Reference:
        Su et al., "Greedy Hash: Towards Fast Optimization for Accurate Hash Coding in
        CNN", NeurIPS 2018.
    """

    hyperparameters = ("alpha", "multiclass")

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        alpha: float = 0.1,
        multiclass: bool = False,
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        self.alpha = float(alpha)
        self.multiclass = bool(multiclass)
        bound = 1.0 / math.sqrt(self.bits)  # PyTorch's nn.Linear default, fan_in = K
        self.classifier = self.add_weight(
            name="classifier",
            shape=(self.bits, self.num_classes),
            initializer=keras.initializers.RandomUniform(-bound, bound, seed=self.seed),
            trainable=True,
        )

    def logits(self, codes: tf.Tensor) -> tf.Tensor:
        """(B, K) relaxed codes -> (B, C) class logits of their sign codes."""
        codes = tf.cast(codes, tf.float32)
        return tf.matmul(straight_through_sign(codes), tf.convert_to_tensor(self.classifier))

    def terms(self, codes, labels, refs) -> dict[str, tf.Tensor]:
        del refs  # every GreedyHash term is per example
        classification, penalty = greedyhash_terms(
            codes, labels, tf.convert_to_tensor(self.classifier), self.multiclass
        )
        loss = classification + self.alpha * penalty
        return {"loss": loss, "classification": classification, "penalty": penalty}
