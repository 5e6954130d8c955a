"""ADSH loss: asymmetric inner-product fit of the query network to learned database codes.

Notation: the database holds N items with labels y_j and codes V (N, K) that are learned
directly (no network encodes them during training); each outer iteration samples m rows
Omega = (omega_1, ..., omega_m) of the database, and the query network u = tanh(F(x)) is
trained on those items for a few epochs. The objective is

    J = sum_i sum_j (u_i . v_j - K S_ij)^2 + gamma sum_i ||v_{omega_i} - u_i||^2

over the sampled items i and all database items j. Per anchor i of a batch (its database
row omega_i = `example_index`), with u_i the model's real output:

    similarity_i   = sum_j (u_i . v_j - K S_ij)^2 / N
    quantization_i = sum_k (v_{omega_i, k} - u_ik)^2 / N
    loss_i         = similarity_i + gamma * quantization_i

so the mean of loss_i over a batch of B is the authors' batch loss
(sum square + gamma sum quant) / (N * B) (ADSH_pytorch/utils/adsh_loss.py, `num_train` =
the database size there). V and the database labels are constants here: no gradient
reaches them. Each anchor's terms involve only its own row and V, so the references
(another replica's codes) are not needed; 2 replicas give one device's values.

S convention ("soft constraint" of both reference codes, not in the paper, whose S is
+-1): S_ij = 1 when i and j share a label, else -r, with r = #similar / #dissimilar pairs
of a label matrix (the "sample" r, which makes the entries of S sum to 0). Choices
(`soft_constraint`):
  "sample" (default; jiangqy/ADSH-AAAI2018, PyTorch and MATLAB): r over the m x N
      sampled-vs-database pairs, fixed for the outer iteration (`ADSHLoss.set_sample`
      sets it; 1 until then, i.e. +-1);
  "batch" (swuxyj/DeepHash-pytorch): r over the batch-vs-database pairs of every step,
      here over the references (the global batch under tf.distribute), so replicas agree;
  "none": r = 1, the paper's +-1.
Departure: r = 0 where no pair is dissimilar (the originals divide by zero there).

Discrete cyclic coordinate descent (`dcc_update`), after each outer iteration's epochs:
with U (m, K) the sampled items' recorded outputs, Ubar (N, K) zero except rows Omega = U,
Q = -2 K S^T U - 2 gamma Ubar (S: the m x N soft matrix, r over m x N in both codes), and
for k = 1..K in turn, with the bits updated so far already in V:

    V[:, k] = -sign(2 V_{-k} (U_{-k}^T U[:, k]) + Q[:, k])

S^T U is computed over blocks of database rows (`similarity_products`), so the update
holds m x 4,096 entries of S at a time, not m x N (2,000 x 193,734 float64 would be
3.1 GB on NUS-WIDE); r is counted the same way.

Each bit update minimises J over that column with the others fixed (J is linear in a
+-1 column), so it never increases J when V is +-1. sign(0): the originals use
torch/np/MATLAB sign, sign(0) = 0, so V can hold 0 (and starts all 0); departure: here a
zero argument gives +1 (the repo's `>= 0 -> +1` binarisation, wsdhash.eval.binary), so
V is always +-1 after an update; either value is optimal for that entry. The MATLAB code
uses sign(U) in the S^T term of Q; the PyTorch codes, the paper and this module use U.

Initial V: zeros (all three codes), so until the first update the similarity term is
the constant (K S)^2 and the quantization term pulls u towards 0; `database_codes` starts
at 0 too. U: the outputs recorded during the epochs (the last value seen for each sampled
item, taken at its forward pass before the step).

Defaults: gamma = 200, m = 2,000 sampled items, 3 epochs per outer iteration and
50 outer iterations (the authors' ADSH_pytorch; their MATLAB demo, at the revision read
for this module, sets gamma = 100, m = 1,000 and 50 x 3 epochs with a learning rate
falling from 1e-4 to 1e-6); DeepHash-pytorch uses gamma 200, m 2,000 and 3 epochs with
150 outer iterations (Adam 1e-4).
The sampling (a fresh random permutation's first m rows every outer iteration), the
epochs and the update schedule belong to the method's trainer, not to this layer.

Departures in normalisation: DeepHash-pytorch divides by its train-split size
(`num_train`, 5,000 on cifar10-1) times the batch, not by N (59,000); that is a constant
factor on the loss and its gradient. The MATLAB code divides the gradient by N * batch in
its update (the same scale as here). `apply_tanh=True` applies tanh to the codes in the
loss (DeepHash-pytorch's network returns raw outputs and tanh is applied before the
loss); the default False takes the codes as given (the authors' network ends in tanh, as
the repo's "tanh" head does).

Reference:
    Jiang and Li, "Asymmetric Deep Supervised Hashing", AAAI 2018 (code:
    jiangqy/ADSH-AAAI2018; re-implementation: swuxyj/DeepHash-pytorch ADSH.py).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from wsdhash.losses import references
from wsdhash.losses.base import HashingLoss

SOFT_CONSTRAINTS = ("sample", "batch", "none")


# Database rows per block when S is needed over the whole database (the soft ratio and
# S^T U of the V update): S is never held whole, an m x block slice at a time (2,000 x
# 4,096 float64: 64 MiB; smaller blocks were also faster, in cache).
BLOCK_ITEMS = 4096


def _similar_blocks(sample_labels, database_labels, block_items: int):
    """(start, (m, b) bool "shares a label") for consecutive blocks of database rows."""
    sample = np.asarray(sample_labels, np.float32)
    database = np.asarray(database_labels, np.float32)
    for start in range(0, len(database), block_items):
        yield start, (sample @ database[start : start + block_items].T) > 0


def soft_ratio(
    sample_labels: np.ndarray, database_labels: np.ndarray, block_items: int = BLOCK_ITEMS
) -> float:
    """r = #similar / #dissimilar pairs between (m, C) and (N, C) 0/1 labels (0 if none
    is dissimilar), counted block by block."""
    similar = sum(
        int(block.sum())
        for _, block in _similar_blocks(sample_labels, database_labels, block_items)
    )
    dissimilar = len(sample_labels) * len(database_labels) - similar
    return float(similar) / dissimilar if dissimilar else 0.0


def _similarity_values(similar: np.ndarray, r: float) -> np.ndarray:
    # float32 entries, as the m x N matrix has always been stored.
    return np.where(similar, np.float32(1.0), np.float32(-r)).astype(np.float32)


def similarity_matrix(
    sample_labels: np.ndarray, database_labels: np.ndarray, soft: bool = True
) -> np.ndarray:
    """(m, N) float32 S: 1 where the rows share a label, else -r (soft) or -1. The V
    update does not build it (`similarity_products`); small checks and tests do."""
    similar = (
        np.asarray(sample_labels, np.float32) @ np.asarray(database_labels, np.float32).T
    ) > 0
    r = soft_ratio(sample_labels, database_labels) if soft else 1.0
    return _similarity_values(similar, r)


def similarity_products(
    sample_labels: np.ndarray,
    database_labels: np.ndarray,
    sampled_codes: np.ndarray,
    soft: bool = True,
    block_items: int = BLOCK_ITEMS,
) -> np.ndarray:
    """(N, K) float64 S^T U, computed over blocks of database rows so that memory is
    O(m x block_items), not O(m x N); equal to `similarity_matrix(...).T @ U`."""
    u = np.asarray(sampled_codes, np.float64)
    r = soft_ratio(sample_labels, database_labels, block_items) if soft else 1.0
    products = np.empty((len(database_labels), u.shape[1]), np.float64)
    for start, similar in _similar_blocks(sample_labels, database_labels, block_items):
        s = _similarity_values(similar, r).astype(np.float64)
        products[start : start + s.shape[1]] = s.T @ u
    return products


def _batch_soft_ratio(labels: tf.Tensor, database_labels: tf.Tensor) -> tf.Tensor:
    similar = references.pair_similarity(labels, database_labels)  # (R, N)
    return tf.math.divide_no_nan(tf.reduce_sum(similar), tf.reduce_sum(1.0 - similar))


def adsh_terms(
    codes: tf.Tensor,
    example_index: tf.Tensor,
    database_codes: tf.Tensor,
    database_labels: tf.Tensor,
    labels: tf.Tensor,
    dissimilar_value: float | tf.Tensor = 1.0,
    apply_tanh: bool = False,
) -> dict[str, tf.Tensor]:
    """ADSH's per-anchor similarity and quantization terms (module doc).

    Args:
        codes: (B, K) model outputs u (tanh'd here if `apply_tanh`).
        example_index: (B,) int database rows omega_i of the anchors.
        database_codes: (N, K) V; no gradient reaches it.
        database_labels: (N, C) 0/1 labels of the database.
        labels: (B, C) 0/1 labels of the anchors.
        dissimilar_value: r, so that S_ij = -r for dissimilar pairs (1: the paper's +-1).
        apply_tanh: apply tanh to `codes` first.

    Returns:
        {"similarity": (B,), "quantization": (B,)} float32, each divided by N; the batch
        mean of similarity + gamma * quantization is the authors' loss.
    """
    u = tf.cast(tf.convert_to_tensor(codes), tf.float32)
    if apply_tanh:
        u = tf.tanh(u)
    v = tf.stop_gradient(tf.cast(tf.convert_to_tensor(database_codes), tf.float32))  # (N, K)
    db_labels = tf.cast(tf.convert_to_tensor(database_labels), tf.float32)
    labels = tf.cast(tf.convert_to_tensor(labels), tf.float32)
    bits = tf.cast(tf.shape(v)[1], tf.float32)
    num_items = tf.cast(tf.shape(v)[0], tf.float32)
    r = tf.cast(dissimilar_value, tf.float32)

    similar = references.pair_similarity(labels, db_labels)  # (B, N)
    targets = bits * (similar * (1.0 + r) - r)  # K S
    residual = tf.matmul(u, v, transpose_b=True) - targets  # (B, N)
    similarity = tf.reduce_sum(tf.square(residual), axis=1) / num_items
    own = tf.gather(v, tf.cast(example_index, tf.int32))  # (B, K)
    quantization = tf.reduce_sum(tf.square(own - u), axis=1) / num_items
    return {"similarity": similarity, "quantization": quantization}


def dcc_update(
    database_codes: np.ndarray,
    sampled_codes: np.ndarray,
    sampled_rows: np.ndarray,
    similarity: np.ndarray,
    gamma: float,
) -> np.ndarray:
    """One pass of ADSH's discrete cyclic coordinate descent over the K bits of V.

    Args:
        database_codes: (N, K) current V (+-1, or 0 before the first update).
        sampled_codes: (m, K) the sampled items' recorded outputs U.
        sampled_rows: (m,) their database rows Omega (distinct).
        similarity: (m, N) S between sampled and database items (soft or +-1).
        gamma: the quantization weight.

    Returns:
        (N, K) float32 new V in {-1, +1}: bit k = -sign(2 V_{-k} U_{-k}^T U_k + Q_k), bits
        updated in order 0..K-1 with the earlier ones already new; a zero argument gives +1
        (the originals' sign(0) = 0 would give 0; either value is optimal for that entry).
    """
    s = np.asarray(similarity, np.float64)  # (m, N)
    expected = (len(np.asarray(sampled_rows)), np.shape(database_codes)[0])
    if s.shape != expected:
        raise ValueError(f"similarity must be {expected}; got {s.shape}.")
    products = s.T @ np.asarray(sampled_codes, np.float64)
    return dcc_update_from_products(database_codes, sampled_codes, sampled_rows, products, gamma)


def dcc_update_from_products(
    database_codes: np.ndarray,
    sampled_codes: np.ndarray,
    sampled_rows: np.ndarray,
    products: np.ndarray,
    gamma: float,
) -> np.ndarray:
    """`dcc_update` given S^T U (N, K) instead of S (`similarity_products` computes it
    in bounded memory)."""
    v = np.array(database_codes, dtype=np.float64)  # (N, K)
    u = np.asarray(sampled_codes, np.float64)  # (m, K)
    rows = np.asarray(sampled_rows, np.int64)
    num_items, bits = v.shape
    if u.shape != (len(rows), bits) or np.shape(products) != (num_items, bits):
        raise ValueError(
            f"sampled_codes must be ({len(rows)}, {bits}) and S^T U ({num_items}, {bits}); "
            f"got {u.shape} and {np.shape(products)}."
        )
    if len(np.unique(rows)) != len(rows):
        raise ValueError("sampled_rows must be distinct.")
    q = -2.0 * bits * np.asarray(products, np.float64)  # (N, K): Q = -2K S^T U - 2 gamma Ubar
    q[rows] -= 2.0 * gamma * u  # Ubar is U at the sampled rows, 0 elsewhere
    gram = u.T @ u  # (K, K)
    for k in range(bits):
        # V_{-k} U_{-k}^T U_k as V @ (column k of U^T U with its k-th entry 0): no copy of
        # V's other columns per bit.
        weights = gram[:, k].copy()
        weights[k] = 0.0
        argument = 2.0 * (v @ weights) + q[:, k]  # (N,)
        v[:, k] = np.where(-argument >= 0, 1.0, -1.0)
    return v.astype(np.float32)


def dcc_objective(
    database_codes: np.ndarray,
    sampled_codes: np.ndarray,
    sampled_rows: np.ndarray,
    similarity: np.ndarray,
    gamma: float,
) -> float:
    """J = ||U V^T - K S||^2 + gamma ||V_Omega - U||^2 (float64), what `dcc_update` lowers."""
    v = np.asarray(database_codes, np.float64)
    u = np.asarray(sampled_codes, np.float64)
    s = np.asarray(similarity, np.float64)
    fit = np.sum((u @ v.T - v.shape[1] * s) ** 2)
    return float(fit + gamma * np.sum((v[np.asarray(sampled_rows)] - u) ** 2))


class ADSHLoss(HashingLoss):
    """ADSH loss layer; owns the database codes V and the database labels.

    Weights (non-trainable): `database_codes` (N, K) float32 V (0 until the first
    `dcc_update`, as in the originals; then +-1), `database_labels` (N, C) float32 (set by
    `set_database_labels`) and `soft_ratio` () float32 r of the "sample" soft constraint
    (1 until `set_sample`).

    `call` needs `example_index`, the anchors' database rows, and returns {"loss",
    "similarity", "quantization"}, each (B,), loss = similarity + gamma * quantization.

    Args:
        bits: K.
        num_classes: C.
        seed: unused (nothing is random); kept for the common loss signature.
        num_database_items: N, rows of V (the normaliser of both terms).
        gamma: the quantization weight (200).
        soft_constraint: "sample", "batch" or "none" (module doc).
        apply_tanh: apply tanh to the codes in the loss (False: they are tanh outputs).

    Reference:
        Jiang and Li, "Asymmetric Deep Supervised Hashing", AAAI 2018.
    """

    hyperparameters = ("num_database_items", "gamma", "soft_constraint", "apply_tanh")

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        *,
        num_database_items: int,
        gamma: float = 200.0,
        soft_constraint: str = "sample",
        apply_tanh: bool = False,
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        if soft_constraint not in SOFT_CONSTRAINTS:
            raise ValueError(
                f"soft_constraint must be one of {SOFT_CONSTRAINTS}; got {soft_constraint!r}."
            )
        if int(num_database_items) < 1:
            raise ValueError(f"num_database_items must be >= 1; got {num_database_items}.")
        self.num_database_items = int(num_database_items)
        self.gamma = float(gamma)
        self.soft_constraint = soft_constraint
        self.apply_tanh = bool(apply_tanh)
        self.block_items = BLOCK_ITEMS  # database rows per block of the V update's S
        self.database_codes = self.add_weight(
            name="database_codes",
            shape=(self.num_database_items, self.bits),
            initializer=keras.initializers.Zeros(),
            trainable=False,
        )
        self.database_labels = self.add_weight(
            name="database_labels",
            shape=(self.num_database_items, self.num_classes),
            initializer=keras.initializers.Zeros(),
            trainable=False,
        )
        self.soft_ratio = self.add_weight(
            name="soft_ratio",
            shape=(),
            initializer=keras.initializers.Ones(),
            trainable=False,
        )

    def _check_rows(self, name: str, value: np.ndarray, width: int) -> np.ndarray:
        value = np.asarray(value)
        if value.shape != (self.num_database_items, width):
            raise ValueError(
                f"{name} must be ({self.num_database_items}, {width}); got {value.shape}."
            )
        return value

    def set_database_labels(self, labels: np.ndarray) -> None:
        """Stores the (N, C) database labels (positive where > 0; or (N,) class ids)."""
        labels = np.asarray(labels)
        if labels.ndim == 1:
            labels = np.eye(self.num_classes, dtype=np.float32)[labels.astype(np.int64)]
        labels = self._check_rows("database labels", labels, self.num_classes)
        self.database_labels.assign((labels > 0).astype(np.float32))

    def set_database_codes(self, codes: np.ndarray) -> None:
        """Stores (N, K) database codes V."""
        codes = self._check_rows("database codes", codes, self.bits)
        self.database_codes.assign(codes.astype(np.float32))

    def set_sample(self, sampled_rows: np.ndarray) -> None:
        """Starts an outer iteration (after `set_database_labels`): for "sample", stores r
        over the m x N sampled-vs-database pairs; the other conventions store nothing."""
        if self.soft_constraint == "sample":
            db = self.database_labels.numpy()
            self.soft_ratio.assign(soft_ratio(db[np.asarray(sampled_rows)], db))

    def update_database_codes(
        self, sampled_codes: np.ndarray, sampled_rows: np.ndarray
    ) -> np.ndarray:
        """Runs `dcc_update` on the stored V and labels (S^T U block by block, S never
        whole: `similarity_products`), stores and returns the new V."""
        db = self.database_labels.numpy()
        products = similarity_products(
            db[np.asarray(sampled_rows)],
            db,
            sampled_codes,
            soft=self.soft_constraint != "none",
            block_items=self.block_items,
        )
        new = dcc_update_from_products(
            self.database_codes.numpy(), sampled_codes, sampled_rows, products, self.gamma
        )
        self.database_codes.assign(new)
        return new

    def terms(self, codes, labels, refs, example_index=None) -> dict[str, tf.Tensor]:
        # Each anchor's terms involve only its row and V: the references' codes and
        # offset are not needed (their labels are, for the "batch" soft constraint).
        if example_index is None:
            raise ValueError("ADSHLoss needs example_index: the database rows of the batch.")
        labels = references.positive_labels(labels, self.num_classes)
        db_labels = tf.convert_to_tensor(self.database_labels)
        if self.soft_constraint == "sample":
            r = tf.convert_to_tensor(self.soft_ratio)
        elif self.soft_constraint == "batch":
            ref_labels = (
                labels
                if refs.labels is None
                else references.positive_labels(refs.labels, self.num_classes)
            )
            r = _batch_soft_ratio(ref_labels, db_labels)
        else:
            r = 1.0
        terms = adsh_terms(
            codes,
            example_index,
            tf.convert_to_tensor(self.database_codes),
            db_labels,
            labels,
            dissimilar_value=r,
            apply_tanh=self.apply_tanh,
        )
        loss = terms["similarity"] + self.gamma * terms["quantization"]
        return {"loss": loss, **terms}
