"""Retrieval metrics of quantization codes: AQD (WSDHQ's ranking), SQD and features.

Each is the one evaluator (`metrics.evaluate_retrieval`) with a scorer from
`scorers.py` and an `EvalProtocol`, so every convention (ties and tie bounds, empty
queries, R, precision@N, bounded memory, threads) is the same as for binary codes:

- AQD: continuous (un-normalised) query features against the database's codeword
  indices, score <x_q, x_hat_n>. WSDHQ's published figures are
  mAP@5000[ties=index,empty=skip]; the library default is empty="zero".
- SQD (diagnosis): AQD with the queries' own reconstructions.
- Features (diagnosis): <x_q, x_n> unquantized.
"""

from __future__ import annotations

import numpy as np

from wsdhash.eval import metrics, scorers
from wsdhash.eval.protocol import EvalProtocol


def aqd_evaluate(
    query_features: np.ndarray,
    database_indices: np.ndarray,
    codebooks: np.ndarray,
    labels: tuple[np.ndarray, np.ndarray],
    protocol: EvalProtocol,
    *,
    layout: str | None = None,
    num_threads: int | None = None,
    query_chunk_size: int | None = None,
) -> metrics.RetrievalMetrics:
    """AQD retrieval metrics under `protocol` (no radius figures: AQD is not Hamming).

    Args:
      query_features: (Q, D) continuous query features.
      database_indices: (N, M) uint8 codeword indices of the database.
      codebooks: (M, K, D) additive or (M, K, D / M) product codebooks.
      labels: ((Q, C), (N, C)) 0/1 query and database labels.
      protocol: the conventions (`EvalProtocol`).
      layout: "additive" or "product"; None infers it from the shapes.
      num_threads, query_chunk_size: as in `metrics.evaluate_retrieval`.
    """
    scorer = scorers.AQDScorer(query_features, database_indices, codebooks, layout)
    query_labels, database_labels = labels
    if scorer.num_queries != len(query_labels) or scorer.num_items != len(database_labels):
        raise ValueError(
            f"{scorer.num_queries} query features / {len(query_labels)} query labels and "
            f"{scorer.num_items} database codes / {len(database_labels)} database labels "
            "must match."
        )
    return metrics.evaluate_retrieval(
        scorer, labels, protocol, num_threads=num_threads, query_chunk_size=query_chunk_size
    )


def aqd_mean_average_precision(
    query_features: np.ndarray,
    database_indices: np.ndarray,
    codebooks: np.ndarray,
    labels: tuple[np.ndarray, np.ndarray],
    protocol: EvalProtocol,
    **kwargs,
) -> float:
    """AQD mAP@R under `protocol.map_only()` (keyword arguments as `aqd_evaluate`)."""
    return aqd_evaluate(
        query_features, database_indices, codebooks, labels, protocol.map_only(), **kwargs
    ).map


def sqd_mean_average_precision(
    query_indices: np.ndarray,
    database_indices: np.ndarray,
    codebooks: np.ndarray,
    labels: tuple[np.ndarray, np.ndarray],
    protocol: EvalProtocol,
    *,
    layout: str = "additive",
    **kwargs,
) -> float:
    """SQD mAP@R: AQD with the queries' reconstructions (keyword arguments as AQD's)."""
    from wsdhash.quantization.aqd import reconstruct

    queries = reconstruct(query_indices, codebooks, layout=layout)
    return aqd_mean_average_precision(
        queries, database_indices, codebooks, labels, protocol, layout=layout, **kwargs
    )


def feature_mean_average_precision(
    query_features: np.ndarray,
    database_features: np.ndarray,
    labels: tuple[np.ndarray, np.ndarray],
    protocol: EvalProtocol,
    *,
    num_threads: int | None = None,
    query_chunk_size: int | None = None,
) -> float:
    """mAP@R of the unquantized scores <x_q, x_n> under `protocol.map_only()`."""
    return metrics.evaluate_retrieval(
        scorers.FeatureScorer(query_features, database_features),
        labels,
        protocol.map_only(),
        num_threads=num_threads,
        query_chunk_size=query_chunk_size,
    ).map
