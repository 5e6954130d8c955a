"""Top-R ranking of a database under an explicit tie policy, without a full argsort.

Every ranking is a sort by the key (distance, tie key, database index), smallest first:
- Hamming distances (small unsigned integers) and any other distances rank ascending;
  scores (e.g. AQD inner products) rank descending, by ranking their negation
  ascending, so both take the same code path.
- `ties` decides the tie key within equal distance:
  - "index" (the default, `EvalProtocol.ties`): none; database order decides.
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

Blocks of Hamming distances (uint8 / uint16 keys) are ranked without a loop over
queries (`block_candidates`, `ranked_block_relevance`): the R-th smallest distance of
every row is bounded from above by a histogram of a strided sample of the row, the
candidates under the bound are taken for the whole block in one pass (row-major, so
database order within a row), their exact histogram gives the exact R-th smallest
distance, and one stable radix sort of the 16-bit key (row, distance, tie bit) orders
every row at once. The order is the per-query one exactly: (distance, tie bit,
database index) within each row.

Shapes: Q queries, N database items, R ranks kept.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from wsdhash.eval.protocol import EvalProtocol, check_tie_policy, check_topk

# Distances of these dtypes are counted with a histogram to find the R-th smallest.
_HISTOGRAM_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))

# Keys sampled per row to bound the R-th smallest uint8 key of a block from above.
_SAMPLED_KEYS = 8192
# Standard deviations of the sampled count added to the bound (a low bound costs a
# second pass over the row; a high one only extra candidates).
_SAMPLE_MARGIN = 2.5
# Sort keys up to this value are sorted as uint16 (numpy's stable sort of 16-bit
# integers is a radix sort).
_UINT16_LIMIT = 2**16


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


def _exact_histogram_thresholds(keys: np.ndarray, depth: int) -> np.ndarray:
    return np.array([histogram_threshold(np.bincount(row), depth) for row in keys], np.int64)


def estimated_histogram_thresholds(keys: np.ndarray, depth: int) -> np.ndarray:
    """An upper estimate of the R-th smallest key of every row of a uint8/uint16 block.

    The estimate is usually the R-th smallest key itself or the next value; it may be
    too low (rarely), which `block_candidates` detects and corrects. Rows of uint16
    keys, and rows too short to sample, get the exact value.

    Args:
      keys: (rows, N) uint8 or uint16 keys.
      depth: R, 1 <= R <= N.

    Returns:
      (rows,) int64.
    """
    num_rows, num_items = keys.shape
    step = num_items // _SAMPLED_KEYS
    if depth == num_items:
        return keys.max(axis=1).astype(np.int64)
    if keys.dtype != np.uint8 or step < 2:
        return _exact_histogram_thresholds(keys, depth)
    sample = keys[:, ::step]
    offsets = (np.arange(num_rows, dtype=np.intp) * 256)[:, None]
    counts = np.bincount((sample + offsets).ravel(), minlength=256 * num_rows)
    cumulative = counts.reshape(num_rows, 256).cumsum(axis=1)
    expected = depth * sample.shape[1] / num_items
    target = expected + _SAMPLE_MARGIN * np.sqrt(expected) + 1
    return np.minimum((cumulative < target).sum(axis=1), 255).astype(np.int64)


def block_candidates(
    keys: np.ndarray, depth: int, thresholds: np.ndarray, floor: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The items under per-row bounds of a block, for the whole block at once.

    Args:
      keys: (rows, N) uint8 or uint16 keys.
      depth: R; every row must end with at least R candidates.
      thresholds: (rows,) int64 bounds (e.g. `estimated_histogram_thresholds`); a row
        whose bound leaves fewer than R items gets the exact R-th smallest key (or
        `floor`, if larger) instead. Modified in place.
      floor: the smallest bound given to a corrected row.

    Returns:
      rows, columns: (M,) int64 row and database index of each candidate, sorted by
        row, then by database index.
      candidate_keys: (M,) keys of the candidates.
      counts: (rows,) int64 number of candidates per row.
    """
    num_rows, num_items = keys.shape
    keys = np.ascontiguousarray(keys)
    mask = keys <= thresholds.astype(keys.dtype)[:, None]
    flat = np.flatnonzero(mask)
    rows = flat // num_items
    counts = np.bincount(rows, minlength=num_rows)
    short = counts < depth
    if short.any():  # The sampled bound was too low for these rows.
        thresholds[short] = np.maximum(_exact_histogram_thresholds(keys[short], depth), floor)
        mask[short] = keys[short] <= thresholds[short].astype(keys.dtype)[:, None]
        flat = np.flatnonzero(mask)
        rows = flat // num_items
        counts = np.bincount(rows, minlength=num_rows)
    del mask
    columns = flat - rows * num_items
    return rows, columns, keys.reshape(-1)[flat], counts


def candidate_histograms(
    rows: np.ndarray,
    candidate_keys: np.ndarray,
    num_rows: int,
    num_levels: int,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """(rows, num_levels) int64 count of candidates per row and key (keys < num_levels).

    `where`, an (M,) bool, counts only the candidates it selects.
    """
    index = rows * num_levels + candidate_keys
    if where is not None:
        index = index[where]
    return np.bincount(index, minlength=num_rows * num_levels).reshape(num_rows, num_levels)


def ranked_block_relevance(
    rows: np.ndarray,
    candidate_keys: np.ndarray,
    candidate_relevance: np.ndarray,
    counts: np.ndarray,
    depth: int,
    ties: str,
    out: np.ndarray,
) -> None:
    """The relevance, rank by rank, of the top `depth` items of every row of a block.

    Equals, row by row, `candidate_relevance[order_candidates(...)]` of that row's
    candidates: the order is (key, tie bit, database index).

    Args:
      rows: (M,) row of each candidate, non-decreasing; within a row the candidates are
        in database order.
      candidate_keys: (M,) non-negative integer keys.
      candidate_relevance: (M,) bool.
      counts: (rows,) candidates per row, each >= depth; the items of a row beyond its
        first `depth` in ranking order must rank after every item of key <= its R-th
        smallest key.
      depth: ranks kept.
      ties: "index" (also "random", applied before), "optimistic" or "pessimistic".
      out: (rows, depth) bool, written.
    """
    num_rows = len(counts)
    starts = np.zeros(num_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    num_levels = int(candidate_keys.max()) + 1 if len(candidate_keys) else 1
    by_index = ties in ("index", "random")
    if by_index:
        level = candidate_keys
    else:
        # 0 sorts first: relevant first for optimistic, last for pessimistic.
        tie_bit = candidate_relevance if ties == "pessimistic" else ~candidate_relevance
        level = candidate_keys.astype(np.int64) * 2 + tie_bit
        num_levels *= 2
    rows_per_group = max(1, _UINT16_LIMIT // num_levels)
    narrow = num_levels <= _UINT16_LIMIT
    for first in range(0, num_rows, rows_per_group):
        last = min(first + rows_per_group, num_rows)
        begin, end = starts[first], starts[last]
        sort_key = (rows[begin:end] - first) * num_levels + level[begin:end]
        if narrow:
            sort_key = sort_key.astype(np.uint16)
        if by_index:
            # Stable, so equal keys keep database order.
            order = np.argsort(sort_key, kind="stable")
            ranked = candidate_relevance[begin:end][order]
        else:
            # The tie bit alone says whether the item at each rank is relevant.
            ranked_bits = np.sort(sort_key, kind="stable") & 1  # radix sort for uint16
            ranked = ranked_bits.astype(np.bool_)
            if ties == "optimistic":
                ranked = ~ranked
        positions = (starts[first:last] - begin)[:, None] + np.arange(depth)
        out[first:last] = ranked[positions]


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
    topk: int | None = EvalProtocol.topk,
    ties: str = EvalProtocol.ties,
    relevance: np.ndarray | None = None,
    seed: int = EvalProtocol.seed,
) -> np.ndarray:
    """Ranks the database for every query and returns the top R indices.

    Args:
      distances: (Q, N) distances, smaller is closer (e.g. uint8 Hamming distances).
      scores: (Q, N) scores, larger is closer (e.g. AQD inner products). Pass exactly one
        of distances and scores.
      topk: R, the number of ranks to return; None for the whole database. R > N is
        clipped to N.
      ties: "index", "random", "optimistic" or "pessimistic" (module doc); the default
        is the protocol's (`EvalProtocol.ties`).
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
