"""DPN loss: a bit-wise hinge ("polarization") towards a fixed random +-1 target per class.

Deep Polarized Network pushes every output channel away from zero, towards the sign of
its class's target vector. With u the model's real-valued output (K), T the (C, K) +-1
class targets and y_i the example's 0/1 label row:

    polarization_i   = sum_{c: y_ic = 1} sum_k max(m - u_ik T_ck, 0)      ("per_class")
                     = sum_k max(m - u_ik t_ik, 0)                        ("combined")
    regularization_i = mean_k u_ik^2
    loss_i           = w * polarization_i + reg * regularization_i

with margin m = 1 (`margin`), w = 1 (`polarization_weight`) and reg = 0
(`regularization_weight`). For a single-label row both multi-label rules give the hinge
against that class's target. "combined" (DeepHash-pytorch, CSQ's rule) uses one target
t_i = sign(sum_{c: y_ic = 1} T_c), with the bits where the sum is 0 taken from a fixed
random +-1 vector (`tie_target`); "per_class" (the authors' code) sums the hinge over
each of the example's classes. Rows without any label contribute 0 to the polarization
term. Every term is per example: no reference set is needed (the references are checked
and otherwise unused).

Targets (C x K, +-1), a function of (C, K, target_method, target_probability, seed),
drawn with numpy's generator seeded by `seed`:
    * "bernoulli" (default): every bit is -1 with probability p (0.5), independently; the
      authors' default (sign of a standard normal: p = 0.5);
    * "balanced": exactly floor(p K) bits -1 per class, at random positions
      (DeepHash-pytorch's get_target_vectors).
The tie vector is drawn from the same generator (each bit +-1 with probability 0.5).

Scales. The authors (kamwoh/DPN, scripts/train_hashing.py calculate_loss) sum the hinge
over the K bits and average over the batch: w = 1. DeepHash-pytorch's DPN.py averages
over the B x K entries: w = 1 / K. The authors' optional regulariser is
reg * mean over B x K of u^2 (--reg, 0 by default, 0.001 suggested in their README).

Departures from the authors' code (kamwoh/DPN) and DeepHash-pytorch DPN.py:
    * targets come from numpy's generator seeded by `seed` (the authors draw them with
      torch's global generator, DeepHash-pytorch with Python's `random`), so the same
      (C, K, seed) always gives the same targets and a resumed run keeps them (they are
      non-trainable weights of the layer, saved in the checkpoint);
    * the authors' "optimised" targets (--centroid-method O: rejection sampling of
      well-separated codes), their optional cross-entropy head (--ce, 0 by default), the
      adaptive target update (-A, DeepHash-pytorch and --centroid-update-time) and the
      ternary assignment at evaluation (-T) are not implemented;
    * at an exact kink (u t = m) the hinge's gradient is 0 (torch.relu, the authors');
      DeepHash-pytorch's clamp(0) passes 1 there;
    * "combined" rows without labels get 0 here (DeepHash-pytorch gives them the random
      tie vector as target).

Reference:
    Fan, Ng, Ju, Zhang and Chan, "Deep Polarized Network for Supervised Learning of
    Accurate Binary Hashing Codes", IJCAI 2020.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from wsdhash.losses import references
from wsdhash.losses.base import HashingLoss
from wsdhash.losses.csq import example_centers

TARGET_METHODS = ("bernoulli", "balanced")
MULTI_LABEL_RULES = ("per_class", "combined")


def generate_targets(
    num_classes: int, bits: int, method: str = "bernoulli", probability: float = 0.5, seed: int = 0
):
    """(C, K) float32 +-1 class targets and the (K,) tie vector (module doc)."""
    if method not in TARGET_METHODS:
        raise ValueError(f"Unknown target method {method!r}; known: {', '.join(TARGET_METHODS)}.")
    if num_classes < 1 or bits < 1:
        raise ValueError(f"num_classes and bits must be >= 1; got {num_classes}, {bits}.")
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"target_probability must be in [0, 1]; got {probability}.")
    rng = np.random.default_rng(seed)
    if method == "bernoulli":
        targets = np.where(rng.random((num_classes, bits)) < probability, -1.0, 1.0)
    else:
        targets = np.ones((num_classes, bits))
        for row in targets:
            row[rng.permutation(bits)[: int(bits * probability)]] = -1.0
    tie = np.where(rng.random(bits) < 0.5, -1.0, 1.0)
    return targets.astype(np.float32), tie.astype(np.float32)


def dpn_terms(
    codes, labels, targets, tie_target, margin: float = 1.0, multi_label: str = "per_class"
):
    """DPN's per-example terms (module doc), unweighted.

    Args:
        codes: (B, K) real-valued outputs u.
        labels: (B, C) labels or (B,) class ids.
        targets: (C, K) +-1 class targets.
        tie_target: (K,) +-1 bits for "combined" ties.
        margin: m.
        multi_label: "per_class" or "combined".

    Returns:
        (polarization (B,), regularization (B,)) float32.
    """
    if multi_label not in MULTI_LABEL_RULES:
        raise ValueError(
            f"Unknown multi_label rule {multi_label!r}; known: {', '.join(MULTI_LABEL_RULES)}."
        )
    u = tf.cast(tf.convert_to_tensor(codes), tf.float32)
    targets = tf.cast(targets, tf.float32)
    y = references.positive_labels(labels, tf.shape(targets)[0])
    if multi_label == "per_class":
        hinge = tf.nn.relu(margin - u[:, None, :] * targets[None, :, :])  # (B, C, K)
        polarization = tf.reduce_sum(tf.reduce_sum(hinge, axis=2) * y, axis=1)
    else:
        t, labelled = example_centers(y, targets, tie_target)
        polarization = tf.reduce_sum(tf.nn.relu(margin - u * t), axis=1)
        polarization = tf.where(labelled, polarization, 0.0)
    regularization = tf.reduce_mean(tf.square(u), axis=1)
    return polarization, regularization


class DPNLoss(HashingLoss):
    """DPN loss layer; owns the fixed (C, K) targets and the (K,) tie vector as
    non-trainable weights, rebuilt identically from (C, K, target_method,
    target_probability, seed).

    `call` returns {"loss", "polarization", "regularization"}, each (B,), with
    loss = polarization_weight * polarization + regularization_weight * regularization.

    Args:
        bits: K.
        num_classes: C.
        seed: seeds the targets and the tie vector.
        margin: m (1, the authors' and DeepHash-pytorch's).
        polarization_weight: w on the hinge summed over bits (1, the authors'; 1 / K is
            DeepHash-pytorch's mean over bits).
        regularization_weight: on mean_k u^2 (0, the authors' default --reg).
        target_method: "bernoulli" (authors) or "balanced" (DeepHash-pytorch).
        target_probability: p, the probability (or fraction) of -1 bits (0.5).
        multi_label: "per_class" (authors) or "combined" (DeepHash-pytorch).
    """

    hyperparameters = (
        "margin",
        "polarization_weight",
        "regularization_weight",
        "target_method",
        "target_probability",
        "multi_label",
    )

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        margin: float = 1.0,
        polarization_weight: float = 1.0,
        regularization_weight: float = 0.0,
        target_method: str = "bernoulli",
        target_probability: float = 0.5,
        multi_label: str = "per_class",
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        if multi_label not in MULTI_LABEL_RULES:
            raise ValueError(f"Unknown multi_label rule {multi_label!r}.")
        self.margin = float(margin)
        self.polarization_weight = float(polarization_weight)
        self.regularization_weight = float(regularization_weight)
        self.target_method = target_method
        self.target_probability = float(target_probability)
        self.multi_label = multi_label
        targets, tie = generate_targets(
            self.num_classes, self.bits, target_method, self.target_probability, self.seed
        )
        self.targets = self.add_weight(
            name="targets",
            shape=(self.num_classes, self.bits),
            initializer=keras.initializers.Zeros(),
            trainable=False,
        )
        self.targets.assign(targets)
        self.tie_target = self.add_weight(
            name="tie_target",
            shape=(self.bits,),
            initializer=keras.initializers.Zeros(),
            trainable=False,
        )
        self.tie_target.assign(tie)

    def terms(self, codes, labels, refs):
        del refs  # every DPN term is per example
        polarization, regularization = dpn_terms(
            codes,
            labels,
            tf.convert_to_tensor(self.targets),
            tf.convert_to_tensor(self.tie_target),
            self.margin,
            self.multi_label,
        )
        loss = self.polarization_weight * polarization + self.regularization_weight * regularization
        return {"loss": loss, "polarization": polarization, "regularization": regularization}
