"""CSQ loss: binary cross-entropy of each code bit against a fixed hash centre.

Central Similarity Quantization pulls every relaxed code towards the hash centre of its
labels. With z_i the model's output (K), u_i = tanh(z_i) and c_i in {-1, +1}^K the
example's centre:

    center_i       = mean_k BCE((u_ik + 1) / 2, (c_ik + 1) / 2)
                   = mean_k softplus(-2 z_ik c_ik)        (since (tanh z + 1) / 2 = sigmoid 2z)
    quantization_i = mean_k (|u_ik| - 1)^2
    loss_i         = center_i + lambda * quantization_i   (lambda = 1e-4, `quantization_weight`)

Both terms are means over the K bits of one example, so the mean over any batch is the
authors' batch loss (their BCELoss and quantization average over B x K entries); no
reference set is needed (the references are checked and otherwise unused).

Hash centres (C x K, +-1), a function of (C, K, method, seed):

    * "auto" (default): when K is a power of 2 and C <= 2K, the rows of [H_K; -H_K], H_K
      the Sylvester Hadamard matrix (scipy.linalg.hadamard): any two distinct centres are
      K/2 apart, except a row and its negation (K apart). Otherwise random centres.
    * "random": random centres, each with exactly floor(K/2) bits -1 at random positions
      (what the authors' code draws; the paper calls them Bernoulli centres). Up to 20
      sets are drawn from numpy's generator seeded by `seed`; the first whose minimum
      pairwise Hamming distance exceeds K/4 and whose mean reaches K/2 is kept, else the
      set with the largest minimum distance (then mean).

Centre of an example with label row y (multi-hot, or one-hot, or a class id):
    c_i = sign(sum_{c: y_ic = 1} centre_c), bits where the sum is 0 taken from one fixed
    random +-1 vector (`tie_center`, drawn once from the seed). For a single label this is
    that class's centre, so one rule serves single- and multi-label data.

Departures from the authors' code (yuanli2333/Hadamard-Matrix-for-hashing, train.py, and
DeepHash-pytorch CSQ.py):
    * the centre loss is computed from the pre-tanh output as a sigmoid cross-entropy on
      logits 2z, which equals the BCE on (tanh z + 1)/2; where float32 tanh saturates
      (|z| > ~9) PyTorch's BCELoss clamps log at -100 and its gradient vanishes through
      tanh, while this form stays finite with a non-zero gradient. With `apply_tanh=False`
      the codes are taken as u itself (a tanh head, as the authors' network) and the BCE
      uses logs clamped at -100 as PyTorch does;
    * with more than 2K classes (or K not a power of 2) all centres are random, as in the
      authors' released centres and the paper's Algorithm 1; DeepHash-pytorch keeps the
      2K Hadamard rows and draws only the rest. If none of the 20 draws passes the
      distance test, DeepHash-pytorch keeps the last draw, wsdhash the best one;
    * rows without any label contribute 0 to the centre term (the authors' code gives NaN,
      the mean of no centre, or DeepHash-pytorch the random tie vector); their
      quantization term is kept;
    * the authors' optional pairwise term (lambda1, 0 in every published command) is not
      implemented.

Reference:
    Yuan et al., "Central Similarity Quantization for Efficient Image and Video
    Retrieval", CVPR 2020.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from wsdhash.losses import references
from wsdhash.losses.base import HashingLoss

CENTER_METHODS = ("auto", "random")
_RANDOM_DRAWS = 20
# torch.nn.BCELoss clamps each log term at -100.
_LOG_FLOOR = -100.0


def is_power_of_two(value: int) -> bool:
    return value >= 1 and value & (value - 1) == 0


def sylvester_hadamard(order: int) -> np.ndarray:
    """The (order x order) Sylvester Hadamard matrix (order a power of 2), +-1 int8;
    equal to scipy.linalg.hadamard(order)."""
    if not is_power_of_two(order):
        raise ValueError(f"order must be a power of 2; got {order}.")
    matrix = np.ones((1, 1), dtype=np.int8)
    while matrix.shape[0] < order:
        matrix = np.block([[matrix, matrix], [matrix, -matrix]])
    return matrix


def pairwise_hamming(codes: np.ndarray) -> np.ndarray:
    """Hamming distances of the distinct unordered pairs of +-1 rows, (C(C-1)/2,)."""
    codes = np.asarray(codes, dtype=np.int64)
    distances = (codes.shape[1] - codes @ codes.T) // 2
    return distances[np.triu_indices(codes.shape[0], 1)]


def random_centers(num_classes: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    """C balanced random +-1 centres (floor(K/2) bits -1 each), best of up to 20 draws
    (module doc)."""
    best, best_key = None, None
    for _ in range(_RANDOM_DRAWS):
        centers = np.ones((num_classes, bits), dtype=np.float32)
        for row in centers:
            row[rng.permutation(bits)[: bits // 2]] = -1.0
        distances = pairwise_hamming(centers) if num_classes > 1 else np.array([bits])
        key = (int(distances.min()), float(distances.mean()))
        if best_key is None or key > best_key:
            best, best_key = centers, key
        if key[0] > bits / 4 and key[1] >= bits / 2:
            return centers
    return best


def generate_centers(num_classes: int, bits: int, method: str = "auto", seed: int = 0):
    """(C, K) float32 +-1 hash centres and the (K,) tie vector, from (C, K, method, seed)."""
    if method not in CENTER_METHODS:
        raise ValueError(f"Unknown center method {method!r}; known: {', '.join(CENTER_METHODS)}.")
    if num_classes < 1 or bits < 1:
        raise ValueError(f"num_classes and bits must be >= 1; got {num_classes}, {bits}.")
    rng = np.random.default_rng(seed)
    tie = np.where(rng.random(bits) < 0.5, -1.0, 1.0).astype(np.float32)
    if method == "auto" and is_power_of_two(bits) and num_classes <= 2 * bits:
        hadamard = sylvester_hadamard(bits)
        centers = np.concatenate([hadamard, -hadamard])[:num_classes].astype(np.float32)
    else:
        centers = random_centers(num_classes, bits, rng)
    return centers, tie


def example_centers(labels: tf.Tensor, centers: tf.Tensor, tie_center: tf.Tensor):
    """Each example's centre and whether it has one.

    Args:
        labels: (B, C) multi-hot / one-hot labels, or (B,) class ids.
        centers: (C, K) +-1 class centres.
        tie_center: (K,) +-1 bits used where the sum of the label centres is 0.

    Returns:
        ((B, K) float32 +-1 centres, (B,) bool labelled).
    """
    centers = tf.cast(centers, tf.float32)
    positive = references.positive_labels(labels, tf.shape(centers)[0])
    total = tf.matmul(positive, centers)  # (B, K), exact small integers
    tie = tf.broadcast_to(tf.cast(tie_center, tf.float32)[None, :], tf.shape(total))
    signs = tf.where(total > 0, 1.0, tf.where(total < 0, -1.0, tie))
    return signs, tf.reduce_any(positive > 0, axis=1)


def _bce_from_codes(u: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Elementwise PyTorch BCELoss on p = (u + 1) / 2, logs clamped at -100, with finite
    gradients where the clamp bites."""
    p = (u + 1.0) / 2.0

    def clamped_log(x):
        safe = tf.where(x > 0, x, tf.ones_like(x))
        return tf.where(x > 0, tf.maximum(tf.math.log(safe), _LOG_FLOOR), _LOG_FLOOR)

    return -(target * clamped_log(p) + (1.0 - target) * clamped_log(1.0 - p))


def csq_terms(
    codes: tf.Tensor,
    labels: tf.Tensor,
    centers: tf.Tensor,
    tie_center: tf.Tensor,
    apply_tanh: bool = True,
) -> tuple[tf.Tensor, tf.Tensor]:
    """CSQ's two per-example terms (module doc), unweighted.

    Args:
        codes: (B, K) model outputs z (apply_tanh=True) or tanh outputs u (False).
        labels: (B, C) labels or (B,) class ids.
        centers: (C, K) +-1 centres.
        tie_center: (K,) +-1 tie bits.
        apply_tanh: whether `codes` are pre-tanh outputs.

    Returns:
        (center (B,), quantization (B,)) float32.
    """
    codes = tf.cast(codes, tf.float32)
    target_signs, labelled = example_centers(labels, centers, tie_center)
    if apply_tanh:
        u = tf.tanh(codes)
        # BCE((tanh z + 1)/2, (c + 1)/2) = softplus(-2 z c) for c = +-1.
        bits = tf.nn.sigmoid_cross_entropy_with_logits(
            labels=(target_signs + 1.0) / 2.0, logits=2.0 * codes
        )
    else:
        u = codes
        bits = _bce_from_codes(u, (target_signs + 1.0) / 2.0)
    center = tf.where(labelled, tf.reduce_mean(bits, axis=1), 0.0)
    quantization = tf.reduce_mean(tf.square(tf.abs(u) - 1.0), axis=1)
    return center, quantization


class CSQLoss(HashingLoss):
    """CSQ loss layer; owns the fixed (C, K) hash centres and the (K,) tie vector as
    non-trainable weights, rebuilt identically from (C, K, center_method, seed).

    `call` returns {"loss", "center", "quantization"}, each (B,), with
    loss = center + quantization_weight * quantization (terms unweighted).

    Args:
        bits: K.
        num_classes: C.
        seed: seeds the random centres and the tie vector.
        quantization_weight: lambda (1e-4, DeepHash-pytorch's CSQ default).
        center_method: "auto" (Hadamard when possible) or "random".
        apply_tanh: the codes are pre-tanh outputs (True, DeepHash-pytorch's form) or
            already tanh outputs in [-1, 1] (False, a tanh head as the authors' network).

    Reference:
        Yuan et al., "Central Similarity Quantization for Efficient Image and Video
        Retrieval", CVPR 2020.
    """

    hyperparameters = ("quantization_weight", "center_method", "apply_tanh")

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        quantization_weight: float = 1e-4,
        center_method: str = "auto",
        apply_tanh: bool = True,
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        self.quantization_weight = float(quantization_weight)
        self.center_method = center_method
        self.apply_tanh = bool(apply_tanh)
        centers, tie = generate_centers(self.num_classes, self.bits, center_method, self.seed)
        self.centers = self.add_weight(
            name="centers",
            shape=(self.num_classes, self.bits),
            initializer=keras.initializers.Zeros(),
            trainable=False,
        )
        self.centers.assign(centers)
        self.tie_center = self.add_weight(
            name="tie_center",
            shape=(self.bits,),
            initializer=keras.initializers.Zeros(),
            trainable=False,
        )
        self.tie_center.assign(tie)

    def terms(self, codes, labels, refs) -> dict[str, tf.Tensor]:
        del refs  # every CSQ term is per example
        center, quantization = csq_terms(
            codes,
            labels,
            tf.convert_to_tensor(self.centers),
            tf.convert_to_tensor(self.tie_center),
            self.apply_tanh,
        )
        loss = center + self.quantization_weight * quantization
        return {"loss": loss, "center": center, "quantization": quantization}
