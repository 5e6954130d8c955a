"""Retrieval metrics of quantization codes: AQD (WSDHQ's ranking), SQD and features.

Each is the one evaluator (`metrics.evaluate_retrieval`) with a scorer from
`scorers.py`, so every convention (ties and tie bounds, empty queries, R, precision@N,
bounded memory, threads) is the same as for binary codes:

- AQD: continuous (un-normalised) query features against the database's codeword
  indices, score <x_q, x_hat_n>. WSDHQ's published figures are
  mAP@5000[ties=index,empty=skip]; the library default is empty="zero".
- SQD (diagnosis): AQD with the queries' own reconstructions.
- Features (diagnosis): <x_q, x_n> unquantized.
"""

from __future__ import annotations

import numpy as np

from wsdhash.eval import metrics, scorers


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
    tie_bounds: bool = False,
    num_threads: int | None = None,
    query_chunk_size: int | None = None,
) -> metrics.RetrievalMetrics:
    """AQD retrieval metrics.

    Args:
      query_features: (Q, D) continuous query features.
      database_indices: (N, M) uint8 codeword indices of the database.
      codebooks: (M, K, D) additive or (M, K, D / M) product codebooks.
      query_labels, database_labels: (Q, C), (N, C) 0/1 labels.
      layout: "additive" or "product"; None infers it from the shapes.
      topk, ties, empty, seed, precision_at, tie_bounds, num_threads,
        query_chunk_size: as in `metrics.evaluate_retrieval`.
    """
    scorer = scorers.AQDScorer(query_features, database_indices, codebooks, layout)
    if scorer.num_queries != len(query_labels) or scorer.num_items != len(database_labels):
        raise ValueError(
            f"{scorer.num_queries} query features / {len(query_labels)} query labels and "
            f"{scorer.num_items} database codes / {len(database_labels)} database labels "
            "must match."
        )
    return metrics.evaluate_retrieval(
        query_labels,
        database_labels,
        scorer=scorer,
        topk=topk,
        ties=ties,
        empty=empty,
        seed=seed,
        precision_at=precision_at,
        hamming_radius=None,
        radius_metrics=False,
        tie_bounds=tie_bounds,
        num_threads=num_threads,
        query_chunk_size=query_chunk_size,
    )


def aqd_mean_average_precision(
    query_features, database_indices, codebooks, query_labels, database_labels, *,
    return_per_query: bool = False, **kwargs,
) -> float | tuple[float, np.ndarray]:  # fmt: skip
    """AQD mAP@R (keyword arguments as `aqd_evaluate`); with `return_per_query`, also
    the (Q,) per-query APs (NaN for skipped queries)."""
    result = aqd_evaluate(
        query_features, database_indices, codebooks, query_labels, database_labels, **kwargs
    )
    return (result.map, result.average_precisions) if return_per_query else result.map


def sqd_mean_average_precision(
    query_indices, database_indices, codebooks, query_labels, database_labels, *,
    layout: str = "additive", **kwargs,
) -> float | tuple[float, np.ndarray]:  # fmt: skip
    """SQD mAP@R: AQD with the queries' reconstructions (keyword arguments as AQD's)."""
    from wsdhash.quantization.aqd import reconstruct

    queries = reconstruct(query_indices, codebooks, layout=layout)
    return aqd_mean_average_precision(
        queries, database_indices, codebooks, query_labels, database_labels, layout=layout,
        **kwargs,
    )  # fmt: skip


def feature_mean_average_precision(
    query_features, database_features, query_labels, database_labels, *,
    topk: int | None = 5000, ties: str = "index", empty: str = "zero", seed: int = 0,
    num_threads: int | None = None, query_chunk_size: int | None = None,
) -> float:  # fmt: skip
    """mAP@R of the unquantized scores <x_q, x_n>."""
    return metrics.evaluate_retrieval(
        query_labels,
        database_labels,
        scorer=scorers.FeatureScorer(query_features, database_features),
        topk=topk,
        ties=ties,
        empty=empty,
        seed=seed,
        precision_at=(),
        hamming_radius=None,
        radius_metrics=False,
        num_threads=num_threads,
        query_chunk_size=query_chunk_size,
    ).map
