"""Asymmetric quantizer distance (AQD) search and its mAP, in bounded memory.

Scores, larger = closer (docs/methods.md, "WSDHQ: AQD search"; docs/evaluation.md, "Ranking keys"):
- AQD (WSDHQ's reported ranking): score(q, n) = <x_q, x_hat_n>, the inner product of
  the continuous, un-normalised query feature with the item's reconstruction. With
  lookup tables T[q, m, k] = <x_q, C_m[k]> (additive, full-D codewords) or
  <x_{q,m}, C_m[k]> (product, sub-space codewords, x_{q,m} the m-th sub-vector),
      score(q, n) = sum_m T[q, m, idx[n, m]],
  computed by gathers from the tables: no (N, D) reconstruction of the database is
  ever built.
- SQD (diagnosis): <x_hat_q, x_hat_n>, i.e. AQD with the query's reconstruction.
- Features (diagnosis): <x_q, x_n>, unquantized.

Speed: codebooks are taken in pairs (m, m+1) and their tables combined into one
(K * K,) table per query, T2[q, k * K + k'] = T[q, m, k] + T[q, m+1, k'], so each item
costs M / 2 gathers from a table that still fits in the L2 cache (256 KiB for K = 256)
instead of M gathers. The sum is therefore taken in the order (T_0 + T_1) + (T_2 + T_3)
+ ...; scores match the direct sum up to float32 rounding.

mAP: the evaluator's AQD scorer (`wsdhash.eval.scorers.AQDScorer`) asks this module
for the scores of one block of queries at a time, so the (Q, N) matrix (1.6 GB at
NUS-WIDE scale, 2,100 x 193,734) is never built; `wsdhash.eval.aqd_metrics` has the
AQD, SQD and feature mAP functions. This module imports numpy only.

Shapes: Q queries, N database items, M codebooks, K codewords per codebook, D
dimension, S = D / M sub-space dimension, C classes.

Reference:
  Jegou, Douze & Schmid, "Product Quantization for Nearest Neighbor Search", TPAMI
  2011 (asymmetric distance computation).
  Wang et al., "Weakly Supervised Deep Hyperspherical Quantization for Image
  Retrieval", AAAI 2021 (AQD mAP@5000).
"""

from __future__ import annotations

import numpy as np

LAYOUTS = ("additive", "product")


# ------------------------------------------------------------------ layouts
def check_codebooks(codebooks: np.ndarray) -> np.ndarray:
    """Validates (M, K, D or S) codebooks and returns them as float32."""
    codebooks = np.asarray(codebooks)
    if codebooks.ndim != 3 or not np.issubdtype(codebooks.dtype, np.number):
        raise ValueError(
            f"codebooks must be a numeric (M, K, D) array; got dtype {codebooks.dtype} and "
            f"shape {codebooks.shape}."
        )
    if codebooks.shape[1] > 256:
        raise ValueError(f"At most 256 codewords per codebook (uint8); got {codebooks.shape[1]}.")
    return codebooks.astype(np.float32, copy=False)


def infer_layout(codebooks: np.ndarray, dimension: int, layout: str | None = None) -> str:
    """ "additive" when codewords have D dimensions, "product" when they have D / M.

    Args:
      codebooks: (M, K, D) additive or (M, K, D / M) product codebooks.
      dimension: D of the query features.
      layout: forces a layout (checked against the shapes); None infers it. With M = 1
        both layouts coincide.

    Returns:
      The layout.
    """
    num_codebooks, _, width = codebooks.shape
    fits = {"additive": width == dimension, "product": width * num_codebooks == dimension}
    if layout is not None:
        if layout not in LAYOUTS:
            raise ValueError(f"Unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}.")
        if not fits[layout]:
            raise ValueError(
                f"{layout} codebooks of shape {codebooks.shape} do not fit features of D={dimension}."
            )
        return layout
    if fits["additive"]:
        return "additive"
    if fits["product"]:
        return "product"
    raise ValueError(
        f"Codebooks of shape {codebooks.shape} fit neither additive (M, K, D={dimension}) nor "
        f"product (M, K, D/M={dimension / num_codebooks:g}) layout."
    )


def check_indices(indices: np.ndarray, codebooks: np.ndarray, name: str = "indices") -> np.ndarray:
    """Validates (N, M) codeword indices against (M, K, .) codebooks."""
    indices = np.asarray(indices)
    num_codebooks, num_codewords, _ = codebooks.shape
    if indices.ndim != 2 or indices.shape[1] != num_codebooks:
        raise ValueError(
            f"{name} must be (N, M={num_codebooks}) codeword indices; got shape {indices.shape}."
        )
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"{name} must be integers (uint8); got dtype {indices.dtype}.")
    if indices.size and (indices.min() < 0 or indices.max() >= num_codewords):
        raise ValueError(f"{name} must lie in 0..{num_codewords - 1}.")
    return indices


def check_features(features: np.ndarray, name: str) -> np.ndarray:
    """(rows, D) numeric features as float32, or a ValueError naming them."""
    features = np.asarray(features)
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
        raise ValueError(
            f"{name} must be a numeric (rows, D) array; got dtype {features.dtype} and shape "
            f"{features.shape}."
        )
    return features.astype(np.float32, copy=False)


_check_features = check_features  # the name before it was public


def reconstruct(
    indices: np.ndarray, codebooks: np.ndarray, *, layout: str = "additive"
) -> np.ndarray:
    """(N, D) reconstructions: sum (additive) or concatenation (product) of codewords.

    Meant for queries and small sets; the database is never reconstructed here.
    """
    codebooks = check_codebooks(codebooks)
    indices = check_indices(indices, codebooks).astype(np.intp)
    parts = codebooks[np.arange(codebooks.shape[0]), indices]  # (N, M, D or S)
    if layout == "additive":
        return parts.sum(axis=1)
    if layout == "product":
        return parts.reshape(len(indices), -1)
    raise ValueError(f"Unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}.")


# ------------------------------------------------------------------- scores
def lookup_tables(
    query_features: np.ndarray, codebooks: np.ndarray, *, layout: str | None = None
) -> np.ndarray:
    """(Q, M, K) float32 tables T[q, m, k] = <x_q (or its m-th sub-vector), C_m[k]>."""
    codebooks = check_codebooks(codebooks)
    queries = check_features(query_features, "query_features")
    layout = infer_layout(codebooks, queries.shape[1], layout)
    if layout == "additive":
        return np.einsum("qd,mkd->qmk", queries, codebooks, optimize=True)
    subvectors = queries.reshape(len(queries), codebooks.shape[0], -1)  # (Q, M, S)
    return np.einsum("qms,mks->qmk", subvectors, codebooks, optimize=True)


class PairedCodes:
    """Database codes regrouped for table gathers: one flat index per codebook pair."""

    def __init__(self, indices: np.ndarray, num_codewords: int):
        indices = indices.astype(np.intp)
        self.num_items = len(indices)
        self.num_codewords = num_codewords
        self.groups: list[tuple[tuple[int, ...], np.ndarray]] = []
        for m in range(0, indices.shape[1], 2):
            if m + 1 < indices.shape[1]:
                flat = indices[:, m] * num_codewords + indices[:, m + 1]  # (N,)
                self.groups.append(((m, m + 1), flat))
            else:
                self.groups.append(((m,), np.ascontiguousarray(indices[:, m])))

    def scores(self, tables: np.ndarray) -> np.ndarray:
        """(Q, N) float32 sum_m T[q, m, idx[n, m]] from (Q, M, K) tables."""
        scores = None
        for members, flat in self.groups:
            if len(members) == 2:
                a, b = members
                table = (tables[:, a, :, None] + tables[:, b, None, :]).reshape(len(tables), -1)
            else:
                table = np.ascontiguousarray(tables[:, members[0]])
            part = np.take(table, flat, axis=1)  # (Q, N)
            if scores is None:
                scores = part
            else:
                scores += part
        return scores


def scores_from_tables(tables: np.ndarray, database_indices: np.ndarray) -> np.ndarray:
    """(Q, N) float32 scores sum_m T[q, m, idx[n, m]] from (Q, M, K) lookup tables."""
    tables = np.asarray(tables, dtype=np.float32)
    if tables.ndim != 3:
        raise ValueError(f"tables must be (Q, M, K); got shape {tables.shape}.")
    indices = check_indices(database_indices, np.empty((tables.shape[1], tables.shape[2], 0)))
    return PairedCodes(indices, tables.shape[2]).scores(tables)


_DatabaseIndex = PairedCodes  # the name before PairedCodes was public


def aqd_scores(
    query_features: np.ndarray,
    database_indices: np.ndarray,
    codebooks: np.ndarray,
    *,
    layout: str | None = None,
) -> np.ndarray:
    """(Q, N) float32 AQD scores <x_q, x_hat_n>; the whole matrix, for small Q x N."""
    codebooks = check_codebooks(codebooks)
    check_indices(database_indices, codebooks, "database_indices")
    return scores_from_tables(
        lookup_tables(query_features, codebooks, layout=layout), database_indices
    )


def sqd_scores(
    query_indices: np.ndarray,
    database_indices: np.ndarray,
    codebooks: np.ndarray,
    *,
    layout: str = "additive",
) -> np.ndarray:
    """(Q, N) float32 SQD scores <x_hat_q, x_hat_n> (AQD of the query reconstructions)."""
    queries = reconstruct(query_indices, codebooks, layout=layout)
    return aqd_scores(queries, database_indices, codebooks, layout=layout)


def feature_scores(query_features: np.ndarray, database_features: np.ndarray) -> np.ndarray:
    """(Q, N) float32 unquantized scores <x_q, x_n>."""
    queries = check_features(query_features, "query_features")
    database = check_features(database_features, "database_features")
    if queries.shape[1] != database.shape[1]:
        raise ValueError(
            f"Queries have D={queries.shape[1]}, database items D={database.shape[1]}."
        )
    return queries @ database.T
