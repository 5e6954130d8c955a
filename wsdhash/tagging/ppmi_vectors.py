"""Tag vectors from tag co-occurrence alone: PPMI followed by a truncated SVD.

For tags known only as ids (or offline, without pretrained word vectors) the only
evidence about what a tag means is which other tags it appears with. Word2vec trained
on a few hundred tag lists has little to learn from; the count-based equivalent is
exact, needs no training and no seed (Levy & Goldberg showed skip-gram with negative
sampling factorises a shifted PMI matrix). Letters: N training images, T tags, d the
vector dimension.

1. Co-occurrence counts over the training images, Y the N x T 0/1 tag matrix:
   C = Y^T Y with the diagonal set to 0, so C_ab (a != b) is the number of images
   carrying both a and b. A tag is not its own context: the diagonal would only restate
   its frequency, and on the truncated SVD it dominates the rows of rare tags.
2. Probabilities from the pair counts, with S = sum_ab C_ab and c_a = sum_b C_ab:
   p(a, b) = C_ab / S, p(a) = c_a / S, and for the context b, optionally smoothed
   (`context_smoothing` alpha, Levy, Goldberg & Dagan 2015): p_alpha(b) = c_b^alpha /
   sum_b' c_b'^alpha. alpha = 1 (the default) is no smoothing and keeps the matrix
   symmetric; alpha < 1 raises rare contexts' probabilities and lowers their PMI.
3. PPMI_ab = max(log(p(a, b) / (p(a) p_alpha(b))), 0), natural log; 0 where C_ab = 0
   (log 0 = -inf) and on the diagonal. A row of zeros (a tag that never co-occurs
   with another tag) has no vector.
4. Truncated SVD: PPMI = U S V^T (exact, LAPACK), keep the d largest singular values
   (d is capped at T); the tag vectors are W = U_d S_d^p with p = `eigenvalue_power`
   (0.5 by default: W W^T approximates PPMI where it is positive semi-definite, and
   Levy et al. found p = 0.5 or 0 better than 1 for word similarity). The sign of each
   singular vector is fixed so that its largest-magnitude entry is positive, which makes
   the vectors a deterministic function of the tag matrix.

References:
    Church & Hanks, "Word Association Norms, Mutual Information, and Lexicography",
    1990. Levy & Goldberg, "Neural Word Embedding as Implicit Matrix Factorization",
    NeurIPS 2014. Levy, Goldberg & Dagan, "Improving Distributional Similarity with
    Lessons Learned from Word Embeddings", TACL 2015.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from gensim.models import KeyedVectors

from wsdhash.tagging.processing import candidate_keys, cooccurrence_counts

# The name `--vectors` takes for these vectors.
PPMI = "ppmi"


def pair_counts(tag_matrix: np.ndarray) -> np.ndarray:
    """C_ab = images carrying both a and b for a != b, C_aa = 0. int64 (T, T)."""
    counts = cooccurrence_counts(tag_matrix)
    np.fill_diagonal(counts, 0)
    return counts


def ppmi_matrix(tag_matrix: np.ndarray, *, context_smoothing: float = 1.0) -> np.ndarray:
    """Positive pointwise mutual information of tag pairs (module doc, steps 1-3).

    Args:
        tag_matrix: N x T 0/1 training tag matrix.
        context_smoothing: alpha in (0, 1] applied to the context marginal; 1 = none.

    Returns:
        float64 (T, T), non-negative, zero diagonal; symmetric when alpha = 1. All zero
        when no image carries two tags.
    """
    if not 0.0 < context_smoothing <= 1.0:
        raise ValueError(f"context smoothing must be in (0, 1], got {context_smoothing}.")
    counts = pair_counts(tag_matrix).astype(np.float64)
    total = counts.sum()
    if total == 0:
        return np.zeros_like(counts)
    marginal = counts.sum(axis=1)  # c_a: the pairs a takes part in
    p_word = marginal / total
    smoothed = marginal**context_smoothing
    p_context = smoothed / smoothed.sum()
    expected = p_word[:, None] * p_context[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        joint = np.where(counts > 0, counts / total, 1.0)
        pmi = np.log(joint / np.where(expected > 0, expected, 1.0))
    return np.where(counts > 0, np.maximum(pmi, 0.0), 0.0)


def truncated_svd(matrix: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `dim` leading singular triplets, signs fixed (module doc, step 4).

    Args:
        matrix: (T, T') real matrix.
        dim: how many triplets; capped at min(T, T').

    Returns:
        (U (T, d), s (d,) descending, Vt (d, T')) with U diag(s) Vt the best rank-d
        approximation of `matrix`.
    """
    if dim < 1:
        raise ValueError(f"SVD dimension must be >= 1, got {dim}.")
    u, s, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64), full_matrices=False)
    d = min(dim, len(s))
    u, s, vt = u[:, :d], s[:d], vt[:d]
    # Sign convention: each left singular vector's largest-magnitude entry is positive
    # (ties: the first); U s Vt is unchanged when both factors flip together.
    signs = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(d)])
    signs[signs == 0] = 1.0
    return u * signs, s, vt * signs[:, None]


def ppmi_svd_embeddings(
    tag_matrix: np.ndarray,
    *,
    dim: int = 100,
    eigenvalue_power: float = 0.5,
    context_smoothing: float = 1.0,
) -> np.ndarray:
    """W = U_d S_d^p of the PPMI matrix: one row per tag (module doc).

    Args:
        tag_matrix: N x T 0/1 training tag matrix.
        dim: d, capped at T.
        eigenvalue_power: p >= 0.
        context_smoothing: alpha of `ppmi_matrix`.

    Returns:
        float64 (T, min(d, T)); rows of tags that co-occur with no other tag are zero.
    """
    if eigenvalue_power < 0:
        raise ValueError(f"eigenvalue power must be >= 0, got {eigenvalue_power}.")
    ppmi = ppmi_matrix(tag_matrix, context_smoothing=context_smoothing)
    u, s, _ = truncated_svd(ppmi, dim)
    embeddings = u * s**eigenvalue_power
    # A tag without co-occurrences has a zero PPMI row; with p = 0 its U row need not be
    # zero (the basis of the null space is arbitrary), so it is zeroed explicitly.
    embeddings[~ppmi.any(axis=1)] = 0.0
    return embeddings


def ppmi_svd_vectors(
    vocabulary: Sequence[str],
    tag_matrix: np.ndarray,
    *,
    dim: int = 100,
    eigenvalue_power: float = 0.5,
    context_smoothing: float = 1.0,
) -> KeyedVectors:
    """PPMI-SVD tag vectors keyed by tag, usable wherever word vectors are.

    Each tag is keyed by its first lookup spelling (`processing.candidate_keys`), so
    `process_tags` finds it as written; tags without co-occurrences get no vector and
    are dropped there as "no_vector".

    Args:
        vocabulary: the T tags, the columns of `tag_matrix`.
        tag_matrix: N x T 0/1 training tag matrix.
        dim, eigenvalue_power, context_smoothing: see `ppmi_svd_embeddings`.

    Returns:
        `KeyedVectors` of dimension min(dim, T), float32.
    """
    tag_matrix = np.asarray(tag_matrix)
    if tag_matrix.ndim != 2 or tag_matrix.shape[1] != len(vocabulary):
        raise ValueError(
            f"The tag vocabulary has {len(vocabulary)} tags but the tag matrix has shape "
            f"{tag_matrix.shape}; it needs one column per tag."
        )
    embeddings = ppmi_svd_embeddings(
        tag_matrix,
        dim=dim,
        eigenvalue_power=eigenvalue_power,
        context_smoothing=context_smoothing,
    )
    keys, rows = [], []
    seen = set()
    for column, tag in enumerate(vocabulary):
        spellings = candidate_keys(tag)
        if spellings and spellings[0] not in seen and np.any(embeddings[column]):
            seen.add(spellings[0])
            keys.append(spellings[0])
            rows.append(embeddings[column])
    keyed = KeyedVectors(vector_size=embeddings.shape[1])
    if keys:
        keyed.add_vectors(keys, np.stack(rows).astype(np.float32))
    return keyed
