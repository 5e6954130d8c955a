"""Retrieval metrics: mAP@R, precision@N, precision-recall over Hamming radius.

Conventions (docs/evaluation.md), each a field of the one `EvalProtocol` value
(wsdhash/eval/protocol.py) that `evaluate_retrieval(scorer, labels, protocol)` takes:
- Relevance: query and item share at least one ground-truth label.
- Ranking: Hamming distance ascending, or scores descending; tie policy `ties` as in
  `wsdhash.eval.ranking` ("index" default, "random" = one seeded database permutation
  per call, "optimistic", "pessimistic").
- mAP@R: AP@R = (1/X) sum_{j<=R} rel_j * (#relevant in ranks 1..j) / j, X = #relevant
  in the top R. R = None is the whole database; R > N is clipped to N. Queries with
  X = 0 follow `empty`: "zero" (AP = 0, default) or "skip" (left out of the mean).
  If "skip" leaves no query at all, mAP is reported as 0.0 (not NaN, which JSON cannot
  carry); `num_scored_queries` is then 0, which says why.
- precision@N: (#relevant in the top N) / N under the same tie policy; N larger than
  the database is clipped to N_db, so it becomes the fraction of relevant items.
- Precision-recall over Hamming radius r = 0..K: a query retrieves every item within
  distance r (ties do not matter). Precision is 0 for a query that retrieves nothing
  within r, and recall is 0 for a query with no relevant item in the whole database;
  both are averaged over all queries. Precision within radius 2 follows the same rule.

Work is done in chunks of queries sized so that temporaries stay around 100 MiB per
worker whatever the database size, spread over a small thread pool (numpy releases
the GIL in the heavy loops).

Shapes: Q queries, N database items, K bits, C classes, R ranks.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from wsdhash.eval import ranking, scorers
from wsdhash.eval import relevance as relevance_lib
from wsdhash.eval.protocol import TIE_BOUND_TOLERANCE, EvalProtocol

DEFAULT_PROTOCOL = EvalProtocol()

_CHUNK_BYTES = 96 * 2**20
_MAX_CHUNK_ROWS = 1024
_MAX_DEFAULT_THREADS = 4


@dataclasses.dataclass(frozen=True)
class RetrievalMetrics:
    """Everything one evaluation measured, with the conventions used.

    Attributes:
      map: mAP@R under `ties` and `empty`.
      map_name: e.g. `mAP@5000[ties=index,empty=zero]`.
      topk, ties, empty, seed: the conventions.
      average_precisions: (Q,) AP@R per query; NaN for queries skipped by empty="skip".
      num_scored_queries: the number of queries averaged into `map`.
      map_optimistic, map_pessimistic: mAP with relevant items first / last within
        ties (same `empty`), or None when not computed.
      precision_at_n: {N: mean precision@N}, keyed by the requested N.
      hamming_radius: the radius of `precision_within_radius`, or None.
      precision_within_radius: mean precision within `hamming_radius`, or None.
      radii, radius_precision, radius_recall: (K+1,) precision-recall over Hamming
        radius 0..K, or None when distances are not Hamming distances.
    """

    map: float
    map_name: str
    topk: int | None
    ties: str
    empty: str
    seed: int
    average_precisions: np.ndarray
    num_scored_queries: int
    map_optimistic: float | None = None
    map_pessimistic: float | None = None
    precision_at_n: dict[int, float] = dataclasses.field(default_factory=dict)
    hamming_radius: int | None = None
    precision_within_radius: float | None = None
    radii: np.ndarray | None = None
    radius_precision: np.ndarray | None = None
    radius_recall: np.ndarray | None = None

    def tie_bounds_matter(self, tolerance: float = TIE_BOUND_TOLERANCE) -> bool:
        """Whether the optimistic or pessimistic mAP is more than `tolerance` away."""
        bounds = [b for b in (self.map_optimistic, self.map_pessimistic) if b is not None]
        return any(abs(bound - self.map) > tolerance for bound in bounds)

    def to_dict(self, include_radius_curve: bool = True) -> dict:
        """A JSON-ready dict; key `map` holds mAP@R."""
        result = {
            "map": self.map,
            "map_name": self.map_name,
            "topk": self.topk,
            "ties": self.ties,
            "empty": self.empty,
            "seed": self.seed,
            "num_queries": len(self.average_precisions),
            "num_scored_queries": self.num_scored_queries,
            "map_optimistic": self.map_optimistic,
            "map_pessimistic": self.map_pessimistic,
            "precision_at_n": {str(n): value for n, value in self.precision_at_n.items()},
        }
        if self.precision_within_radius is not None:
            result[f"precision_within_radius_{self.hamming_radius}"] = self.precision_within_radius
        if include_radius_curve and self.radii is not None:
            result["radius_curve"] = {
                "radius": self.radii.tolist(),
                "precision": self.radius_precision.tolist(),
                "recall": self.radius_recall.tolist(),
            }
        return result


def _average_precision(top_relevance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AP@R and X per query from a (rows, R) bool relevance-by-rank array."""
    hits = np.cumsum(top_relevance, axis=1, dtype=np.int64)  # (rows, R) relevant so far.
    ranks = np.arange(1, top_relevance.shape[1] + 1)
    precision_sum = np.where(top_relevance, hits / ranks, 0.0).sum(axis=1)
    # A copy: a view would keep the whole (rows, R) array alive in the chunk's result.
    num_relevant = hits[:, -1].copy()
    average_precision = np.divide(
        precision_sum, num_relevant, out=np.zeros(len(num_relevant)), where=num_relevant > 0
    )
    return average_precision, num_relevant


def _candidate_relevance(
    chunk_query_masks: np.ndarray,
    database_masks: np.ndarray,
    columns: np.ndarray,
    counts: np.ndarray,
) -> np.ndarray:
    """Relevance of block candidates (grouped by row, `counts` per row) to their query."""
    relevant = np.zeros(len(columns), dtype=np.bool_)
    for word in range(database_masks.shape[0]):
        query_words = np.repeat(chunk_query_masks[word], counts)
        relevant |= (database_masks[word, columns] & query_words) != 0
    return relevant


def _rank_block(
    keys: np.ndarray,
    chunk_query_masks: np.ndarray,
    database_masks: np.ndarray,
    *,
    radius_bits: int | None,
    radius_curve: bool,
    hamming_radius: int | None,
    policies: tuple[str, ...],
    depth: int,
) -> tuple[np.ndarray, dict]:
    """Ranks a block of uint8/uint16 keys (Hamming distances) without a loop over queries.

    Returns the (policies, rows, depth) relevance by rank and the radius counts: for the
    curve (radius_curve) "retrieved", "relevant_retrieved" (rows, K+1) and
    "total_relevant" (rows,); else, for `hamming_radius`, "retrieved_within" and
    "relevant_within" (rows,). Equal to `_rank_per_query` (module doc of ranking.py).
    """
    num_rows, num_items = keys.shape
    radius = {}
    full_relevance = None
    if radius_curve:
        # Every item's relevance and the histogram of (distance, relevant) per row.
        full_relevance = relevance_lib.relevance_from_masks(chunk_query_masks, database_masks)
        num_radii = radius_bits + 1
        combined = keys.astype(np.uint16 if keys.dtype == np.uint8 else np.uint32)
        combined <<= 1
        combined |= full_relevance
        retrieved = np.empty((num_rows, num_radii), dtype=np.int64)
        relevant_retrieved = np.empty((num_rows, num_radii), dtype=np.int64)
        total_relevant = np.empty(num_rows, dtype=np.int64)
        thresholds = np.empty(num_rows, dtype=np.int64)
        for row_index in range(num_rows):
            levels = np.bincount(combined[row_index], minlength=2 * num_radii)
            levels = levels.reshape(-1, 2)  # (distance, [irrelevant, relevant])
            counts = levels.sum(axis=1)
            thresholds[row_index] = ranking.histogram_threshold(counts, depth)
            # Distances above K cannot occur with zero padding bits; clip defensively.
            np.cumsum(counts[:num_radii], out=retrieved[row_index])
            np.cumsum(levels[:num_radii, 1], out=relevant_retrieved[row_index])
            total_relevant[row_index] = levels[:, 1].sum()
        del combined
        radius.update(
            retrieved=retrieved,
            relevant_retrieved=relevant_retrieved,
            total_relevant=total_relevant,
        )
        floor = 0
    else:
        # Items within the radius are always candidates, so the radius counts come from them.
        floor = 0 if hamming_radius is None else hamming_radius
        thresholds = ranking.estimated_histogram_thresholds(keys, depth)
        np.maximum(thresholds, floor, out=thresholds)
    rows, columns, candidate_keys, counts = ranking.block_candidates(keys, depth, thresholds, floor)
    if full_relevance is None:
        # Candidates past the R-th smallest key (the bound may exceed it) rank after it,
        # so they stay: sorting them is cheaper than filtering them out.
        relevance = _candidate_relevance(chunk_query_masks, database_masks, columns, counts)
        if hamming_radius is not None:
            starts = np.zeros(num_rows, dtype=np.int64)
            np.cumsum(counts[:-1], out=starts[1:])
            within = candidate_keys <= hamming_radius
            radius["retrieved_within"] = np.add.reduceat(within, starts, dtype=np.int64)
            radius["relevant_within"] = np.add.reduceat(within & relevance, starts, dtype=np.int64)
    else:
        relevance = full_relevance.reshape(-1)[rows * num_items + columns]
    top_relevance = np.empty((len(policies), num_rows, depth), dtype=np.bool_)
    for policy_index, policy in enumerate(policies):
        ranking.ranked_block_relevance(
            rows, candidate_keys, relevance, counts, depth, policy, top_relevance[policy_index]
        )
    return top_relevance, radius


def _rank_per_query(
    keys: np.ndarray,
    chunk_query_masks: np.ndarray,
    database_masks: np.ndarray,
    *,
    radius_bits: int | None,
    policies: tuple[str, ...],
    depth: int,
) -> tuple[np.ndarray, dict]:
    """Ranks a block one query at a time; any keys. Returns what `_rank_block` does,
    with the radius curve whenever `radius_bits` is given."""
    num_rows = keys.shape[0]
    # The radius curve needs every item's relevance; mAP alone only the candidates'.
    full_relevance = None
    num_radii = 0 if radius_bits is None else radius_bits + 1
    radius = {}
    if radius_bits is not None:
        full_relevance = relevance_lib.relevance_from_masks(chunk_query_masks, database_masks)
        retrieved = np.empty((num_rows, num_radii), dtype=np.int64)
        relevant_retrieved = np.empty((num_rows, num_radii), dtype=np.int64)
        radius.update(
            retrieved=retrieved,
            relevant_retrieved=relevant_retrieved,
            total_relevant=full_relevance.sum(axis=1),
        )
    histogram = ranking.uses_histogram(keys)
    if not histogram:
        thresholds = ranking.partition_thresholds(keys, depth)
    top_relevance = np.empty((len(policies), num_rows, depth), dtype=np.bool_)

    for row_index in range(num_rows):
        row = keys[row_index]
        if histogram:
            counts = np.bincount(row, minlength=num_radii)
            threshold = ranking.histogram_threshold(counts, depth)
        else:
            threshold = thresholds[row_index]
        candidates, candidate_keys = ranking.top_candidates(row, threshold)
        if full_relevance is not None:
            candidate_relevance = full_relevance[row_index, candidates]
        else:
            candidate_relevance = relevance_lib.relevance_from_masks(
                chunk_query_masks[:, row_index : row_index + 1], database_masks, items=candidates
            )
        for policy_index, policy in enumerate(policies):
            order = ranking.order_candidates(candidate_keys, depth, policy, candidate_relevance)
            top_relevance[policy_index, row_index] = candidate_relevance[order]
        if full_relevance is not None:
            # Distances above K cannot occur with zero padding bits; clip defensively.
            relevant_counts = np.bincount(row[full_relevance[row_index]], minlength=num_radii)
            retrieved[row_index] = np.cumsum(counts[:num_radii])
            relevant_retrieved[row_index] = np.cumsum(relevant_counts[:num_radii])
    return top_relevance, radius


# Blocks of uint8/uint16 keys are ranked by `_rank_block`; False sends every block
# through `_rank_per_query` (the reference the tests compare it with).
_BLOCK_RANKING = True


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What every chunk computes, fixed once per evaluation from the protocol, the
    scorer and N.

    Attributes:
      policies: the tie policies ranked: the headline's first ("random" ranks as
        "index" on the permuted database), then the tie bounds'.
      depth: ranks kept per query: the largest of `map_depth` and `precision_depths`.
      map_depth: R clipped to N.
      precision_depths: the protocol's precision@N, each clipped to N.
      radius_bits: K when a radius figure is wanted, else None.
      radius_curve: compute precision-recall over radius 0..K.
      within_radius_at: the radius of "precision within radius", clipped to K, or None.
    """

    policies: tuple[str, ...]
    depth: int
    map_depth: int
    precision_depths: tuple[int, ...]
    radius_bits: int | None
    radius_curve: bool
    within_radius_at: int | None

    @property
    def headline(self) -> str:
        return self.policies[0]


def _plan(protocol: EvalProtocol, radius_bits: int | None, num_items: int) -> _Plan:
    """The `_Plan` of `protocol` for a scorer with `radius_bits` over `num_items`."""
    if not protocol.radius_curve and protocol.hamming_radius is None:
        radius_bits = None
    within_radius_at = None
    if radius_bits is not None and protocol.hamming_radius is not None:
        within_radius_at = min(protocol.hamming_radius, radius_bits)
    # "random" was applied by the permutation, so it ranks like "index" from here on.
    headline = "index" if protocol.ties == "random" else protocol.ties
    policies = (headline,)
    if protocol.tie_bounds:
        policies += tuple(p for p in ("optimistic", "pessimistic") if p != headline)
    map_depth = ranking.ranking_depth(protocol.topk, num_items)
    precision_depths = tuple(min(n, num_items) for n in protocol.precision_at)
    return _Plan(
        policies=policies,
        depth=max((map_depth,) + precision_depths),
        map_depth=map_depth,
        precision_depths=precision_depths,
        radius_bits=radius_bits,
        radius_curve=protocol.radius_curve and radius_bits is not None,
        within_radius_at=within_radius_at,
    )


def _rank_chunk(
    keys: np.ndarray, chunk_query_masks: np.ndarray, database_masks: np.ndarray, plan: _Plan
) -> tuple[np.ndarray, dict]:
    """Relevance by rank and radius counts of one chunk's keys (`_rank_block` for
    uint8/uint16 keys, else `_rank_per_query`)."""
    if _BLOCK_RANKING and ranking.uses_histogram(keys):
        return _rank_block(
            keys,
            chunk_query_masks,
            database_masks,
            radius_bits=plan.radius_bits,
            radius_curve=plan.radius_curve,
            hamming_radius=plan.within_radius_at,
            policies=plan.policies,
            depth=plan.depth,
        )
    return _rank_per_query(
        keys,
        chunk_query_masks,
        database_masks,
        radius_bits=plan.radius_bits,
        policies=plan.policies,
        depth=plan.depth,
    )


def _radius_figures(radius: dict, plan: _Plan) -> dict:
    """Per-query radius figures from a chunk's radius counts: "radius_precision" and
    "radius_recall" (rows, K+1) for the curve, "within_radius" (rows,)."""
    result = {}
    if "retrieved" in radius:
        retrieved, relevant_retrieved = radius["retrieved"], radius["relevant_retrieved"]
        total_relevant = radius["total_relevant"]
        radius_precision = np.divide(
            relevant_retrieved, retrieved, out=np.zeros(retrieved.shape), where=retrieved > 0
        )
        if plan.radius_curve:
            result["radius_precision"] = radius_precision
            result["radius_recall"] = np.divide(
                relevant_retrieved,
                total_relevant[:, None],
                out=np.zeros(retrieved.shape),
                where=total_relevant[:, None] > 0,
            )
        if plan.within_radius_at is not None:
            result["within_radius"] = radius_precision[:, plan.within_radius_at].copy()
    elif "retrieved_within" in radius:
        retrieved, relevant_retrieved = radius["retrieved_within"], radius["relevant_within"]
        result["within_radius"] = np.divide(
            relevant_retrieved, retrieved, out=np.zeros(retrieved.shape), where=retrieved > 0
        )
    return result


def _evaluate_chunk(
    start: int,
    stop: int,
    *,
    source: scorers.Scorer,
    plan: _Plan,
    query_masks: np.ndarray,
    database_masks: np.ndarray,
) -> dict:
    """Ranks queries start..stop-1 and returns their per-query figures: "ap" and
    "num_relevant" (one array per policy), "precision_at" (rows, len(precision_depths))
    and the radius figures of `_radius_figures`."""
    keys = source.keys(start, stop)  # (rows, N)
    ranking.check_no_nan(keys)
    num_rows = stop - start
    top_relevance, radius = _rank_chunk(keys, query_masks[:, start:stop], database_masks, plan)
    del keys

    result = {"ap": [], "num_relevant": []}
    for policy_index in range(len(plan.policies)):
        average_precision, num_relevant = _average_precision(
            top_relevance[policy_index, :, : plan.map_depth]
        )
        result["ap"].append(average_precision)
        result["num_relevant"].append(num_relevant)
    headline_hits = np.cumsum(top_relevance[0], axis=1, dtype=np.int64)
    result["precision_at"] = (
        np.stack([headline_hits[:, n - 1] / n for n in plan.precision_depths], axis=1)
        if plan.precision_depths
        else np.zeros((num_rows, 0))
    )
    result.update(_radius_figures(radius, plan))
    return result


def _default_threads() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # Not on Linux.
        available = os.cpu_count() or 1
    return max(1, min(_MAX_DEFAULT_THREADS, available))


def _mean_average_precision(
    average_precision: np.ndarray, num_relevant: np.ndarray, empty: str
) -> tuple[float, np.ndarray, int]:
    """mAP, per-query APs (NaN where skipped) and the number of queries averaged."""
    if empty == "zero":
        return float(average_precision.mean()), average_precision, len(average_precision)
    scored = num_relevant > 0
    per_query = np.where(scored, average_precision, np.nan)
    num_scored = int(scored.sum())
    # All skipped: 0.0 rather than NaN (documented in the module doc).
    value = float(average_precision[scored].mean()) if num_scored else 0.0
    return value, per_query, num_scored


def _checked_labels(
    scorer: scorers.Scorer, labels: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(query_labels, database_labels), checked against each other and the scorer."""
    query_labels, database_labels = labels
    query_labels = relevance_lib.check_labels(query_labels, "query_labels")
    database_labels = relevance_lib.check_labels(database_labels, "database_labels")
    if query_labels.shape[1] != database_labels.shape[1]:
        raise ValueError(
            f"Query labels have {query_labels.shape[1]} classes but database labels have "
            f"{database_labels.shape[1]}."
        )
    num_queries, num_items = query_labels.shape[0], database_labels.shape[0]
    if num_items == 0 or num_queries == 0:
        raise ValueError("Need at least one query and one database item.")
    if scorer.num_queries != num_queries or scorer.num_items != num_items:
        raise ValueError(
            f"Ranking covers {scorer.num_queries} queries x {scorer.num_items} items but "
            f"labels have {num_queries} query rows and {num_items} database rows."
        )
    return query_labels, database_labels


def _chunk_bounds(
    source: scorers.Scorer,
    plan: _Plan,
    threads: int,
    query_chunk_size: int | None,
) -> list[tuple[int, int]]:
    """(start, stop) of every query chunk: as many rows as fit the memory budget (about
    100 MiB of temporaries), at most `_MAX_CHUNK_ROWS`, enough chunks for every thread;
    or `query_chunk_size` rows when given."""
    num_queries, num_items = source.num_queries, source.num_items
    bytes_per_row = num_items * (2 * source.key_itemsize + 8 + 10) + plan.depth * (
        len(plan.policies) + 24
    )
    rows_per_chunk = max(1, min(_MAX_CHUNK_ROWS, _CHUNK_BYTES // bytes_per_row))
    rows_per_chunk = min(rows_per_chunk, -(-num_queries // threads))  # Keep every thread busy.
    if query_chunk_size is not None:
        if query_chunk_size < 1:
            raise ValueError(f"query_chunk_size must be >= 1; got {query_chunk_size}.")
        rows_per_chunk = query_chunk_size
    return [
        (s, min(s + rows_per_chunk, num_queries)) for s in range(0, num_queries, rows_per_chunk)
    ]


def _summarise(chunks: list[dict], plan: _Plan, protocol: EvalProtocol) -> RetrievalMetrics:
    """The means over all queries of the chunks' per-query figures."""

    def gather(key: str, index: int | None = None) -> np.ndarray:
        return np.concatenate([c[key] if index is None else c[key][index] for c in chunks])

    maps = {
        policy: _mean_average_precision(
            gather("ap", policy_index), gather("num_relevant", policy_index), protocol.empty
        )
        for policy_index, policy in enumerate(plan.policies)
    }
    headline_map, per_query, num_scored = maps[plan.headline]
    precision_curve = gather("precision_at").mean(axis=0)
    curve = {}
    if plan.radius_curve:
        curve = {
            "radii": np.arange(plan.radius_bits + 1),
            "radius_precision": gather("radius_precision").mean(axis=0),  # over (Q, K+1)
            "radius_recall": gather("radius_recall").mean(axis=0),
        }
    within_radius = None
    if plan.within_radius_at is not None:
        within_radius = float(gather("within_radius").mean())
    return RetrievalMetrics(
        map=headline_map,
        map_name=protocol.map_name,
        topk=protocol.topk,
        ties=protocol.ties,
        empty=protocol.empty,
        seed=protocol.seed,
        average_precisions=per_query,
        num_scored_queries=num_scored,
        map_optimistic=maps["optimistic"][0] if protocol.tie_bounds else None,
        map_pessimistic=maps["pessimistic"][0] if protocol.tie_bounds else None,
        precision_at_n={n: float(v) for n, v in zip(protocol.precision_at, precision_curve)},
        hamming_radius=protocol.hamming_radius if within_radius is not None else None,
        precision_within_radius=within_radius,
        **curve,
    )


def evaluate_retrieval(
    scorer: scorers.Scorer,
    labels: tuple[np.ndarray, np.ndarray],
    protocol: EvalProtocol = DEFAULT_PROTOCOL,
    *,
    num_threads: int | None = None,
    query_chunk_size: int | None = None,
) -> RetrievalMetrics:
    """Evaluates `scorer`'s ranking of the database for every query under `protocol`.

    Args:
      scorer: the source of the ranking keys, asked one block of queries at a time
        (wsdhash/eval/scorers.py: `HammingScorer` for packed codes, `MatrixScorer` for a
        distances or scores matrix, `AQDScorer`, `FeatureScorer`).
      labels: (query_labels (Q, C), database_labels (N, C)), 0/1 ground-truth labels.
      protocol: the conventions and the figures to compute (`EvalProtocol`).
      num_threads: worker threads over query chunks; default min(4, available cores).
      query_chunk_size: queries per chunk; default: as many as fit the chunk's memory
        budget (about 100 MiB of temporaries).

    Returns:
      A `RetrievalMetrics`. The numbers do not depend on `num_threads` or
      `query_chunk_size`.
    """
    query_labels, database_labels = _checked_labels(scorer, labels)
    num_items = database_labels.shape[0]
    plan = _plan(protocol, scorer.radius_bits, num_items)
    query_masks = relevance_lib.pack_label_masks(query_labels)  # (W, Q)
    database_masks = relevance_lib.pack_label_masks(database_labels)  # (W, N)
    source = scorer
    if protocol.ties == "random":
        permutation = ranking.random_tie_permutation(num_items, protocol.seed)
        source = scorer.permuted(permutation)
        database_masks = database_masks[:, permutation]

    threads = num_threads or _default_threads()
    bounds = _chunk_bounds(source, plan, threads, query_chunk_size)

    def run_chunk(chunk_bounds: tuple[int, int]) -> dict:
        return _evaluate_chunk(
            *chunk_bounds,
            source=source,
            plan=plan,
            query_masks=query_masks,
            database_masks=database_masks,
        )

    if threads == 1 or len(bounds) == 1:
        chunks = [run_chunk(b) for b in bounds]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            chunks = list(pool.map(run_chunk, bounds))
    return _summarise(chunks, plan, protocol)


def mean_average_precision(
    scorer: scorers.Scorer,
    labels: tuple[np.ndarray, np.ndarray],
    protocol: EvalProtocol = DEFAULT_PROTOCOL,
    *,
    num_threads: int | None = None,
) -> float:
    """mAP@R alone: `evaluate_retrieval` under `protocol.map_only()`."""
    return evaluate_retrieval(scorer, labels, protocol.map_only(), num_threads=num_threads).map
