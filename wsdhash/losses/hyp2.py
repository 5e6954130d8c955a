"""HyP2 loss: learnable class proxies plus a pair term for irrelevant multi-label pairs.

Per example i (anchors, B) against a reference set (R rows, default the batch itself):

    proxy_i = R * [ sum_{c: y_ic=1} (1 - cos(x_i, p_c)) / |P|
                    + sum_{c: y_ic=0} max(0, cos(x_i, p_c) - zeta) / |N| ]
    pair_i  = R * beta * sum_{j in refs: (i, j) in D} max(0, cos(x_i, x_j) - zeta) / |D|

with |P| and |N| the numbers of 1s and 0s in the (R, C) reference label matrix and D the
ordered pairs of multi-label samples (more than one label) that share no label. When the
references are the gathered global batch, the mean of proxy_i + pair_i over the global
batch is exactly the published (batch-level) loss, because each reference is an anchor on
exactly one replica.

Departures from the original code, all in cases where it divides by zero: a batch with
no positive entries (|P| = 0) or no negative entries (|N| = 0) gives 0 for that half
instead of NaN; an empty D gives a pair term of 0, as in the original. Labels are read as
"positive where > 0". Rows without any label stay in the negative proxy term (all their
entries are 0s), as in the original.

Reference:
    Xu et al., "HyP2 Loss: Beyond Hypersphere Metric Space for Multi-label Image
    Retrieval", ACM MM 2022.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import math
from typing import Any

import keras
import tensorflow as tf

from wsdhash.losses import references
from wsdhash.losses.base import HashingLoss

_ZETA_TABLE = "hyp2_zeta.csv"

# torch.nn.functional.normalize divides by max(||x||, 1e-12); l2_normalize clamps the
# squared norm, so 1e-24 reproduces it.
_NORMALIZE_EPSILON = 1e-24


@functools.lru_cache(maxsize=1)
def _zeta_table() -> dict[tuple[int, int], float]:
    """Loads the packaged best-known-codes table: (bits, ceil(log2 C)) -> zeta."""
    text = importlib.resources.files("wsdhash.losses").joinpath(_ZETA_TABLE).read_text("utf-8")
    rows = csv.DictReader(text.splitlines())
    return {(int(row["bits"]), int(row["log2_classes"])): float(row["zeta"]) for row in rows}


def log2_classes(num_classes: int) -> int:
    """ceil(log2 C) computed exactly on integers; C = 1 is mapped to 1.

    A single class needs one codeword, which the table's n = 1 column (two codewords,
    zeta = -1) covers; with C = 1 there are no multi-label samples, so zeta only enters
    the negative proxy term of unlabelled rows.

    Args:
        num_classes: C >= 1.

    Returns:
        max(1, ceil(log2 C)).
    """
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}.")
    return max(1, (int(num_classes) - 1).bit_length())


def hyp2_zeta(bits: int, num_classes: int) -> float:
    """The HyP2 threshold zeta = table[K][ceil(log2 C)] (the original's codetable.xlsx).

    zeta = 1 - 2 d*/K, where d* is the best-known minimum Hamming distance of 2^n codes of
    length K: the smallest achievable maximum cosine between two class codes.

    Args:
        bits: K, 1..256.
        num_classes: C.

    Returns:
        zeta as a Python float.

    Raises:
        ValueError: if (K, ceil(log2 C)) is not in the table (n must be <= K <= 256).
    """
    n = log2_classes(num_classes)
    try:
        return _zeta_table()[(int(bits), n)]
    except KeyError:
        raise ValueError(
            f"No HyP2 zeta for bits={bits}, num_classes={num_classes} (ceil(log2 C)={n}); the "
            "table covers 1 <= bits <= 256 and ceil(log2 C) <= bits. Pass zeta= explicitly."
        ) from None


def _cosine(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """(N, K) x (M, K) -> (N, M) cosine similarities, torch-style normalisation."""
    a = tf.math.l2_normalize(a, axis=1, epsilon=_NORMALIZE_EPSILON)
    b = tf.math.l2_normalize(b, axis=1, epsilon=_NORMALIZE_EPSILON)
    return tf.matmul(a, b, transpose_b=True)


def _as_float(x: Any) -> tf.Tensor:
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def hyp2_proxy_loss(
    codes: tf.Tensor,
    labels: tf.Tensor,
    proxies: tf.Tensor,
    zeta: float,
    ref_labels: tf.Tensor | None = None,
) -> tf.Tensor:
    """HyP2 proxy term per anchor, normalised by |P| and |N| of the reference labels.

    Args:
        codes: (B, K) relaxed codes of the anchors.
        labels: (B, C) multi-hot labels of the anchors.
        proxies: (C, K) class proxies.
        zeta: the negative threshold.
        ref_labels: (R, C) labels of the reference set that defines |P|, |N| and the
            scale R; defaults to `labels`.

    Returns:
        (B,) float32; mean over the R references as anchors = the published proxy loss.
    """
    codes = _as_float(codes)
    positive = _as_float(labels) > 0  # (B, C)
    ref_positive = positive if ref_labels is None else _as_float(ref_labels) > 0  # (R, C)
    num_refs = tf.cast(tf.shape(ref_positive)[0], tf.float32)
    num_pos = tf.reduce_sum(tf.cast(ref_positive, tf.float32))
    num_neg = tf.cast(tf.size(ref_positive), tf.float32) - num_pos

    cos = _cosine(codes, _as_float(proxies))  # (B, C)
    pos_sum = tf.reduce_sum(tf.where(positive, 1.0 - cos, 0.0), axis=1)  # (B,)
    neg_sum = tf.reduce_sum(tf.where(positive, 0.0, tf.nn.relu(cos - zeta)), axis=1)  # (B,)
    return num_refs * (
        tf.math.divide_no_nan(pos_sum, num_pos) + tf.math.divide_no_nan(neg_sum, num_neg)
    )


def hyp2_pair_loss(
    codes: tf.Tensor,
    labels: tf.Tensor,
    zeta: float,
    ref_codes: tf.Tensor | None = None,
    ref_labels: tf.Tensor | None = None,
    anchor_offset: int | tf.Tensor = 0,
) -> tf.Tensor:
    """HyP2 pair term per anchor (without beta): irrelevant multi-label pairs above zeta.

    Args:
        codes: (B, K) relaxed codes of the anchors.
        labels: (B, C) multi-hot labels of the anchors.
        zeta: the threshold.
        ref_codes: (R, K) reference codes; defaults to `codes`. Not stop-gradiented, so
            gathered references carry gradients back to the replica that produced them.
        ref_labels: (R, C) reference labels; defaults to `labels`.
        anchor_offset: row of the first anchor inside the references (anchors are rows
            anchor_offset .. anchor_offset + B - 1); the self pair is excluded by this
            position. With all_gather across replicas: replica_id * B.

    Returns:
        (B,) float32; mean over the R references as anchors = the published
        sum_D max(0, cos - zeta) / |D| (0 if D is empty).
    """
    references.check_pair(ref_codes, ref_labels)
    codes = _as_float(codes)
    positive = tf.cast(_as_float(labels) > 0, tf.float32)  # (B, C)
    if ref_codes is None:
        ref_codes, ref_positive = codes, positive
    else:
        ref_codes = _as_float(ref_codes)
        ref_positive = tf.cast(_as_float(ref_labels) > 0, tf.float32)  # (R, C)
    num_anchors = tf.shape(codes)[0]
    num_refs = tf.shape(ref_codes)[0]

    anchor_multi = tf.reduce_sum(positive, axis=1) > 1  # (B,)
    ref_multi = tf.reduce_sum(ref_positive, axis=1) > 1  # (R,)
    # The original never meets a self pair (a multi-label sample shares its labels with
    # itself); excluding the diagonal by position keeps that true whatever the labels.
    not_self = references.not_self(num_anchors, num_refs, anchor_offset)  # (B, R)
    irrelevant = tf.matmul(positive, ref_positive, transpose_b=True) == 0  # (B, R)
    in_d = irrelevant & anchor_multi[:, None] & ref_multi[None, :] & not_self  # (B, R)

    # |D| over all ordered reference pairs, independent of which rows are anchors.
    ref_irrelevant = tf.matmul(ref_positive, ref_positive, transpose_b=True) == 0  # (R, R)
    ref_not_self = ~tf.eye(num_refs, dtype=tf.bool)
    ref_in_d = ref_irrelevant & ref_multi[:, None] & ref_multi[None, :] & ref_not_self
    num_d = tf.reduce_sum(tf.cast(ref_in_d, tf.float32))

    hinge = tf.nn.relu(_cosine(codes, ref_codes) - zeta)  # (B, R)
    pair_sum = tf.reduce_sum(tf.where(in_d, hinge, 0.0), axis=1)  # (B,)
    return tf.cast(num_refs, tf.float32) * tf.math.divide_no_nan(pair_sum, num_d)


def hyp2_loss(
    codes: tf.Tensor,
    labels: tf.Tensor,
    proxies: tf.Tensor,
    zeta: float,
    beta: float = 0.5,
    ref_codes: tf.Tensor | None = None,
    ref_labels: tf.Tensor | None = None,
    anchor_offset: int | tf.Tensor = 0,
) -> tf.Tensor:
    """Total HyP2 loss per anchor: proxy term + beta * pair term.

    Args:
        codes: (B, K) relaxed codes of the anchors.
        labels: (B, C) multi-hot labels.
        proxies: (C, K) class proxies.
        zeta: threshold (see `hyp2_zeta`).
        beta: weight of the pair term; 0 skips it as in the original.
        ref_codes: (R, K) references for the pair term; defaults to `codes`.
        ref_labels: (R, C) reference labels; defaults to `labels`.
        anchor_offset: row of the first anchor inside the references.

    Returns:
        (B,) float32.
    """
    references.check_pair(ref_codes, ref_labels)
    total = hyp2_proxy_loss(codes, labels, proxies, zeta, ref_labels=ref_labels)
    if beta > 0:
        total += beta * hyp2_pair_loss(
            codes, labels, zeta, ref_codes, ref_labels, anchor_offset=anchor_offset
        )
    return total


class HyP2Loss(HashingLoss):
    """HyP2 loss layer; owns the trainable (C, K) proxies.

    `call` returns {"loss", "proxy", "pair"}, each (B,), with loss = proxy + pair (the
    pair entry already includes beta, as in the original's logged term).

    Args:
        bits: K.
        num_classes: C.
        seed: seeds the proxy initialisation N(0, 2/C) (PyTorch's kaiming_normal_ with
            mode='fan_out' on a (C, K) tensor).
        beta: weight of the irrelevant-pair term (0.5 in the original).
        zeta: threshold override; None looks up `hyp2_zeta(bits, num_classes)`.

    Reference:
        Xu et al., "HyP2 Loss: Beyond Hypersphere Metric Space for Multi-label Image
        Retrieval", ACM MM 2022.
    """

    hyperparameters = ("beta", "zeta")
    config_attributes = {"zeta": "zeta_override"}

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        beta: float = 0.5,
        zeta: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        self.beta = float(beta)
        self.zeta_override = None if zeta is None else float(zeta)
        self.zeta = hyp2_zeta(self.bits, self.num_classes) if zeta is None else self.zeta_override
        # Explicit std instead of keras.initializers.HeNormal: Keras counts fan_out of a
        # (C, K) kernel as K and truncates the normal; PyTorch uses fan_out = C, untruncated.
        self.proxies = self.add_weight(
            name="proxies",
            shape=(self.num_classes, self.bits),
            initializer=keras.initializers.RandomNormal(
                stddev=math.sqrt(2.0 / self.num_classes), seed=self.seed
            ),
            trainable=True,
        )

    def terms(self, codes, labels, refs) -> dict[str, tf.Tensor]:
        proxies = tf.convert_to_tensor(self.proxies)
        proxy = hyp2_proxy_loss(codes, labels, proxies, self.zeta, ref_labels=refs.labels)
        if self.beta > 0:
            pair = self.beta * hyp2_pair_loss(
                codes, labels, self.zeta, refs.codes, refs.labels, anchor_offset=refs.anchor_offset
            )
        else:
            pair = tf.zeros_like(proxy)
        return {"loss": proxy + pair, "proxy": proxy, "pair": pair}
