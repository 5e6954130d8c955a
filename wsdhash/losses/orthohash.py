"""OrthoHash loss: cross-entropy on cosine similarities to a fixed +-1 class codebook.

Per example i with relaxed code v_i (K) and codebook O (C, K):

    u_ic = cos(v_i, o_c)                                   (= v.o_c / (||v|| sqrt K) for +-1)
    z_ic = s * (u_ic - m * y_ic)                           margin type "cos" (CosFace)
    z_ic = s * cos(arccos(clip(u_ic, +-0.99999)) + m * y_ic)   margin type "arc" (ArcFace)
    ce_i = -log softmax(z_i)[t_i]                          single-label, t_i = first positive
    ce_i = -sum_c (y_ic / sum_c' y_ic') log softmax(z_i)_c  multi-label label smoothing
    quantization_i = 1 - cos(v_i, sign(v_i))               "cs", sign taken as constant
    loss_i = ce_weight * ce_i + quantization_weight * quantization_i

Every term is per example with no batch-level normaliser, so the mean over any batch is
the published loss and no reference set is needed (the layer accepts and ignores one so
that all loss layers share one call signature).

Departures from the original code:
    * rows with no positive label contribute 0 to the cross-entropy (the original takes
      class 0 for single-label and divides by zero, NaN, for label smoothing);
    * sign(v) uses v >= 0 -> +1 (torch.sign maps 0 to 0);
    * the default scale is sqrt(K) as in the paper (the code fixes s = 8 = sqrt(64));
    * multi-label "bce" is per example the mean over classes of the binary cross-entropy
      (same batch mean as the original); the "imbalance" variant is not implemented.

Reference:
    Hoe et al., "One Loss for All: Deep Hashing with a Single Cosine Similarity based
    Learning Objective", NeurIPS 2021.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from wsdhash.losses import orthohash_targets
from wsdhash.losses.base import HashingLoss

MARGIN_TYPES = ("cos", "arc")
MULTICLASS_LOSSES = ("label_smoothing", "bce")
QUANTIZATION_TYPES = ("cs", "l1", "l2")

# The original clamps cosines before arccos so that the gradient stays finite.
_ARC_CLIP = 0.99999
# torch.nn.functional.normalize divides by max(||x||, 1e-12).
_NORMALIZE_EPSILON = 1e-24


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; known: {', '.join(choices)}.")


def _binary_sign(x: tf.Tensor) -> tf.Tensor:
    """+1 where x >= 0, else -1 (never 0), with no gradient."""
    return tf.stop_gradient(tf.where(x >= 0, 1.0, -1.0))


def _default_scale(codes: tf.Tensor) -> float | tf.Tensor:
    """s = sqrt(K), the paper's default."""
    bits = codes.shape[-1]
    if bits is not None:
        return math.sqrt(bits)
    return tf.sqrt(tf.cast(tf.shape(codes)[-1], tf.float32))


def cosine_logits(codes: tf.Tensor, codebook: tf.Tensor) -> tf.Tensor:
    """Cosine similarity of each code to each class target.

    Args:
        codes: (B, K) relaxed codes.
        codebook: (C, K) class targets (+-1 for OrthoHash).

    Returns:
        (B, C) float32 cosines u.
    """
    codes = tf.math.l2_normalize(tf.cast(codes, tf.float32), axis=1, epsilon=_NORMALIZE_EPSILON)
    codebook = tf.math.l2_normalize(
        tf.cast(codebook, tf.float32), axis=1, epsilon=_NORMALIZE_EPSILON
    )
    return tf.matmul(codes, codebook, transpose_b=True)


def margin_logits(
    cosines: tf.Tensor,
    margin_mask: tf.Tensor,
    scale: float,
    margin: float,
    margin_type: str = "cos",
) -> tf.Tensor:
    """Applies the additive cosine (CosFace) or angular (ArcFace) margin, then the scale.

    Args:
        cosines: (B, C) cosines u.
        margin_mask: (B, C) float, 1 where the margin applies (the target classes).
        scale: s.
        margin: m.
        margin_type: "cos" or "arc".

    Returns:
        (B, C) float32 logits z.
    """
    _check_choice("margin_type", margin_type, MARGIN_TYPES)
    if margin_type == "cos":
        return scale * (cosines - margin * margin_mask)
    angles = tf.acos(tf.clip_by_value(cosines, -_ARC_CLIP, _ARC_CLIP))
    return scale * tf.cos(angles + margin * margin_mask)


def orthohash_cross_entropy(
    codes: tf.Tensor,
    labels: tf.Tensor,
    codebook: tf.Tensor,
    scale: float | None = None,
    margin: float = 0.2,
    margin_type: str = "cos",
    multiclass: bool = False,
    multiclass_loss: str = "label_smoothing",
) -> tf.Tensor:
    """OrthoHash margin cross-entropy per example.

    Args:
        codes: (B, K) relaxed codes.
        labels: (B, C) one-hot or multi-hot labels; "positive" is > 0.
        codebook: (C, K) fixed class targets.
        scale: s; None uses sqrt(K).
        margin: m.
        margin_type: "cos" or "arc".
        multiclass: False -> single-label CE on the first positive class (the original's
            argmax); True -> multi-label loss with the margin on all positives.
        multiclass_loss: "label_smoothing" (uniform target over positives) or "bce".

    Returns:
        (B,) float32; 0 for rows without positives except under "bce".
    """
    _check_choice("multiclass_loss", multiclass_loss, MULTICLASS_LOSSES)
    cosines = cosine_logits(codes, codebook)  # (B, C)
    if scale is None:
        scale = _default_scale(codes)
    positive = tf.cast(tf.cast(labels, tf.float32) > 0, tf.float32)  # (B, C)
    num_positive = tf.reduce_sum(positive, axis=1)  # (B,)
    if multiclass:
        logits = margin_logits(cosines, positive, scale, margin, margin_type)
        if multiclass_loss == "bce":
            bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=positive, logits=logits)
            return tf.reduce_mean(bce, axis=1)
        target = tf.math.divide_no_nan(positive, num_positive[:, None])  # (B, C)
        return -tf.reduce_sum(target * tf.nn.log_softmax(logits, axis=1), axis=1)
    num_classes = tf.shape(positive)[1]
    target = tf.one_hot(tf.argmax(positive, axis=1), num_classes, dtype=tf.float32)  # (B, C)
    target *= tf.cast(num_positive > 0, tf.float32)[:, None]
    logits = margin_logits(cosines, target, scale, margin, margin_type)
    return -tf.reduce_sum(target * tf.nn.log_softmax(logits, axis=1), axis=1)


def quantization_error(codes: tf.Tensor, quantization_type: str = "cs") -> tf.Tensor:
    """Distance of each relaxed code to its own binarised code, held constant.

    Args:
        codes: (B, K) relaxed codes.
        quantization_type: "cs" (1 - cosine), "l1" or "l2" (mean over bits of the
            absolute or squared difference; the original averages over B*K elements, so
            the batch mean is the same).

    Returns:
        (B,) float32.
    """
    _check_choice("quantization_type", quantization_type, QUANTIZATION_TYPES)
    codes = tf.cast(codes, tf.float32)
    signs = _binary_sign(codes)
    if quantization_type == "cs":
        unit = tf.math.l2_normalize(codes, axis=1, epsilon=_NORMALIZE_EPSILON)
        unit_signs = tf.math.l2_normalize(signs, axis=1, epsilon=_NORMALIZE_EPSILON)
        return 1.0 - tf.reduce_sum(unit * unit_signs, axis=1)
    if quantization_type == "l1":
        return tf.reduce_mean(tf.abs(codes - signs), axis=1)
    return tf.reduce_mean(tf.square(codes - signs), axis=1)


def orthohash_loss(
    codes: tf.Tensor,
    labels: tf.Tensor,
    codebook: tf.Tensor,
    scale: float | None = None,
    margin: float = 0.2,
    margin_type: str = "cos",
    multiclass: bool = False,
    multiclass_loss: str = "label_smoothing",
    ce_weight: float = 1.0,
    quantization_weight: float = 0.0,
    quantization_type: str = "cs",
) -> tf.Tensor:
    """Total OrthoHash loss per example: ce_weight * CE + quantization_weight * quantization.

    Args:
        codes: (B, K) relaxed codes.
        labels: (B, C) one-hot or multi-hot labels.
        codebook: (C, K) fixed class targets.
        scale, margin, margin_type, multiclass, multiclass_loss: see
            `orthohash_cross_entropy`.
        ce_weight: weight of the cross-entropy (the original's `--ce`, 1).
        quantization_weight: weight of the quantization term (`--quan`, 0 = off).
        quantization_type: "cs", "l1" or "l2".

    Returns:
        (B,) float32.
    """
    total = ce_weight * orthohash_cross_entropy(
        codes, labels, codebook, scale, margin, margin_type, multiclass, multiclass_loss
    )
    if quantization_weight != 0:
        total += quantization_weight * quantization_error(codes, quantization_type)
    return total


@dataclasses.dataclass(frozen=True)
class OrthoHashSettings:
    """OrthoHash's hyperparameters, checked and stored once for the layer and the
    stateless Keras loss (see `orthohash_loss` for their meaning)."""

    scale: float | None = None
    margin: float = 0.2
    margin_type: str = "cos"
    multiclass: bool = False
    multiclass_loss: str = "label_smoothing"
    ce_weight: float = 1.0
    quantization_weight: float = 0.0
    quantization_type: str = "cs"

    def __post_init__(self):
        _check_choice("margin_type", self.margin_type, MARGIN_TYPES)
        _check_choice("multiclass_loss", self.multiclass_loss, MULTICLASS_LOSSES)
        _check_choice("quantization_type", self.quantization_type, QUANTIZATION_TYPES)
        typed = {
            "scale": None if self.scale is None else float(self.scale),
            "margin": float(self.margin),
            "multiclass": bool(self.multiclass),
            "ce_weight": float(self.ce_weight),
            "quantization_weight": float(self.quantization_weight),
        }
        for name, value in typed.items():
            object.__setattr__(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def cross_entropy_arguments(self) -> dict[str, Any]:
        """The keyword arguments of `orthohash_cross_entropy`."""
        names = ("scale", "margin", "margin_type", "multiclass", "multiclass_loss")
        return {name: getattr(self, name) for name in names}

    def expose_on(self, owner) -> None:
        """Sets each hyperparameter as an attribute of `owner` (layer.margin, ...)."""
        for name, value in self.as_dict().items():
            setattr(owner, name, value)


class OrthoHashLoss(HashingLoss):
    """OrthoHash loss layer; owns the fixed (C, K) +-1 codebook as a non-trainable weight.

    `call` returns {"loss", "ce", "quantization"}, each (B,), with
    loss = ce_weight * ce + quantization_weight * quantization (terms unweighted, as the
    original logs them).

    Args:
        bits: K.
        num_classes: C.
        seed: seeds the codebook generation.
        codebook_method: "B" (Bernoulli, the original default), "N" or "O" (MaxHD).
        codebook: optional explicit (C, K) +-1 codebook; overrides the method and seed.
        scale: s; None = sqrt(K) (the paper; the original code fixes 8).
        margin: m (0.2 in the original).
        margin_type: "cos" or "arc".
        multiclass: multi-label loss (True) or single-label CE (False).
        multiclass_loss: "label_smoothing" or "bce".
        ce_weight: weight of the cross-entropy.
        quantization_weight: weight of the quantization term (0 = off, the default).
        quantization_type: "cs", "l1" or "l2".

    Reference:
        Hoe et al., "One Loss for All: Deep Hashing with a Single Cosine Similarity based
        Learning Objective", NeurIPS 2021.
    """

    hyperparameters = ("codebook_method", "codebook", *OrthoHashSettings.__dataclass_fields__)
    config_attributes = {"codebook": "explicit_codebook"}

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        codebook_method: str = "B",
        codebook: np.ndarray | list | None = None,
        scale: float | None = None,
        margin: float = 0.2,
        margin_type: str = "cos",
        multiclass: bool = False,
        multiclass_loss: str = "label_smoothing",
        ce_weight: float = 1.0,
        quantization_weight: float = 0.0,
        quantization_type: str = "cs",
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        _check_choice("codebook_method", codebook_method, orthohash_targets.CODEBOOK_METHODS)
        self.settings = OrthoHashSettings(
            scale,
            margin,
            margin_type,
            multiclass,
            multiclass_loss,
            ce_weight,
            quantization_weight,
            quantization_type,
        )
        self.settings.expose_on(self)
        self.codebook_method = codebook_method
        self.explicit_codebook = (
            None if codebook is None else _checked_codebook(codebook, self.num_classes, self.bits)
        )

        values = self.explicit_codebook
        if values is None:
            values = orthohash_targets.generate_codebook(
                self.num_classes, self.bits, self.codebook_method, self.seed
            )
        self.codebook = self.add_weight(
            name="codebook",
            shape=(self.num_classes, self.bits),
            initializer=keras.initializers.Zeros(),
            trainable=False,
        )
        self.codebook.assign(values)

    def logits(self, codes: tf.Tensor) -> tf.Tensor:
        """(B, K) codes -> (B, C) cosines to the class targets (no margin, no scale)."""
        return cosine_logits(codes, tf.convert_to_tensor(self.codebook))

    def terms(self, codes, labels, refs) -> dict[str, tf.Tensor]:
        del refs  # every OrthoHash term is per example
        ce = orthohash_cross_entropy(
            codes,
            labels,
            tf.convert_to_tensor(self.codebook),
            **self.settings.cross_entropy_arguments(),
        )
        quantization = quantization_error(codes, self.quantization_type)
        loss = self.ce_weight * ce
        if self.quantization_weight != 0:
            loss += self.quantization_weight * quantization
        return {"loss": loss, "ce": ce, "quantization": quantization}


def _checked_codebook(codebook: Any, num_classes: int, bits: int) -> np.ndarray:
    values = np.asarray(codebook, dtype=np.float32)
    if values.shape != (num_classes, bits):
        raise ValueError(
            f"codebook must have shape (num_classes, bits) = {(num_classes, bits)}; "
            f"got {values.shape}."
        )
    if not np.all(np.abs(values) == 1):
        raise ValueError("codebook must hold +1 and -1 only.")
    return values


class OrthoHashCodebookLoss(keras.losses.Loss):
    """Stateless Keras loss for OrthoHash given its codebook: y_true labels, y_pred codes.

    Returns (B,) values (reduction=None by default), the total of `orthohash_loss`.

    Args:
        codebook: (C, K) +-1 class targets.
        scale, margin, margin_type, multiclass, multiclass_loss, ce_weight,
            quantization_weight, quantization_type: see `OrthoHashLoss`.
        reduction: Keras reduction; None keeps one value per example.
        name: loss name.
    """

    def __init__(
        self,
        codebook: np.ndarray | list,
        scale: float | None = None,
        margin: float = 0.2,
        margin_type: str = "cos",
        multiclass: bool = False,
        multiclass_loss: str = "label_smoothing",
        ce_weight: float = 1.0,
        quantization_weight: float = 0.0,
        quantization_type: str = "cs",
        reduction: str | None = None,
        name: str = "orthohash",
        dtype: str | None = "float32",
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        values = np.asarray(codebook, dtype=np.float32)
        if values.ndim != 2:
            raise ValueError(f"codebook must be (C, K); got shape {values.shape}.")
        self.codebook = _checked_codebook(values, *values.shape)
        self.settings = OrthoHashSettings(
            scale,
            margin,
            margin_type,
            multiclass,
            multiclass_loss,
            ce_weight,
            quantization_weight,
            quantization_type,
        )
        self.settings.expose_on(self)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        return orthohash_loss(y_pred, y_true, tf.constant(self.codebook), **self.settings.as_dict())

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(codebook=self.codebook.tolist(), **self.settings.as_dict())
        return config
