"""WSDHQ loss: adaptive cosine margin between tags on the hypersphere plus a quantization term.

Notation (docs/methods.md, "WSDHQ: adaptive cosine margin loss"): x_i is the (D,) tanh
output of image i and z_i = x_i / ||x_i||; e_t is row t of the fixed (T, D) tag embeddings E and
w_t = e_t / ||e_t||; c_it = z_i . w_t; P_i are the image's (merged) tags, N_i the others.
Per anchor i against a reference set (R rows, default the batch itself):

    embedding_i = R * sum_{p in P_i} sum_{n in N_i} max(0, delta_pn - (c_ip - c_in)) / Z
    Z           = sum_{r in refs} |P_r| (T - |P_r|)
    delta_pn    = 2^(1 - gamma) (1 - w_p . w_n)^gamma          (adaptive; or a fixed 0.7)

so that the mean over the references as anchors is the published batch loss. Untagged
images contribute 0; Z = 0 gives 0, not NaN.

`hardest_negatives=True` (the original's `use_neg_sampling`) keeps, per image, only the k
negatives with the largest c_in, k = min(T - max_r |P_r|, max_r |P_r|) over the
references, and uses Z = k * sum_r |P_r|. Departure: the original ranks all T tags with
the positives' scores set to 0, so a positive tag can be picked as a "negative" whenever
k true negatives do not all score above 0; here only true negatives are ranked (ties go to
the lower tag index, as `tf.nn.top_k`).

`variant="wdht"` replaces the margin loss with the original's re-implementation of the
WDHT baseline: a_i = mean of w_t over P_i (not re-normalised) and

    wdht_i = R * sum_{j in refs, j != i} max(0, m + z_i . a_j - z_i . a_i) / (R_t (R_t - 1))

for tagged anchors (0 for untagged ones), with j over the tagged references only and R_t
their number (0 when R_t < 2). With every image tagged this is the original's
mean_i[sum_j max(0, m + z_i . a_j - z_i . a_i) - m] / (B - 1): its "- m" removes the
j = i term, which here is excluded by position (`anchor_offset`). Departure: the original
keeps untagged images, with a = 0, as anchors and as j.

Quantization (docs/methods.md, "WSDHQ: quantization loss"), per example, with b_i the
stored (stale) codes of the image:

    quantization_i = || E (x_i - sum_m C[m K + b_im]) ||^2

with raw x and raw E ("faithful", as coded). "hypersphere" uses z_i in place of x_i, as the
paper describes quantization on the hypersphere; the codebooks and codes must then be fit
on normalised features too (the trainer's quantizer does). "product" pairs with true
product quantization on the hypersphere (quantization/product.py): x is split into the M
contiguous sub-spaces of the codebooks and every sub-vector is normalised, and the
codebooks are the block-sparse (M, K, D) form of the unit sub-codewords, so the sum over
m is their concatenation. The codebooks and codes are fixed inputs: no gradient reaches
them.

Under XLA the positives are padded to a bounded dynamic size (bound T), so compiled code
may reserve (B, T, T) memory; eager and graph mode use (B, max |P_i|, T).

Reference:
    Wang et al., "Weakly Supervised Deep Hyperspherical Quantization for Image
    Retrieval", AAAI 2021 (code: gimpong/AAAI21-WSDHQ).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from wsdhash.losses import references
from wsdhash.losses.base import HashingLoss

MARGINS = ("adaptive", "fixed")
VARIANTS = ("wsdhq", "wdht")
QUANTIZATION_FORMS = ("faithful", "hypersphere", "product")

# tf.nn.l2_normalize's default, as in the original: x / sqrt(max(sum x^2, 1e-12)).
_NORMALIZE_EPSILON = 1e-12


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}.")


def _as_float(x: Any) -> tf.Tensor:
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def normalize_tag_embeddings(tag_embeddings: np.ndarray) -> np.ndarray:
    """(T, D) raw tag embeddings -> (T, D) float64 unit rows w_t (tf.nn.l2_normalize rule)."""
    e = np.asarray(tag_embeddings, np.float64)
    squared = np.maximum(np.sum(e * e, axis=1, keepdims=True), _NORMALIZE_EPSILON)
    return e / np.sqrt(squared)


def adaptive_margins(tag_embeddings: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """delta_pn = 2^(1 - gamma) (1 - w_p . w_n)^gamma for every pair of tags.

    Args:
        tag_embeddings: (T, D) raw tag embeddings.
        gamma: the exponent; 1 gives 1 - cos(w_p, w_n).

    Returns:
        (T, T) float32, in [0, 2]. 1 - cos is clipped at 0 so that rounding on near-equal
        tags cannot give NaN for non-integer gamma.
    """
    w = normalize_tag_embeddings(tag_embeddings)
    one_minus_cos = np.maximum(1.0 - w @ w.T, 0.0)
    return (2.0 ** (1.0 - gamma) * one_minus_cos**gamma).astype(np.float32)


def _positive_slots(positive: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Indices of each row's positive tags, padded to the largest count.

    Args:
        positive: (B, T) bool.

    Returns:
        idx (B, P) int32 tag indices (padding points at negatives) and valid (B, P) bool,
        with P = max_i |P_i| (0 for an empty batch or no positives).
    """
    counts = tf.reduce_sum(tf.cast(positive, tf.int32), axis=1)  # (B,)
    num_slots = tf.maximum(tf.reduce_max(tf.concat([counts, [0]], 0)), 0)
    order = tf.argsort(tf.cast(positive, tf.int32), axis=1, direction="DESCENDING", stable=True)
    idx = order[:, :num_slots]  # (B, P)
    valid = tf.range(num_slots)[None, :] < counts[:, None]  # (B, P)
    return idx, valid


def _hardest_negative_mask(cos: tf.Tensor, negative: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """(B, T) bool: the k negatives with the largest cosine per row (lower index on ties)."""
    scores = tf.where(negative, cos, -np.inf)  # (B, T)
    order = tf.argsort(scores, axis=1, direction="DESCENDING", stable=True)  # (B, T)
    rank = tf.argsort(order, axis=1, stable=True)  # (B, T) inverse permutation
    return negative & (rank < k)


def wsdhq_embedding_loss(
    codes: tf.Tensor,
    labels: tf.Tensor,
    tag_embeddings: tf.Tensor | np.ndarray,
    margins: tf.Tensor | np.ndarray | float,
    ref_labels: tf.Tensor | None = None,
    hardest_negatives: bool = False,
) -> tf.Tensor:
    """Adaptive (or fixed) cosine margin loss per anchor.

    Args:
        codes: (B, D) tanh outputs x of the anchors.
        labels: (B, T) merged-tag indicators of the anchors (positive where > 0).
        tag_embeddings: (T, D) tag embeddings; normalised here.
        margins: (T, T) delta_pn (see `adaptive_margins`) or a scalar fixed margin.
        ref_labels: (R, T) tags of the reference set that defines the normaliser and the
            scale R; defaults to `labels`.
        hardest_negatives: keep only the k hardest negatives per image.

    Returns:
        (B,) float32; mean over the R references as anchors = the published loss.
    """
    z = tf.math.l2_normalize(_as_float(codes), axis=1, epsilon=_NORMALIZE_EPSILON)  # (B, D)
    w = tf.math.l2_normalize(_as_float(tag_embeddings), axis=1, epsilon=_NORMALIZE_EPSILON)
    positive = _as_float(labels) > 0  # (B, T)
    ref_positive = positive if ref_labels is None else _as_float(ref_labels) > 0  # (R, T)
    num_tags = tf.shape(positive)[1]
    num_refs = tf.cast(tf.shape(ref_positive)[0], tf.float32)
    ref_counts = tf.reduce_sum(tf.cast(ref_positive, tf.int32), axis=1)  # (R,)

    cos = tf.matmul(z, w, transpose_b=True)  # (B, T)
    negative = ~positive  # (B, T)
    if hardest_negatives:
        max_count = tf.reduce_max(tf.concat([ref_counts, [0]], 0))
        k = tf.minimum(num_tags - max_count, max_count)
        negative = _hardest_negative_mask(cos, negative, k)
        normaliser = tf.cast(tf.reduce_sum(ref_counts) * k, tf.float32)
    else:
        normaliser = tf.reduce_sum(tf.cast(ref_counts * (num_tags - ref_counts), tf.float32))

    idx, valid = _positive_slots(positive)  # (B, P)
    pos_cos = tf.gather(cos, idx, batch_dims=1)  # (B, P)
    margins = _as_float(margins)
    if margins.shape.rank == 2:
        margins = tf.gather(margins, idx)  # (B, P, T)
    hinge = tf.nn.relu(margins - (pos_cos[:, :, None] - cos[:, None, :]))  # (B, P, T)
    mask = valid[:, :, None] & negative[:, None, :]  # (B, P, T)
    total = tf.reduce_sum(tf.where(mask, hinge, 0.0), axis=[1, 2])  # (B,)
    return num_refs * tf.math.divide_no_nan(total, normaliser)


def _mean_positive_embedding(positive: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
    """(N, T) bool, (T, D) unit tags -> (N, D) mean of the positive w_t (0 if untagged)."""
    positive = tf.cast(positive, tf.float32)
    counts = tf.reduce_sum(positive, axis=1, keepdims=True)  # (N, 1)
    return tf.math.divide_no_nan(tf.matmul(positive, w), counts)


def wdht_loss(
    codes: tf.Tensor,
    labels: tf.Tensor,
    tag_embeddings: tf.Tensor | np.ndarray,
    margin: float = 0.7,
    ref_labels: tf.Tensor | None = None,
    anchor_offset: int | tf.Tensor = 0,
) -> tf.Tensor:
    """The original's WDHT baseline loss per anchor (see the module docstring).

    Args:
        codes: (B, D) tanh outputs x of the anchors.
        labels: (B, T) tag indicators of the anchors.
        tag_embeddings: (T, D) tag embeddings; normalised here.
        margin: m (the original's fixed margin, 0.7).
        ref_labels: (R, T) reference tags (they give a_j); defaults to `labels`.
        anchor_offset: row of the first anchor inside the references; the pair j = i is
            excluded by this position.

    Returns:
        (B,) float32; mean over the R references as anchors = the batch loss with
        untagged images left out (the original's loss when every image is tagged).
    """
    z = tf.math.l2_normalize(_as_float(codes), axis=1, epsilon=_NORMALIZE_EPSILON)  # (B, D)
    w = tf.math.l2_normalize(_as_float(tag_embeddings), axis=1, epsilon=_NORMALIZE_EPSILON)
    positive = _as_float(labels) > 0  # (B, T)
    ref_positive = positive if ref_labels is None else _as_float(ref_labels) > 0  # (R, T)
    num_anchors = tf.shape(positive)[0]
    num_refs = tf.shape(ref_positive)[0]

    own = tf.reduce_sum(z * _mean_positive_embedding(positive, w), axis=1)  # (B,)
    cross = tf.matmul(z, _mean_positive_embedding(ref_positive, w), transpose_b=True)  # (B, R)
    hinge = tf.nn.relu(margin + cross - own[:, None])  # (B, R)

    anchor_tagged = tf.reduce_any(positive, axis=1)  # (B,)
    ref_tagged = tf.reduce_any(ref_positive, axis=1)  # (R,)
    not_self = references.not_self(num_anchors, num_refs, anchor_offset)  # (B, R)
    mask = anchor_tagged[:, None] & ref_tagged[None, :] & not_self  # (B, R)
    total = tf.reduce_sum(tf.where(mask, hinge, 0.0), axis=1)  # (B,)

    num_tagged = tf.reduce_sum(tf.cast(ref_tagged, tf.float32))
    normaliser = num_tagged * tf.maximum(num_tagged - 1.0, 0.0)
    return tf.cast(num_refs, tf.float32) * tf.math.divide_no_nan(total, normaliser)


def wsdhq_quantization_loss(
    codes: tf.Tensor,
    codebooks: tf.Tensor,
    assignments: tf.Tensor,
    tag_embeddings: tf.Tensor | np.ndarray,
    form: str = "faithful",
) -> tf.Tensor:
    """Tag-space quantization error ||E (x - sum_m C[m K + b_m])||^2 per example.

    Args:
        codes: (B, D) tanh outputs x.
        codebooks: (M * K, D) stacked codebooks C; no gradient reaches them.
        assignments: (B, M) integer codeword index b_m in 0..K-1 for each codebook.
        tag_embeddings: (T, D) RAW tag embeddings E.
        form: "faithful" (raw x, as coded), "hypersphere" (x / ||x||, as in the paper) or
            "product" (each of the M sub-vectors of x normalised; M must divide D).

    Returns:
        (B,) float32.
    """
    _check_choice("quantization_form", form, QUANTIZATION_FORMS)
    x = _as_float(codes)  # (B, D)
    assignments = tf.cast(assignments, tf.int32)  # (B, M)
    num_books = tf.shape(assignments)[1]
    if form == "hypersphere":
        x = tf.math.l2_normalize(x, axis=1, epsilon=_NORMALIZE_EPSILON)
    elif form == "product":
        subvectors = tf.reshape(x, [tf.shape(x)[0], num_books, -1])  # (B, M, D / M)
        subvectors = tf.math.l2_normalize(subvectors, axis=2, epsilon=_NORMALIZE_EPSILON)
        x = tf.reshape(subvectors, tf.shape(x))
    codebooks = tf.stop_gradient(_as_float(codebooks))  # (M*K, D)
    num_codewords = tf.shape(codebooks)[0] // tf.maximum(num_books, 1)
    rows = assignments + tf.range(num_books)[None, :] * num_codewords  # (B, M)
    reconstruction = tf.reduce_sum(tf.gather(codebooks, rows), axis=1)  # (B, D)
    projected = tf.matmul(x - reconstruction, _as_float(tag_embeddings), transpose_b=True)  # (B, T)
    return tf.reduce_sum(tf.square(projected), axis=1)


class WSDHQLoss(HashingLoss):
    """WSDHQ loss layer; owns the quantizer state as non-trainable weights.

    Weights: `codebooks` (M * K, D) float32, `train_codes` (N, M) int32 (the stored codes of
    the training images, refreshed by the quantizer every two epochs) and
    `quantization_active` (0 until `set_quantizer`, then 1: the original's lambda = 0
    before the first codebook initialisation).

    `call` returns {"loss", "embedding", "quantization"}, each (B,), with
    loss = embedding + quantization_weight * quantization; the quantization entry is
    already multiplied by quantization_active (so it is 0 before `set_quantizer`).

    Args:
        bits: 8 M; must be a multiple of 8 (log2 256 bits per codebook).
        num_classes: T, the number of merged tags.
        seed: unused (nothing is random); kept for the common loss signature.
        tag_embeddings: (T, D) fixed tag embeddings (the original's FinalTagEmbs).
        num_train_examples: N, rows of the stored training codes.
        gamma: exponent of the adaptive margin (1 in every published run).
        margin: "adaptive" (delta_pn) or "fixed" (`fixed_margin` for every pair).
        fixed_margin: the fixed margin, also the WDHT margin (0.7).
        hardest_negatives: keep only the k hardest negatives (`use_neg_sampling`).
        variant: "wsdhq" (margin loss) or "wdht" (the WDHT baseline loss).
        quantization_weight: lambda (1e-4).
        num_codewords: K per codebook (256).
        quantization_form: "faithful" (raw x), "hypersphere" (x / ||x||) or "product"
            (sub-vectors normalised; for the product quantizer, M must divide D).

    Reference:
        Wang et al., "Weakly Supervised Deep Hyperspherical Quantization for Image
        Retrieval", AAAI 2021.
    """

    hyperparameters = (
        "tag_embeddings",
        "num_train_examples",
        "gamma",
        "margin",
        "fixed_margin",
        "hardest_negatives",
        "variant",
        "quantization_weight",
        "num_codewords",
        "quantization_form",
    )

    def __init__(
        self,
        bits: int,
        num_classes: int,
        seed: int = 0,
        *,
        tag_embeddings: np.ndarray | list,
        num_train_examples: int,
        gamma: float = 1.0,
        margin: str = "adaptive",
        fixed_margin: float = 0.7,
        hardest_negatives: bool = False,
        variant: str = "wsdhq",
        quantization_weight: float = 1e-4,
        num_codewords: int = 256,
        quantization_form: str = "faithful",
        **kwargs: Any,
    ):
        super().__init__(bits, num_classes, seed, **kwargs)
        _check_choice("margin", margin, MARGINS)
        _check_choice("variant", variant, VARIANTS)
        _check_choice("quantization_form", quantization_form, QUANTIZATION_FORMS)
        if int(bits) < 8 or int(bits) % 8:
            raise ValueError(
                f"bits must be a positive multiple of 8 (8 bits per codebook); got {bits}."
            )
        embeddings = np.asarray(tag_embeddings, np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != int(num_classes):
            raise ValueError(
                f"tag_embeddings must be (T, D) with T == num_classes={num_classes}; got shape "
                f"{embeddings.shape}."
            )
        if int(num_train_examples) < 1 or int(num_codewords) < 1:
            raise ValueError(
                f"num_train_examples and num_codewords must be >= 1; got {num_train_examples} "
                f"and {num_codewords}."
            )
        if quantization_form == "product" and embeddings.shape[1] % (int(bits) // 8):
            raise ValueError(
                f"quantization_form='product' splits D={embeddings.shape[1]} into M="
                f"{int(bits) // 8} sub-spaces; M must divide D."
            )
        self.tag_embeddings = embeddings
        self.num_train_examples = int(num_train_examples)
        self.gamma = float(gamma)
        self.margin = margin
        self.fixed_margin = float(fixed_margin)
        self.hardest_negatives = bool(hardest_negatives)
        self.variant = variant
        self.quantization_weight = float(quantization_weight)
        self.num_codewords = int(num_codewords)
        self.quantization_form = quantization_form
        self.num_codebooks = self.bits // 8
        self.embedding_dim = embeddings.shape[1]
        self.margins = (
            adaptive_margins(embeddings, self.gamma) if margin == "adaptive" else self.fixed_margin
        )

        self.codebooks = self.add_weight(
            name="codebooks",
            shape=(self.num_codebooks * self.num_codewords, self.embedding_dim),
            initializer=keras.initializers.Zeros(),
            trainable=False,
        )
        self.train_codes = self.add_weight(
            name="train_codes",
            shape=(self.num_train_examples, self.num_codebooks),
            initializer=keras.initializers.Zeros(),
            dtype="int32",
            trainable=False,
        )
        self.quantization_active = self.add_weight(
            name="quantization_active",
            shape=(),
            initializer=keras.initializers.Zeros(),
            trainable=False,
        )

    def set_quantizer(self, codebooks: np.ndarray, train_codes: np.ndarray) -> None:
        """Stores new codebooks and training codes and switches the quantization term on.

        Args:
            codebooks: (M, K, D) or (M * K, D) codewords.
            train_codes: (N, M) integer codeword indices in 0..K-1.
        """
        m, k, d = self.num_codebooks, self.num_codewords, self.embedding_dim
        books = np.asarray(codebooks, np.float32)
        if books.shape == (m, k, d):
            books = books.reshape(m * k, d)
        if books.shape != (m * k, d):
            raise ValueError(
                f"codebooks must be ({m}, {k}, {d}) or ({m * k}, {d}); got {books.shape}."
            )
        codes = np.asarray(train_codes)
        if codes.shape != (self.num_train_examples, m) or not np.issubdtype(
            codes.dtype, np.integer
        ):
            raise ValueError(
                f"train_codes must be integer ({self.num_train_examples}, {m}); got "
                f"{codes.dtype} {codes.shape}."
            )
        if codes.size and (codes.min() < 0 or codes.max() >= k):
            raise ValueError(
                f"train_codes must lie in 0..{k - 1}; got {codes.min()}..{codes.max()}."
            )
        self.codebooks.assign(books)
        self.train_codes.assign(codes.astype(np.int32))
        self.quantization_active.assign(1.0)

    def _quantization(self, codes: tf.Tensor, example_index: tf.Tensor | None) -> tf.Tensor:
        active = tf.convert_to_tensor(self.quantization_active)
        if example_index is None:
            if tf.executing_eagerly():
                if float(active) > 0:
                    raise ValueError(
                        "The quantization term is active (set_quantizer was called), so call() "
                        "needs example_index: the rows of train_codes of this batch."
                    )
                return tf.zeros(tf.shape(codes)[:1])
            # In a graph the variable's value is only known when the step runs.
            check = tf.debugging.assert_equal(
                active, 0.0, message="WSDHQLoss: example_index is required once set_quantizer ran."
            )
            with tf.control_dependencies([check]):
                return tf.zeros(tf.shape(codes)[:1])
        assignments = tf.gather(tf.convert_to_tensor(self.train_codes), example_index)  # (B, M)
        error = wsdhq_quantization_loss(
            codes,
            tf.convert_to_tensor(self.codebooks),
            assignments,
            self.tag_embeddings,
            self.quantization_form,
        )
        return active * error

    def terms(self, codes, labels, refs, example_index=None) -> dict[str, tf.Tensor]:
        # Both variants compare anchors with tags only; the references give the
        # normaliser (and WDHT's a_j) through their labels, so their codes are not needed.
        if self.variant == "wdht":
            embedding = wdht_loss(
                codes,
                labels,
                self.tag_embeddings,
                self.fixed_margin,
                ref_labels=refs.labels,
                anchor_offset=refs.anchor_offset,
            )
        else:
            embedding = wsdhq_embedding_loss(
                codes,
                labels,
                self.tag_embeddings,
                self.margins,
                ref_labels=refs.labels,
                hardest_negatives=self.hardest_negatives,
            )
        quantization = self._quantization(codes, example_index)
        loss = embedding + self.quantization_weight * quantization
        return {"loss": loss, "embedding": embedding, "quantization": quantization}
