"""Retrieval metrics: mAP@R, precision@N, precision-recall over Hamming radius.

Conventions (docs/evaluation.md), each an explicit argument:
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

DEFAULT_PRECISION_AT = tuple(range(100, 1001, 100))
EMPTY_POLICIES = ("zero", "skip")
# docs/evaluation.md, "Ties": report tie-order bounds next to the headline when they differ by more.
TIE_BOUND_TOLERANCE = 0.005

_CHUNK_BYTES = 96 * 2**20
_MAX_CHUNK_ROWS = 1024
_MAX_DEFAULT_THREADS = 4


def check_empty_policy(empty: str) -> str:
    """Returns `empty` if it is a known policy for queries without relevant results."""
    if empty not in EMPTY_POLICIES:
        raise ValueError(
            f"Unknown empty policy {empty!r}; expected one of {', '.join(EMPTY_POLICIES)}."
        )
    return empty


def metric_name(
    topk: int | None, ties: str = "index", empty: str = "zero", seed: int | None = None
) -> str:
    """The full name of an mAP figure, e.g. `mAP@5000[ties=index,empty=zero]`.

    Args:
      topk: R, or None for the whole database (written "all").
      ties: the tie policy.
      empty: the policy for queries with no relevant item in the top R.
      seed: included for "random" ties, whose value depends on it.

    Returns:
      The name, to be used in logs, tables and JSON.
    """
    cutoff = "all" if ranking.check_topk(topk) is None else str(topk)
    tie_part = f"ties={ranking.check_tie_policy(ties)}"
    if ties == "random" and seed is not None:
        tie_part += f",seed={seed}"
    return f"mAP@{cutoff}[{tie_part},empty={check_empty_policy(empty)}]"


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


def _evaluate_chunk(
    start: int,
    stop: int,
    *,
    source: scorers.Scorer,
    radius_bits: int | None,
    radius_curve: bool,
    hamming_radius: int | None,
    query_masks: np.ndarray,
    database_masks: np.ndarray,
    policies: tuple[str, ...],
    depth: int,
    map_depth: int,
    precision_depths: tuple[int, ...],
) -> dict:
    """Ranks queries start..stop-1 and returns their per-query figures.

    `radius_bits` is K when a radius figure is wanted: the curve (`radius_curve`) and/or
    the precision within `hamming_radius` (already clipped to K).
    """
    keys = source.keys(start, stop)  # (rows, N)
    ranking.check_no_nan(keys)
    num_rows = stop - start
    chunk_query_masks = query_masks[:, start:stop]
    if _BLOCK_RANKING and ranking.uses_histogram(keys):
        top_relevance, radius = _rank_block(
            keys,
            chunk_query_masks,
            database_masks,
            radius_bits=radius_bits,
            radius_curve=radius_curve and radius_bits is not None,
            hamming_radius=hamming_radius if radius_bits is not None else None,
            policies=policies,
            depth=depth,
        )
    else:
        top_relevance, radius = _rank_per_query(
            keys,
            chunk_query_masks,
            database_masks,
            radius_bits=radius_bits,
            policies=policies,
            depth=depth,
        )
    del keys

    result = {"ap": [], "num_relevant": []}
    for policy_index in range(len(policies)):
        average_precision, num_relevant = _average_precision(
            top_relevance[policy_index, :, :map_depth]
        )
        result["ap"].append(average_precision)
        result["num_relevant"].append(num_relevant)
    headline_hits = np.cumsum(top_relevance[0], axis=1, dtype=np.int64)
    result["precision_at"] = (
        np.stack([headline_hits[:, n - 1] / n for n in precision_depths], axis=1)
        if precision_depths
        else np.zeros((num_rows, 0))
    )
    if "retrieved" in radius:
        retrieved, relevant_retrieved = radius["retrieved"], radius["relevant_retrieved"]
        total_relevant = radius["total_relevant"]
        radius_precision = np.divide(
            relevant_retrieved, retrieved, out=np.zeros(retrieved.shape), where=retrieved > 0
        )
        if radius_curve:
            result["radius_precision"] = radius_precision
            result["radius_recall"] = np.divide(
                relevant_retrieved,
                total_relevant[:, None],
                out=np.zeros(retrieved.shape),
                where=total_relevant[:, None] > 0,
            )
        if hamming_radius is not None:
            result["within_radius"] = radius_precision[:, hamming_radius].copy()
    elif "retrieved_within" in radius:
        retrieved, relevant_retrieved = radius["retrieved_within"], radius["relevant_within"]
        result["within_radius"] = np.divide(
            relevant_retrieved, retrieved, out=np.zeros(retrieved.shape), where=retrieved > 0
        )
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


def evaluate_retrieval(
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    *,
    scorer: scorers.Scorer | None = None,
    query_codes: np.ndarray | None = None,
    database_codes: np.ndarray | None = None,
    distances: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    bits: int | None = None,
    topk: int | None = None,
    ties: str = "index",
    empty: str = "zero",
    seed: int = 0,
    precision_at: tuple[int, ...] = DEFAULT_PRECISION_AT,
    hamming_radius: int | None = 2,
    radius_metrics: bool = True,
    tie_bounds: bool = False,
    num_threads: int | None = None,
    query_chunk_size: int | None = None,
) -> RetrievalMetrics:
    """Evaluates a ranking of the database for every query.

    Give the ranking as exactly one of: a `scorer` (wsdhash/eval/scorers.py: Hamming,
    AQD, features), packed codes (`query_codes` and `database_codes`, a Hamming
    scorer), a `distances` matrix (ascending) or a `scores` matrix (descending).

    Args:
      query_labels: (Q, C) 0/1 ground-truth labels.
      database_labels: (N, C) 0/1 ground-truth labels.
      scorer: the source of the ranking keys, asked one block of queries at a time.
      query_codes: (Q, ceil(K/8)) uint8 packed codes.
      database_codes: (N, ceil(K/8)) uint8 packed codes.
      distances: (Q, N) distances, smaller is closer.
      scores: (Q, N) scores, larger is closer.
      bits: K. Defaults to 8 * bytes for codes; with uint8/uint16 `distances` it
        enables the Hamming-radius metrics.
      topk: R for mAP@R; None for the whole database. R > N is clipped to N.
      ties: "index", "random", "optimistic" or "pessimistic".
      empty: "zero" or "skip" for queries with no relevant item in the top R.
      seed: seeds the database permutation of "random" ties.
      precision_at: the N of the precision@N curve (clipped to the database size).
      hamming_radius: the radius of `precision_within_radius` (None to skip it); a
        radius above K is clipped to K.
      radius_metrics: compute precision-recall over radius 0..K (Hamming only).
        `hamming_radius` and the radius curve apply to Hamming scorers only.
      tie_bounds: also compute the optimistic and pessimistic mAP.
      num_threads: worker threads over query chunks; default min(4, available cores).
      query_chunk_size: queries per chunk; default: as many as fit the chunk's memory
        budget (about 100 MiB of temporaries).

    Returns:
      A `RetrievalMetrics`.
    """
    ranking.check_tie_policy(ties)
    check_empty_policy(empty)
    topk = ranking.check_topk(topk)
    precision_at = tuple(int(n) for n in precision_at)
    if any(n < 1 for n in precision_at):
        raise ValueError(f"precision_at values must be positive; got {precision_at}.")
    if hamming_radius is not None and hamming_radius < 0:
        raise ValueError(f"hamming_radius must be >= 0; got {hamming_radius}.")
    query_labels = relevance_lib.check_labels(query_labels, "query_labels")
    database_labels = relevance_lib.check_labels(database_labels, "database_labels")
    if query_labels.shape[1] != database_labels.shape[1]:
        raise ValueError(
            f"Query labels have {query_labels.shape[1]} classes but database labels have "
            f"{database_labels.shape[1]}."
        )
    num_items = database_labels.shape[0]
    if num_items == 0 or query_labels.shape[0] == 0:
        raise ValueError("Need at least one query and one database item.")
    permutation = ranking.random_tie_permutation(num_items, seed) if ties == "random" else None

    codes_given = query_codes is not None or database_codes is not None
    matrix_given = distances is not None or scores is not None
    if sum((scorer is not None, codes_given, matrix_given)) != 1:
        raise ValueError(
            "Pass exactly one ranking: scorer=, both query_codes and database_codes, or one of "
            "distances / scores."
        )
    if codes_given:
        if query_codes is None or database_codes is None:
            raise ValueError(
                "Pass both query_codes and database_codes, or one of distances / scores."
            )
        scorer = scorers.HammingScorer(query_codes, database_codes, bits)
    elif matrix_given:
        scorer = scorers.MatrixScorer(distances, scores, bits)
    if scorer.num_queries != query_labels.shape[0] or scorer.num_items != num_items:
        raise ValueError(
            f"Ranking covers {scorer.num_queries} queries x {scorer.num_items} items but "
            f"labels have {query_labels.shape[0]} query rows and {num_items} database rows."
        )
    source = scorer if permutation is None else scorer.permuted(permutation)
    radius_bits = scorer.radius_bits
    if not radius_metrics and hamming_radius is None:
        radius_bits = None
    radius_curve = radius_metrics and radius_bits is not None
    within_radius_at = None
    if radius_bits is not None and hamming_radius is not None:
        within_radius_at = min(hamming_radius, radius_bits)

    query_masks = relevance_lib.pack_label_masks(query_labels)  # (W, Q)
    database_masks = relevance_lib.pack_label_masks(database_labels)  # (W, N)
    if permutation is not None:
        database_masks = database_masks[:, permutation]

    # "random" was applied by the permutation, so it ranks like "index" from here on.
    headline = "index" if ties == "random" else ties
    policies = (headline,)
    if tie_bounds:
        policies += tuple(p for p in ("optimistic", "pessimistic") if p != headline)
    map_depth = ranking.ranking_depth(topk, num_items)
    precision_depths = tuple(min(n, num_items) for n in precision_at)
    depth = max((map_depth,) + precision_depths)

    num_queries = source.num_queries
    threads = num_threads or _default_threads()
    bytes_per_row = num_items * (2 * source.key_itemsize + 8 + 10) + depth * (len(policies) + 24)
    rows_per_chunk = max(1, min(_MAX_CHUNK_ROWS, _CHUNK_BYTES // bytes_per_row))
    rows_per_chunk = min(rows_per_chunk, -(-num_queries // threads))  # Keep every thread busy.
    if query_chunk_size is not None:
        if query_chunk_size < 1:
            raise ValueError(f"query_chunk_size must be >= 1; got {query_chunk_size}.")
        rows_per_chunk = query_chunk_size
    bounds = [
        (s, min(s + rows_per_chunk, num_queries)) for s in range(0, num_queries, rows_per_chunk)
    ]

    def run_chunk(chunk_bounds: tuple[int, int]) -> dict:
        return _evaluate_chunk(
            *chunk_bounds,
            source=source,
            radius_bits=radius_bits,
            radius_curve=radius_curve,
            hamming_radius=within_radius_at,
            query_masks=query_masks,
            database_masks=database_masks,
            policies=policies,
            depth=depth,
            map_depth=map_depth,
            precision_depths=precision_depths,
        )

    if threads == 1 or len(bounds) == 1:
        chunks = [run_chunk(b) for b in bounds]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            chunks = list(pool.map(run_chunk, bounds))

    def gather(key: str, index: int | None = None) -> np.ndarray:
        return np.concatenate([c[key] if index is None else c[key][index] for c in chunks])

    maps = {}
    for policy_index, policy in enumerate(policies):
        maps[policy] = _mean_average_precision(
            gather("ap", policy_index), gather("num_relevant", policy_index), empty
        )
    headline_map, per_query, num_scored = maps[headline]
    optimistic = maps.get("optimistic", (None,))[0] if tie_bounds else None
    pessimistic = maps.get("pessimistic", (None,))[0] if tie_bounds else None
    precision_curve = gather("precision_at").mean(axis=0)

    radii = radius_precision = radius_recall = None
    within_radius = None
    if radius_curve:
        radii = np.arange(radius_bits + 1)
        radius_precision = gather("radius_precision").mean(axis=0)  # over (Q, K+1)
        radius_recall = gather("radius_recall").mean(axis=0)
    if within_radius_at is not None:
        within_radius = float(gather("within_radius").mean())

    return RetrievalMetrics(
        map=headline_map,
        map_name=metric_name(topk, ties, empty, seed),
        topk=topk,
        ties=ties,
        empty=empty,
        seed=seed,
        average_precisions=per_query,
        num_scored_queries=num_scored,
        map_optimistic=optimistic,
        map_pessimistic=pessimistic,
        precision_at_n={n: float(v) for n, v in zip(precision_at, precision_curve)},
        hamming_radius=hamming_radius if within_radius is not None else None,
        precision_within_radius=within_radius,
        radii=radii,
        radius_precision=radius_precision,
        radius_recall=radius_recall,
    )


def mean_average_precision(
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    *,
    query_codes: np.ndarray | None = None,
    database_codes: np.ndarray | None = None,
    distances: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    topk: int | None = None,
    ties: str = "index",
    empty: str = "zero",
    seed: int = 0,
    return_per_query: bool = False,
    num_threads: int | None = None,
) -> float | tuple[float, np.ndarray]:
    """mAP@R alone; see `evaluate_retrieval` for the arguments.

    Returns:
      mAP@R, or (mAP@R, (Q,) per-query AP with NaN for skipped queries) when
      `return_per_query`.
    """
    metrics = evaluate_retrieval(
        query_labels,
        database_labels,
        query_codes=query_codes,
        database_codes=database_codes,
        distances=distances,
        scores=scores,
        topk=topk,
        ties=ties,
        empty=empty,
        seed=seed,
        precision_at=(),
        hamming_radius=None,
        radius_metrics=False,
        num_threads=num_threads,
    )
    if return_per_query:
        return metrics.map, metrics.average_precisions
    return metrics.map
