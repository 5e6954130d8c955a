"""Top-R ranking of a database under an explicit tie policy, without a full argsort.

Every ranking is a sort by the key (distance, tie key, database index), smallest first:
- Hamming distances (small unsigned integers) and any other distances rank ascending;
  scores (e.g. AQD inner products) rank descending, by ranking their negation
  ascending, so both take the same code path.
- `ties` decides the tie key within equal distance:
  - "index" (default): none; database order decides.
  - "random": a seeded random order within ties. One permutation of the database is
    drawn per call (`numpy.random.default_rng(seed).permutation(N)`) and shared by all
    queries, i.e. this is "index" ties on a randomly shuffled database. Being per call,
    the result does not depend on how queries are chunked or threaded.
  - "optimistic" / "pessimistic": relevant items first / last within ties (then
    database order). They bound what any tie order can give.

For each query the R-th smallest distance t is found first (a histogram for uint8 /
uint16 distances, `np.partition` otherwise); the candidates with distance <= t are
taken in database order, and only those are sorted stably by (distance, tie key).
A stable argsort of uint8 / uint16 keys is a radix sort, so for Hamming distances the
work per query is O(N) rather than O(N log N).

Shapes: Q queries, N database items, R ranks kept.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TIE_POLICIES = ("index", "random", "optimistic", "pessimistic")

# Distances of these dtypes are counted with a histogram to find the R-th smallest.
_HISTOGRAM_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


def check_tie_policy(ties: str) -> str:
    """Returns `ties` if it is a known tie policy, else raises ValueError."""
    if ties not in TIE_POLICIES:
        raise ValueError(f"Unknown tie policy {ties!r}; expected one of {', '.join(TIE_POLICIES)}.")
    return ties


def check_topk(topk: int | None) -> int | None:
    """Validates a cut-off R: a positive integer, or None for the whole database.

    Raises:
      ValueError: for 0, negative numbers (no -1 sentinel) and non-integers.
    """
    if topk is None:
        return None
    if isinstance(topk, (bool, np.bool_)) or not isinstance(topk, (int, np.integer)):
        raise TypeError(f"topk must be a positive integer or None (whole database); got {topk!r}.")
    if topk < 1:
        raise ValueError(
            f"topk must be a positive integer or None (whole database); got {topk}. "
            "Use None, not -1 or 0, for the whole database."
        )
    return int(topk)


def ranking_depth(topk: int | None, num_items: int) -> int:
    """The number of ranks actually produced: R clipped to the database size N."""
    topk = check_topk(topk)
    return num_items if topk is None else min(topk, num_items)


def random_tie_permutation(num_items: int, seed: int) -> np.ndarray:
    """The database permutation that defines "random" ties for a given seed."""
    return np.random.default_rng(seed).permutation(num_items)


def ascending_keys(distances: np.ndarray | None, scores: np.ndarray | None) -> np.ndarray:
    """Returns a (Q, N) array that ranks ascending, from distances or from scores.

    Exactly one of `distances` (smaller is closer) and `scores` (larger is closer) must
    be given; scores are negated (unsigned integers widened first so they cannot wrap).
    """
    if (distances is None) == (scores is None):
        raise ValueError("Pass exactly one of distances= (ascending) and scores= (descending).")
    keys = np.asarray(distances if scores is None else scores)
    if keys.ndim != 2:
        raise ValueError(f"Distances/scores must be a 2-D (Q, N) array; got shape {keys.shape}.")
    if keys.dtype == np.bool_ or not np.issubdtype(keys.dtype, np.number):
        raise ValueError(f"Distances/scores must be numeric; got dtype {keys.dtype}.")
    if np.issubdtype(keys.dtype, np.complexfloating):
        raise ValueError("Distances/scores must be real numbers.")
    if scores is not None:
        if np.issubdtype(keys.dtype, np.unsignedinteger):
            keys = keys.astype(np.int64)
        keys = -keys
    return keys


def check_no_nan(keys: np.ndarray) -> None:
    """Raises ValueError when float distances or scores hold NaN (they cannot be ranked)."""
    if np.issubdtype(keys.dtype, np.floating) and np.isnan(keys).any():
        raise ValueError("Distances/scores contain NaN; they cannot be ranked.")


def uses_histogram(keys: np.ndarray) -> bool:
    """Whether the R-th smallest key is found by counting (small unsigned integers)."""
    return keys.dtype in _HISTOGRAM_DTYPES


def histogram_threshold(counts: np.ndarray, depth: int) -> int:
    """The R-th smallest distance, given the count of every distance value."""
    return int(np.searchsorted(np.cumsum(counts), depth, side="left"))


def partition_thresholds(keys: np.ndarray, depth: int) -> np.ndarray:
    """The R-th smallest key of every row of a (Q, N) block."""
    if depth == keys.shape[1]:
        return keys.max(axis=1)
    return np.partition(keys, depth - 1, axis=1)[:, depth - 1]


def order_candidates(
    candidate_keys: np.ndarray,
    depth: int,
    ties: str,
    candidate_relevance: np.ndarray | None = None,
) -> np.ndarray:
    """Sorts the candidates of one query (given in database order) and keeps `depth`.

    Args:
      candidate_keys: (M,) distances of the candidates, M >= depth, in database order.
      depth: the number of ranks to keep.
      ties: "index" (also used for "random", whose shuffle happens before), "optimistic"
        or "pessimistic".
      candidate_relevance: (M,) bool; required for optimistic / pessimistic ties.

    Returns:
      (depth,) positions into the candidate arrays, best first.
    """
    if ties in ("index", "random"):
        # Stable, so equal keys keep database order.
        return np.argsort(candidate_keys, kind="stable")[:depth]
    if candidate_relevance is None:
        raise ValueError(f"ties={ties!r} needs the relevance of the candidates.")
    # 0 sorts first: relevant first for optimistic, last for pessimistic.
    tie_bit = (candidate_relevance if ties == "pessimistic" else ~candidate_relevance).astype(
        np.uint8
    )
    if candidate_keys.dtype == np.uint8:
        # One uint16 radix sort on (distance, tie bit) instead of a lexsort.
        combined = candidate_keys.astype(np.uint16) * 2 + tie_bit
        return np.argsort(combined, kind="stable")[:depth]
    return np.lexsort((tie_bit, candidate_keys))[:depth]


def top_candidates(row: np.ndarray, threshold) -> tuple[np.ndarray, np.ndarray]:
    """The items of one query with key <= threshold, in database order, and their keys."""
    candidates = np.flatnonzero(row <= threshold)
    return candidates, row[candidates]


def rank_rows(
    keys: np.ndarray,
    depth: int,
    ties: str,
    relevance_of: Callable[[int, np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Ranks each row of an ascending (Q, N) key block to `depth` items.

    Args:
      keys: (Q, N) ascending keys (distances, or negated scores).
      depth: ranks to keep, 1 <= depth <= N.
      ties: a tie policy; "random" must already have been applied by shuffling columns.
      relevance_of: `relevance_of(row_index, items)` -> bool relevance of those items to
        that query; needed for optimistic / pessimistic ties only.

    Returns:
      (Q, depth) int64 database indices, best first.
    """
    num_queries = keys.shape[0]
    ranked = np.empty((num_queries, depth), dtype=np.int64)
    if uses_histogram(keys):
        thresholds = [histogram_threshold(np.bincount(row), depth) for row in keys]
    else:
        thresholds = partition_thresholds(keys, depth)
    for query in range(num_queries):
        candidates, candidate_keys = top_candidates(keys[query], thresholds[query])
        candidate_relevance = None
        if ties in ("optimistic", "pessimistic"):
            candidate_relevance = relevance_of(query, candidates)
        order = order_candidates(candidate_keys, depth, ties, candidate_relevance)
        ranked[query] = candidates[order]
    return ranked


def rank_database(
    distances: np.ndarray | None = None,
    *,
    scores: np.ndarray | None = None,
    topk: int | None = None,
    ties: str = "index",
    relevance: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Ranks the database for every query and returns the top R indices.

    Args:
      distances: (Q, N) distances, smaller is closer (e.g. uint8 Hamming distances).
      scores: (Q, N) scores, larger is closer (e.g. AQD inner products). Pass exactly one
        of distances and scores.
      topk: R, the number of ranks to return; None for the whole database. R > N is
        clipped to N.
      ties: "index" (default), "random", "optimistic" or "pessimistic" (module doc).
      relevance: (Q, N) bool; required for optimistic and pessimistic ties.
      seed: seeds the one database permutation used by "random" ties.

    Returns:
      (Q, min(R, N)) int64 database indices, best first.
    """
    check_tie_policy(ties)
    keys = ascending_keys(distances, scores)
    check_no_nan(keys)
    num_items = keys.shape[1]
    depth = ranking_depth(topk, num_items)
    if num_items == 0:
        raise ValueError("Cannot rank an empty database (N = 0).")
    if ties in ("optimistic", "pessimistic"):
        if relevance is None:
            raise ValueError(f"ties={ties!r} needs relevance= (a (Q, N) bool array).")
        relevance = np.asarray(relevance, dtype=np.bool_)
        if relevance.shape != keys.shape:
            raise ValueError(
                f"relevance has shape {relevance.shape} but distances/scores have {keys.shape}."
            )
    permutation = None
    if ties == "random":
        permutation = random_tie_permutation(num_items, seed)
        keys = keys[:, permutation]

    def relevance_of(query: int, items: np.ndarray) -> np.ndarray:
        return relevance[query, items]

    ranked = rank_rows(keys, depth, ties, relevance_of)
    return ranked if permutation is None else permutation[ranked]
