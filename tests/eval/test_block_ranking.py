"""The vectorised block ranking of Hamming keys equals the per-query reference exactly.

`metrics._rank_block` ranks a whole block of queries at once; `metrics._rank_per_query`
is the original one-query-at-a-time loop, kept as the reference (and for float keys).
Every figure must be bit-identical, under every convention.
"""

import numpy as np
import pytest

from wsdhash.eval import binary, metrics, ranking
from wsdhash.eval.protocol import EvalProtocol
from wsdhash.eval.scorers import HammingScorer, MatrixScorer

TIES = ("index", "random", "optimistic", "pessimistic")


def clustered_problem(seed, num_queries=37, num_items=3000, bits=16, num_classes=5):
    """Few clusters and short codes: large tie groups, near duplicates, empty queries."""
    rng = np.random.default_rng(seed)
    centers = rng.random((6, bits)) < 0.5
    center_labels = rng.random((6, num_classes)) < 0.3

    def split(rows):
        cluster = rng.integers(0, len(centers), rows)
        codes = centers[cluster] ^ (rng.random((rows, bits)) < 0.08)
        labels = center_labels[cluster] | (rng.random((rows, num_classes)) < 0.05)
        return binary.pack_codes(codes), labels.astype(np.uint8)

    query_codes, query_labels = split(num_queries)
    database_codes, database_labels = split(num_items)
    query_labels[:3] = 0  # Queries with no relevant item at all.
    database_codes[5:40] = query_codes[0]  # Many items at distance 0 from query 0.
    return query_codes, query_labels, database_codes, database_labels


def both(monkeypatch, scorer, labels, protocol, **options):
    """(block ranking, per-query reference) results of the same call."""
    block = metrics.evaluate_retrieval(scorer, labels, protocol, **options)
    with monkeypatch.context() as patch:
        patch.setattr(metrics, "_BLOCK_RANKING", False)
        reference = metrics.evaluate_retrieval(scorer, labels, protocol, **options)
    return block, reference


def assert_identical(block, reference):
    assert block.map == reference.map
    assert block.map_name == reference.map_name
    assert block.num_scored_queries == reference.num_scored_queries
    np.testing.assert_array_equal(block.average_precisions, reference.average_precisions)
    assert block.map_optimistic == reference.map_optimistic
    assert block.map_pessimistic == reference.map_pessimistic
    assert block.precision_at_n == reference.precision_at_n
    assert block.hamming_radius == reference.hamming_radius
    assert block.precision_within_radius == reference.precision_within_radius
    for name in ("radii", "radius_precision", "radius_recall"):
        got, expected = getattr(block, name), getattr(reference, name)
        assert (got is None) == (expected is None), name
        if got is not None:
            np.testing.assert_array_equal(got, expected)


@pytest.fixture(params=["exact", "sampled", "sampled_too_low"])
def threshold_mode(request, monkeypatch):
    """Exact thresholds (small N), the sampled upper bound, and a bound that is often too
    low (forcing the per-row correction)."""
    if request.param != "exact":
        monkeypatch.setattr(ranking, "_SAMPLED_KEYS", 64)
    if request.param == "sampled_too_low":
        monkeypatch.setattr(ranking, "_SAMPLE_MARGIN", -3.0)
    return request.param


@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("empty", ["zero", "skip"])
@pytest.mark.parametrize("topk", [1, 7, 250, 2999, None, 10**6])
def test_block_ranking_equals_per_query_reference(monkeypatch, threshold_mode, ties, empty, topk):
    query_codes, query_labels, database_codes, database_labels = clustered_problem(1)
    block, reference = both(
        monkeypatch,
        HammingScorer(query_codes, database_codes),
        (query_labels, database_labels),
        EvalProtocol(
            topk=topk,
            ties=ties,
            empty=empty,
            seed=5,
            precision_at=(1, 3, 100),
            hamming_radius=2,
            radius_curve=False,
            tie_bounds=True,
        ),
        num_threads=2,
        query_chunk_size=8,
    )
    assert_identical(block, reference)
    if topk is None:
        assert block.map_optimistic > block.map_pessimistic  # Ties matter in this data.


@pytest.mark.parametrize("ties", TIES)
def test_precision_beyond_the_database(monkeypatch, threshold_mode, ties):
    query_codes, query_labels, database_codes, database_labels = clustered_problem(6)
    block, reference = both(
        monkeypatch,
        HammingScorer(query_codes, database_codes),
        (query_labels, database_labels),
        EvalProtocol(topk=30, ties=ties, precision_at=(1, 500, 2999, 3000, 5000), tie_bounds=True),
    )
    assert_identical(block, reference)


@pytest.mark.parametrize("ties", TIES)
@pytest.mark.parametrize("hamming_radius", [None, 0, 2, 5, 100])
@pytest.mark.parametrize("radius_curve", [False, True])
def test_radius_figures_equal_the_reference(
    monkeypatch, threshold_mode, ties, hamming_radius, radius_curve
):
    query_codes, query_labels, database_codes, database_labels = clustered_problem(2, bits=12)
    block, reference = both(
        monkeypatch,
        HammingScorer(query_codes, database_codes, 12),
        (query_labels, database_labels),
        EvalProtocol(
            topk=20,  # Query 0 has 35+ items at distance 0: the radius exceeds its threshold.
            ties=ties,
            hamming_radius=hamming_radius,
            radius_curve=radius_curve,
            tie_bounds=True,
        ),
        num_threads=1,
    )
    assert_identical(block, reference)
    if hamming_radius is not None:
        assert block.precision_within_radius is not None


@pytest.mark.parametrize("seed", range(3))
def test_random_problems_with_many_ties(monkeypatch, seed):
    rng = np.random.default_rng(100 + seed)
    num_queries, num_items, bits = 50, int(rng.integers(200, 5000)), int(rng.integers(3, 20))
    query_labels = (rng.random((num_queries, 70)) < 0.03).astype(np.uint8)  # Two mask words.
    database_labels = (rng.random((num_items, 70)) < 0.03).astype(np.uint8)
    query_codes = binary.pack_codes(rng.random((num_queries, bits)) < 0.5)
    database_codes = binary.pack_codes(rng.random((num_items, bits)) < 0.5)
    monkeypatch.setattr(ranking, "_SAMPLED_KEYS", int(rng.integers(16, 200)))
    for ties in TIES:
        block, reference = both(
            monkeypatch,
            HammingScorer(query_codes, database_codes),
            (query_labels, database_labels),
            EvalProtocol(
                topk=int(rng.integers(1, num_items + 50)), ties=ties, seed=seed, tie_bounds=True
            ),
            num_threads=2,
        )
        assert_identical(block, reference)


def test_long_codes_rank_uint16_distances(monkeypatch):
    # 300 bits: uint16 Hamming distances (exact thresholds, wide sort keys).
    query_codes, query_labels, database_codes, database_labels = clustered_problem(
        3, num_queries=9, num_items=700, bits=300
    )
    for ties in TIES:
        block, reference = both(
            monkeypatch,
            HammingScorer(query_codes, database_codes),
            (query_labels, database_labels),
            EvalProtocol(topk=50, ties=ties, tie_bounds=True),
        )
        assert_identical(block, reference)


def test_distance_matrix_with_values_above_bits(monkeypatch):
    # A uint8 distance matrix may hold values above the stated K; they are never within
    # any radius, but they still rank.
    rng = np.random.default_rng(4)
    distances = rng.integers(0, 9, (11, 400)).astype(np.uint8)
    query_labels = (rng.random((11, 3)) < 0.4).astype(np.uint8)
    database_labels = (rng.random((400, 3)) < 0.4).astype(np.uint8)
    for ties in TIES:
        block, reference = both(
            monkeypatch,
            MatrixScorer(distances=distances, bits=4),
            (query_labels, database_labels),
            EvalProtocol(topk=120, ties=ties, hamming_radius=3, tie_bounds=True),
        )
        assert_identical(block, reference)


def test_ranked_block_relevance_matches_order_candidates():
    rng = np.random.default_rng(5)
    counts = rng.integers(30, 90, 12)
    rows = np.repeat(np.arange(12), counts)
    keys = rng.integers(0, 6, len(rows)).astype(np.uint8)
    relevance = rng.random(len(rows)) < 0.4
    starts = np.concatenate([[0], np.cumsum(counts)])
    for ties in ("index", "optimistic", "pessimistic"):
        out = np.empty((12, 30), dtype=np.bool_)
        ranking.ranked_block_relevance(rows, keys, relevance, counts, 30, ties, out)
        for row in range(12):
            segment = slice(starts[row], starts[row + 1])
            order = ranking.order_candidates(keys[segment], 30, ties, relevance[segment])
            np.testing.assert_array_equal(out[row], relevance[segment][order])
