"""Asymmetric quantizer distance (AQD) search and its mAP, in bounded memory.

Scores, larger = closer (METHODS.md §2.9, EVALUATION.md):
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

mAP: the evaluator (`wsdhash.eval.evaluate_retrieval`) ranks a (Q, N) score matrix; at
NUS-WIDE scale (2,100 x 193,734) that matrix alone is 1.6 GB. Here scores are built
for one chunk of queries at a time and each chunk is evaluated on its own; per-query
APs do not depend on the other queries (and "random" ties use one database
permutation per seed, the same for every chunk), so concatenating the chunks'
per-query APs and averaging them as the evaluator does ("zero": over all queries;
"skip": over queries with a relevant item in the top R, 0.0 if none) gives exactly
the single-call result. Chunks run on a small thread pool (numpy releases the GIL in
the gathers, partitions and sorts).

Shapes: Q queries, N database items, M codebooks, K codewords per codebook, D
dimension, S = D / M sub-space dimension, C classes.

Reference:
  Jegou, Douze & Schmid, "Product Quantization for Nearest Neighbor Search", TPAMI
  2011 (asymmetric distance computation).
  Wang et al., "Weakly Supervised Deep Hyperspherical Quantization for Image
  Retrieval", AAAI 2021 (AQD mAP@5000).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from wsdhash.eval import metrics as metrics_lib
from wsdhash.eval import ranking

LAYOUTS = ("additive", "product")

# Bytes of float32 scores per query chunk; with the evaluator's temporaries a chunk
# stays around a few hundred MiB at most.
_CHUNK_SCORE_BYTES = 64 * 2**20
_MAX_DEFAULT_THREADS = 4


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


def _check_features(features: np.ndarray, name: str) -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
        raise ValueError(
            f"{name} must be a numeric (rows, D) array; got dtype {features.dtype} and shape "
            f"{features.shape}."
        )
    return features.astype(np.float32, copy=False)


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
    queries = _check_features(query_features, "query_features")
    layout = infer_layout(codebooks, queries.shape[1], layout)
    if layout == "additive":
        return np.einsum("qd,mkd->qmk", queries, codebooks, optimize=True)
    subvectors = queries.reshape(len(queries), codebooks.shape[0], -1)  # (Q, M, S)
    return np.einsum("qms,mks->qmk", subvectors, codebooks, optimize=True)


class _DatabaseIndex:
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
    return _DatabaseIndex(indices, tables.shape[2]).scores(tables)


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
    queries = _check_features(query_features, "query_features")
    database = _check_features(database_features, "database_features")
    if queries.shape[1] != database.shape[1]:
        raise ValueError(
            f"Queries have D={queries.shape[1]}, database items D={database.shape[1]}."
        )
    return queries @ database.T


# --------------------------------------------------------------------- mAP
def default_query_chunk_size(num_items: int) -> int:
    """Queries per chunk so that the chunk's float32 scores take about 64 MiB."""
    return max(1, _CHUNK_SCORE_BYTES // (4 * max(1, num_items)))


def _default_threads() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # Not on Linux.
        available = os.cpu_count() or 1
    return max(1, min(_MAX_DEFAULT_THREADS, available))


def evaluate_in_query_chunks(
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    chunk_scores: Callable[[int, int], np.ndarray],
    *,
    topk: int | None = 5000,
    ties: str = "index",
    empty: str = "zero",
    seed: int = 0,
    precision_at: tuple[int, ...] = (),
    query_chunk_size: int | None = None,
    num_threads: int | None = None,
) -> metrics_lib.RetrievalMetrics:
    """Evaluates (rows, N) score blocks one query chunk at a time (module doc).

    Args:
      query_labels: (Q, C) 0/1 ground-truth labels.
      database_labels: (N, C) 0/1 ground-truth labels.
      chunk_scores: `chunk_scores(start, stop)` -> (stop - start, N) scores of queries
        start..stop-1, larger = closer.
      topk: R of mAP@R; None for the whole database.
      ties: "index", "random", "optimistic" or "pessimistic" (passed to the evaluator).
      empty: "zero" or "skip" for queries with no relevant item in the top R.
      seed: seed of "random" ties.
      precision_at: N of precision@N (averaged over all queries).
      query_chunk_size: queries per chunk; default about 64 MiB of scores.
      num_threads: chunks evaluated concurrently; default min(4, available cores).

    Returns:
      A `RetrievalMetrics` (no tie bounds, no Hamming-radius figures) whose mAP,
      per-query APs and `num_scored_queries` equal those of one evaluator call on the
      whole score matrix.
    """
    ranking.check_tie_policy(ties)
    metrics_lib.check_empty_policy(empty)
    topk = ranking.check_topk(topk)
    query_labels = np.asarray(query_labels)
    database_labels = np.asarray(database_labels)
    if query_labels.ndim != 2 or database_labels.ndim != 2:
        raise ValueError(
            f"Labels must be (rows, C); got {query_labels.shape} and {database_labels.shape}."
        )
    num_queries, num_items = len(query_labels), len(database_labels)
    if num_queries == 0 or num_items == 0:
        raise ValueError("Need at least one query and one database item.")
    chunk = query_chunk_size or default_query_chunk_size(num_items)
    if chunk < 1:
        raise ValueError(f"query_chunk_size must be >= 1; got {query_chunk_size}.")
    bounds = [(s, min(s + chunk, num_queries)) for s in range(0, num_queries, chunk)]

    def run(chunk_bounds: tuple[int, int]) -> metrics_lib.RetrievalMetrics:
        start, stop = chunk_bounds
        scores = chunk_scores(start, stop)
        if scores.shape != (stop - start, num_items):
            raise ValueError(
                f"Scores of queries {start}..{stop - 1} have shape {scores.shape}; expected "
                f"{(stop - start, num_items)}."
            )
        return metrics_lib.evaluate_retrieval(
            query_labels[start:stop],
            database_labels,
            scores=scores,
            topk=topk,
            ties=ties,
            empty=empty,
            seed=seed,
            precision_at=precision_at,
            hamming_radius=None,
            radius_metrics=False,
            num_threads=1,  # Parallelism is over chunks here.
        )

    threads = min(num_threads or _default_threads(), len(bounds))
    if threads == 1:
        results = [run(b) for b in bounds]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(run, bounds))

    per_query = np.concatenate([r.average_precisions for r in results])  # (Q,), NaN = skipped.
    num_scored = sum(r.num_scored_queries for r in results)
    if empty == "zero":
        value = float(per_query.mean())
    else:
        # As the evaluator: the mean over scored queries, 0.0 when none is left.
        value = float(np.nanmean(per_query)) if num_scored else 0.0
    sizes = np.array([stop - start for start, stop in bounds], dtype=np.float64)
    precision_curve = {
        n: float(sum(r.precision_at_n[n] * size for r, size in zip(results, sizes)) / num_queries)
        for n in results[0].precision_at_n
    }
    return metrics_lib.RetrievalMetrics(
        map=value,
        map_name=metrics_lib.metric_name(topk, ties, empty, seed),
        topk=topk,
        ties=ties,
        empty=empty,
        seed=seed,
        average_precisions=per_query,
        num_scored_queries=int(num_scored),
        precision_at_n=precision_curve,
    )


def aqd_evaluate(
    query_features: np.ndarray,
    database_indices: np.ndarray,
    codebooks: np.ndarray,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    *,
    layout: str | None = None,
    topk: int | None = 5000,
    ties: str = "index",
    empty: str = "zero",
    seed: int = 0,
    precision_at: tuple[int, ...] = (),
    query_chunk_size: int | None = None,
    num_threads: int | None = None,
) -> metrics_lib.RetrievalMetrics:
    """AQD retrieval metrics, computed query chunk by query chunk.

    Args:
      query_features: (Q, D) continuous query features (un-normalised, as WSDHQ).
      database_indices: (N, M) uint8 codeword indices of the database.
      codebooks: (M, K, D) additive or (M, K, D / M) product codebooks.
      query_labels, database_labels: (Q, C), (N, C) 0/1 labels.
      layout: "additive" or "product"; None infers it from the shapes.
      topk, ties, empty, seed, precision_at, query_chunk_size, num_threads: as in
        `evaluate_in_query_chunks`. WSDHQ's published figures are
        mAP@5000[ties=index,empty=skip]; the library default is empty="zero".

    Returns:
      A `RetrievalMetrics`.
    """
    codebooks = check_codebooks(codebooks)
    queries = _check_features(query_features, "query_features")
    layout = infer_layout(codebooks, queries.shape[1], layout)
    indices = check_indices(database_indices, codebooks, "database_indices")
    if len(queries) != len(query_labels) or len(indices) != len(database_labels):
        raise ValueError(
            f"{len(queries)} query features / {len(query_labels)} query labels and "
            f"{len(indices)} database codes / {len(database_labels)} database labels must match."
        )
    database = _DatabaseIndex(indices, codebooks.shape[1])

    def chunk_scores(start: int, stop: int) -> np.ndarray:
        return database.scores(lookup_tables(queries[start:stop], codebooks, layout=layout))

    return evaluate_in_query_chunks(
        query_labels,
        database_labels,
        chunk_scores,
        topk=topk,
        ties=ties,
        empty=empty,
        seed=seed,
        precision_at=precision_at,
        query_chunk_size=query_chunk_size,
        num_threads=num_threads,
    )


def aqd_mean_average_precision(
    query_features: np.ndarray,
    database_indices: np.ndarray,
    codebooks: np.ndarray,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    *,
    topk: int | None = 5000,
    ties: str = "index",
    empty: str = "zero",
    seed: int = 0,
    layout: str | None = None,
    query_chunk_size: int | None = None,
    num_threads: int | None = None,
    return_per_query: bool = False,
) -> float | tuple[float, np.ndarray]:
    """AQD mAP@R; see `aqd_evaluate` for the arguments.

    Returns:
      mAP@R, or (mAP@R, (Q,) per-query AP with NaN for skipped queries) when
      `return_per_query`.
    """
    result = aqd_evaluate(
        query_features,
        database_indices,
        codebooks,
        query_labels,
        database_labels,
        layout=layout,
        topk=topk,
        ties=ties,
        empty=empty,
        seed=seed,
        query_chunk_size=query_chunk_size,
        num_threads=num_threads,
    )
    return (result.map, result.average_precisions) if return_per_query else result.map


def sqd_mean_average_precision(
    query_indices: np.ndarray,
    database_indices: np.ndarray,
    codebooks: np.ndarray,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    *,
    layout: str = "additive",
    **kwargs,
) -> float | tuple[float, np.ndarray]:
    """SQD mAP@R: AQD with the queries' reconstructions (keyword arguments as AQD's)."""
    queries = reconstruct(query_indices, codebooks, layout=layout)
    return aqd_mean_average_precision(
        queries, database_indices, codebooks, query_labels, database_labels, layout=layout, **kwargs
    )


def feature_mean_average_precision(
    query_features: np.ndarray,
    database_features: np.ndarray,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    *,
    topk: int | None = 5000,
    ties: str = "index",
    empty: str = "zero",
    seed: int = 0,
    query_chunk_size: int | None = None,
    num_threads: int | None = None,
) -> float:
    """mAP@R of the unquantized scores <x_q, x_n>, chunk by chunk."""
    queries = _check_features(query_features, "query_features")
    database = _check_features(database_features, "database_features")
    if queries.shape[1] != database.shape[1]:
        raise ValueError(
            f"Queries have D={queries.shape[1]}, database items D={database.shape[1]}."
        )

    def chunk_scores(start: int, stop: int) -> np.ndarray:
        return queries[start:stop] @ database.T

    return evaluate_in_query_chunks(
        query_labels,
        database_labels,
        chunk_scores,
        topk=topk,
        ties=ties,
        empty=empty,
        seed=seed,
        query_chunk_size=query_chunk_size,
        num_threads=num_threads,
    ).map
