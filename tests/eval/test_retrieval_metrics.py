"""Tests for wsdhash.eval ranking, relevance and metrics.

The fast code is checked against a slow, obviously correct per-query loop written
here (Hamming by unpacked bits, a Python sort on explicit (distance, tie key, index)
keys, AP by its formula), on short codes where ties are everywhere, and on tiny
inputs whose results are worked by hand.
"""

import itertools

import numpy as np
import pytest

from wsdhash.eval import binary, metrics, ranking, relevance
from wsdhash.eval.protocol import EvalProtocol
from wsdhash.eval.scorers import HammingScorer, MatrixScorer

TIES = ("index", "random", "optimistic", "pessimistic")
EMPTIES = ("zero", "skip")


# --- Slow reference ----------------------------------------------------------------


def reference_hamming(query_bits, database_bits):
    """Hamming distances from {0,1} bit lists, one pair at a time."""
    return [[sum(a != b for a, b in zip(q, d)) for d in database_bits] for q in query_bits]


def reference_ranking(keys_row, relevant_row, ties, seed):
    """All database indices sorted by (key, tie key, index), smallest first."""
    num_items = len(keys_row)
    position = {}
    if ties == "random":
        permutation = np.random.default_rng(seed).permutation(num_items)
        position = {int(item): place for place, item in enumerate(permutation)}

    def sort_key(item):
        if ties == "random":
            tie_key = position[item]
        elif ties == "optimistic":
            tie_key = 0 if relevant_row[item] else 1
        elif ties == "pessimistic":
            tie_key = 1 if relevant_row[item] else 0
        else:
            tie_key = 0
        return (keys_row[item], tie_key, item)

    return sorted(range(num_items), key=sort_key)


def reference_ap(order, relevant_row, topk):
    """AP@R by the formula; returns (AP, X)."""
    top = order if topk is None else order[:topk]
    hits, total = 0, 0.0
    for rank, item in enumerate(top, start=1):
        if relevant_row[item]:
            hits += 1
            total += hits / rank
    return (total / hits if hits else 0.0), hits


def reference_map(keys, relevant, topk, ties, empty, seed):
    aps, xs = [], []
    for keys_row, relevant_row in zip(keys, relevant):
        ap, x = reference_ap(
            reference_ranking(keys_row, relevant_row, ties, seed), relevant_row, topk
        )
        aps.append(ap)
        xs.append(x)
    if empty == "zero":
        return float(np.mean(aps))
    scored = [ap for ap, x in zip(aps, xs) if x > 0]
    return float(np.mean(scored)) if scored else 0.0


def reference_relevance(query_labels, database_labels):
    return [[any(a and b for a, b in zip(q, d)) for d in database_labels] for q in query_labels]


def random_problem(seed, num_queries=20, num_items=300, bits=12, num_classes=6, label_rate=0.15):
    """Short random codes (so there are many ties) and sparse multi-hot labels."""
    rng = np.random.default_rng(seed)
    query_bits = rng.random((num_queries, bits)) < 0.5
    database_bits = rng.random((num_items, bits)) < 0.5
    query_labels = (rng.random((num_queries, num_classes)) < label_rate).astype(np.uint8)
    database_labels = (rng.random((num_items, num_classes)) < label_rate).astype(np.uint8)
    query_labels[0] = 0  # A query with no relevant item at all.
    return query_bits, database_bits, query_labels, database_labels


# --- Relevance ---------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [1, 5, 64, 65, 130])
def test_relevance_matches_reference_for_any_class_count(num_classes):
    rng = np.random.default_rng(num_classes)
    query_labels = (rng.random((9, num_classes)) < 0.05).astype(np.uint8)
    database_labels = (rng.random((31, num_classes)) < 0.05).astype(np.uint8)
    expected = reference_relevance(query_labels.tolist(), database_labels.tolist())
    np.testing.assert_array_equal(
        relevance.relevance_matrix(query_labels, database_labels), expected
    )


# --- Ranking -----------------------------------------------------------------------


@pytest.mark.parametrize("ties", TIES)
def test_rank_database_matches_reference(ties):
    query_bits, database_bits, query_labels, database_labels = random_problem(1)
    distances = binary.hamming_distances(
        binary.pack_codes(query_bits), binary.pack_codes(database_bits)
    )
    relevant = relevance.relevance_matrix(query_labels, database_labels)
    num_items = len(database_bits)
    for topk in (None, 1, 13, num_items, num_items + 5):
        ranked = ranking.rank_database(distances, topk=topk, ties=ties, relevance=relevant, seed=7)
        depth = num_items if topk is None else min(topk, num_items)
        assert ranked.shape == (len(query_bits), depth)
        for query in range(len(query_bits)):
            expected = reference_ranking(distances[query].tolist(), relevant[query], ties, 7)[
                :depth
            ]
            np.testing.assert_array_equal(ranked[query], expected)


@pytest.mark.parametrize("ties", TIES)
def test_descending_scores_rank_like_negated_distances(ties):
    rng = np.random.default_rng(2)
    # Few distinct float values, so ties are frequent.
    scores = rng.integers(-3, 4, size=(15, 120)).astype(np.float32) * 0.25
    relevant = rng.random((15, 120)) < 0.3
    by_scores = ranking.rank_database(scores=scores, topk=40, ties=ties, relevance=relevant, seed=3)
    by_distances = ranking.rank_database(-scores, topk=40, ties=ties, relevance=relevant, seed=3)
    np.testing.assert_array_equal(by_scores, by_distances)
    for query in range(15):
        expected = reference_ranking((-scores[query]).tolist(), relevant[query], ties, 3)[:40]
        np.testing.assert_array_equal(by_scores[query], expected)


def test_unsigned_scores_do_not_wrap_when_negated():
    scores = np.array([[0, 200, 3, 200]], dtype=np.uint8)
    np.testing.assert_array_equal(ranking.rank_database(scores=scores), [[1, 3, 2, 0]])


def test_rank_database_rejects_bad_arguments():
    distances = np.zeros((2, 3), np.uint8)
    with pytest.raises(ValueError, match="exactly one"):
        ranking.rank_database(distances, scores=distances)
    with pytest.raises(ValueError, match="None"):
        ranking.rank_database(distances, topk=-1)
    with pytest.raises(ValueError, match="None"):
        ranking.rank_database(distances, topk=0)
    with pytest.raises(ValueError, match="tie policy"):
        ranking.rank_database(distances, ties="first")
    with pytest.raises(ValueError, match="relevance"):
        ranking.rank_database(distances, ties="optimistic")
    with pytest.raises(ValueError, match="NaN"):
        ranking.rank_database(np.array([[0.0, np.nan]]))


# --- mAP against the reference -----------------------------------------------------


@pytest.mark.parametrize("ties,empty", list(itertools.product(TIES, EMPTIES)))
def test_map_matches_reference(ties, empty):
    query_bits, database_bits, query_labels, database_labels = random_problem(3)
    query_codes, database_codes = binary.pack_codes(query_bits), binary.pack_codes(database_bits)
    distances = reference_hamming(
        query_bits.astype(int).tolist(), database_bits.astype(int).tolist()
    )
    relevant = reference_relevance(query_labels.tolist(), database_labels.tolist())
    num_items = len(database_bits)
    for topk in (None, 1, 5, 50, num_items, num_items + 10):
        expected = reference_map(distances, relevant, topk, ties, empty, seed=11)
        # Two threads and two query chunks, to cover the chunked path.
        fast = metrics.mean_average_precision(
            HammingScorer(query_codes, database_codes),
            (query_labels, database_labels),
            EvalProtocol(topk=topk, ties=ties, empty=empty, seed=11),
            num_threads=2,
        )
        assert fast == pytest.approx(expected, abs=1e-12), (topk, fast, expected)


@pytest.mark.parametrize("ties", TIES)
def test_map_from_scores_matches_reference(ties):
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 6, size=(12, 90)).astype(np.float64)
    query_labels = (rng.random((12, 4)) < 0.3).astype(np.uint8)
    database_labels = (rng.random((90, 4)) < 0.3).astype(np.uint8)
    relevant = reference_relevance(query_labels.tolist(), database_labels.tolist())
    for topk in (None, 10):
        expected = reference_map((-scores).tolist(), relevant, topk, ties, "zero", seed=5)
        fast = metrics.mean_average_precision(
            MatrixScorer(scores=scores),
            (query_labels, database_labels),
            EvalProtocol(topk=topk, ties=ties, seed=5),
        )
        assert fast == pytest.approx(expected, abs=1e-12)


def test_codes_scores_and_distances_agree():
    query_bits, database_bits, query_labels, database_labels = random_problem(5, bits=16)
    query_pm = np.where(query_bits, 1, -1)
    database_pm = np.where(database_bits, 1, -1)
    inner = (query_pm @ database_pm.T).astype(np.float32)  # Larger is closer.
    hamming = binary.hamming_distances(
        binary.pack_codes(query_bits), binary.pack_codes(database_bits)
    )
    labels = (query_labels, database_labels)
    protocol = EvalProtocol(topk=25, ties="index")
    codes = HammingScorer(binary.pack_codes(query_bits), binary.pack_codes(database_bits))
    from_codes = metrics.mean_average_precision(codes, labels, protocol)
    from_scores = metrics.mean_average_precision(MatrixScorer(scores=inner), labels, protocol)
    from_distances = metrics.mean_average_precision(
        MatrixScorer(distances=hamming), labels, protocol
    )
    assert from_codes == from_scores == from_distances


# --- Hand-worked cases -------------------------------------------------------------
#
# One query (code 00, label A) against five items with K = 2 bits:
#   item:      0    1    2    3    4
#   code:      01   00   10   11   01
#   distance:  1    0    1    2    1
#   labels:    A    B    B    AB   A
#   relevant:  1    0    0    1    1
# Ranks by distance: item 1 (d=0), then the tie {0, 2, 4} at d=1, then item 3 (d=2).
#   index:       1, 0, 2, 4, 3 -> rel 0 1 0 1 1 -> AP@all = (1/2 + 2/4 + 3/5) / 3 = 0.533333
#   optimistic:  1, 0, 4, 2, 3 -> rel 0 1 1 0 1 -> AP@all = (1/2 + 2/3 + 3/5) / 3 = 0.588889
#   pessimistic: 1, 2, 0, 4, 3 -> rel 0 0 1 1 1 -> AP@all = (1/3 + 2/4 + 3/5) / 3 = 0.477778
# AP@2: index and optimistic rel 0 1 -> X = 1, AP = (1/2) / 1 = 0.5; pessimistic rel 0 0
#   -> X = 0, so AP = 0 under empty="zero" and the query is skipped under "skip".
# P@1 = 0, P@2 = 1/2 (index), P@10 is clipped to P@5 = 3/5.
# Radius r: retrieved {1} / {0,1,2,4} / all; relevant retrieved 0 / 2 / 3 of 3:
#   precision 0, 2/4, 3/5; recall 0, 2/3, 1.

HAND_QUERY_CODES = binary.pack_codes(np.array([[0, 0]]))
HAND_DATABASE_CODES = binary.pack_codes(np.array([[0, 1], [0, 0], [1, 0], [1, 1], [0, 1]]))
HAND_QUERY_LABELS = np.array([[1, 0]], np.uint8)
HAND_DATABASE_LABELS = np.array([[1, 0], [0, 1], [0, 1], [1, 1], [1, 0]], np.uint8)
HAND_AP_ALL = {
    "index": 1.6 / 3,
    "optimistic": (0.5 + 2 / 3 + 0.6) / 3,
    "pessimistic": (1 / 3 + 0.5 + 0.6) / 3,
}


def hand_metrics(**conventions):
    return metrics.evaluate_retrieval(
        HammingScorer(HAND_QUERY_CODES, HAND_DATABASE_CODES, 2),
        (HAND_QUERY_LABELS, HAND_DATABASE_LABELS),
        EvalProtocol(**conventions),
    )


@pytest.mark.parametrize("ties", ["index", "optimistic", "pessimistic"])
def test_hand_worked_map(ties):
    assert hand_metrics(ties=ties).map == pytest.approx(HAND_AP_ALL[ties], abs=1e-12)
    # R = None equals R = N equals any R > N.
    assert hand_metrics(ties=ties, topk=5).map == pytest.approx(HAND_AP_ALL[ties], abs=1e-12)
    assert hand_metrics(ties=ties, topk=99).map == pytest.approx(HAND_AP_ALL[ties], abs=1e-12)


@pytest.mark.parametrize(
    "ties,empty,expected,scored",
    [
        ("index", "zero", 0.5, 1),
        ("index", "skip", 0.5, 1),
        ("optimistic", "zero", 0.5, 1),
        ("pessimistic", "zero", 0.0, 1),
        ("pessimistic", "skip", 0.0, 0),  # All queries skipped: reported as 0.0.
    ],
)
def test_hand_worked_map_at_2(ties, empty, expected, scored):
    result = hand_metrics(ties=ties, empty=empty, topk=2)
    assert result.map == pytest.approx(expected, abs=1e-12)
    assert result.num_scored_queries == scored
    if scored == 0:
        assert np.isnan(result.average_precisions).all()


def test_hand_worked_random_ties_take_every_possible_order():
    # The irrelevant item 2 lands first, second or third in the tie {0, 2, 4}, giving the
    # pessimistic, index and optimistic values above; over many seeds all three occur.
    values = {round(hand_metrics(ties="random", seed=seed).map, 9) for seed in range(40)}
    assert values == {round(v, 9) for v in HAND_AP_ALL.values()}


def test_random_ties_are_index_ties_on_the_permuted_database():
    permutation = np.random.default_rng(6).permutation(5)
    shuffled = metrics.evaluate_retrieval(
        HammingScorer(HAND_QUERY_CODES, HAND_DATABASE_CODES[permutation]),
        (HAND_QUERY_LABELS, HAND_DATABASE_LABELS[permutation]),
        EvalProtocol(ties="index"),
    )
    assert hand_metrics(ties="random", seed=6).map == shuffled.map


def test_hand_worked_precision_curves():
    result = hand_metrics(precision_at=(1, 2, 10), tie_bounds=True)
    assert result.precision_at_n == pytest.approx({1: 0.0, 2: 0.5, 10: 0.6})
    np.testing.assert_array_equal(result.radii, [0, 1, 2])
    np.testing.assert_allclose(result.radius_precision, [0.0, 0.5, 0.6])
    np.testing.assert_allclose(result.radius_recall, [0.0, 2 / 3, 1.0])
    assert result.precision_within_radius == pytest.approx(0.6)
    assert result.map_optimistic == pytest.approx(HAND_AP_ALL["optimistic"])
    assert result.map_pessimistic == pytest.approx(HAND_AP_ALL["pessimistic"])
    assert result.tie_bounds_matter()


def test_hand_worked_empty_policies_with_a_query_without_relevant_items():
    # Second query (code 11) has no labels: AP = 0 under "zero", skipped under "skip".
    # Its radius-0 retrieval is item 3 (precision 0, recall 0 by the zero rule).
    query_codes = binary.pack_codes(np.array([[0, 0], [1, 1]]))
    query_labels = np.array([[1, 0], [0, 0]], np.uint8)
    scorer = HammingScorer(query_codes, HAND_DATABASE_CODES, 2)
    labels = (query_labels, HAND_DATABASE_LABELS)
    zero = metrics.evaluate_retrieval(scorer, labels, EvalProtocol(empty="zero"))
    skip = metrics.evaluate_retrieval(scorer, labels, EvalProtocol(empty="skip"))
    assert zero.map == pytest.approx(HAND_AP_ALL["index"] / 2)
    assert skip.map == pytest.approx(HAND_AP_ALL["index"])
    assert skip.num_scored_queries == 1 and np.isnan(skip.average_precisions[1])
    np.testing.assert_allclose(zero.radius_recall, [0.0, 1 / 3, 0.5])


def test_query_retrieving_nothing_within_radius_has_precision_zero():
    # Query 11 vs database {00, 00}: nothing within radius 0 or 1, both items at radius 2.
    result = metrics.evaluate_retrieval(
        HammingScorer(
            binary.pack_codes(np.array([[1, 1]])), binary.pack_codes(np.array([[0, 0], [0, 0]])), 2
        ),
        (np.array([[1]], np.uint8), np.array([[1], [0]], np.uint8)),
        EvalProtocol(hamming_radius=1),
    )
    np.testing.assert_allclose(result.radius_precision, [0.0, 0.0, 0.5])
    np.testing.assert_allclose(result.radius_recall, [0.0, 0.0, 1.0])
    assert result.precision_within_radius == 0.0


# --- Properties --------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_tie_bounds_order_and_r_none_equals_r_n(seed):
    query_bits, database_bits, query_labels, database_labels = random_problem(seed, bits=8)
    scorer = HammingScorer(binary.pack_codes(query_bits), binary.pack_codes(database_bits))
    labels = (query_labels, database_labels)
    for topk in (None, 30):
        values = {
            ties: metrics.mean_average_precision(scorer, labels, EvalProtocol(topk=topk, ties=ties))
            for ties in TIES
        }
        assert values["optimistic"] >= values["index"] >= values["pessimistic"]
        assert values["optimistic"] >= values["random"] >= values["pessimistic"]
        assert values["optimistic"] > values["pessimistic"]  # 8 bits: ties everywhere.
    num_items = len(database_bits)
    for ties in TIES:
        whole = metrics.mean_average_precision(scorer, labels, EvalProtocol(topk=None, ties=ties))
        at_n = metrics.mean_average_precision(
            scorer, labels, EvalProtocol(topk=num_items, ties=ties)
        )
        assert whole == at_n


@pytest.mark.parametrize("ties", TIES)
def test_precision_curves_match_reference(ties):
    query_bits, database_bits, query_labels, database_labels = random_problem(8, bits=10)
    bits = 10
    distances = reference_hamming(
        query_bits.astype(int).tolist(), database_bits.astype(int).tolist()
    )
    relevant = reference_relevance(query_labels.tolist(), database_labels.tolist())
    num_items = len(database_bits)
    precision_at = (1, 10, 100, num_items, 1000)
    result = metrics.evaluate_retrieval(
        HammingScorer(binary.pack_codes(query_bits), binary.pack_codes(database_bits), bits),
        (query_labels, database_labels),
        EvalProtocol(topk=7, ties=ties, seed=2, precision_at=precision_at),
        num_threads=2,
    )
    for n in precision_at:
        clipped = min(n, num_items)
        expected = np.mean(
            [
                sum(
                    relevant_row[i] for i in reference_ranking(row, relevant_row, ties, 2)[:clipped]
                )
                / clipped
                for row, relevant_row in zip(distances, relevant)
            ]
        )
        assert result.precision_at_n[n] == pytest.approx(expected, abs=1e-12)

    precision = np.zeros(bits + 1)
    recall = np.zeros(bits + 1)
    for row, relevant_row in zip(distances, relevant):
        total_relevant = sum(relevant_row)
        for radius in range(bits + 1):
            retrieved = [i for i in range(num_items) if row[i] <= radius]
            hits = sum(relevant_row[i] for i in retrieved)
            precision[radius] += hits / len(retrieved) if retrieved else 0.0
            recall[radius] += hits / total_relevant if total_relevant else 0.0
    np.testing.assert_allclose(result.radius_precision, precision / len(distances), atol=1e-12)
    np.testing.assert_allclose(result.radius_recall, recall / len(distances), atol=1e-12)
    assert result.precision_within_radius == pytest.approx(precision[2] / len(distances), abs=1e-12)
    assert (precision[:3] < len(distances)).all()  # Some queries retrieve little at small r.


def test_map_is_invariant_to_permuting_label_columns_and_flipping_a_bit_everywhere():
    query_bits, database_bits, query_labels, database_labels = random_problem(9, bits=12)
    base = metrics.mean_average_precision(
        HammingScorer(binary.pack_codes(query_bits), binary.pack_codes(database_bits)),
        (query_labels, database_labels),
        EvalProtocol(topk=40),
    )
    columns = np.random.default_rng(0).permutation(query_labels.shape[1])
    query_bits[:, 3] ^= True
    database_bits[:, 3] ^= True
    moved = metrics.mean_average_precision(
        HammingScorer(binary.pack_codes(query_bits), binary.pack_codes(database_bits)),
        (query_labels[:, columns], database_labels[:, columns]),
        EvalProtocol(topk=40),
    )
    assert base == moved


def test_chunking_does_not_change_results(monkeypatch):
    query_bits, database_bits, query_labels, database_labels = random_problem(10, bits=8)
    scorer = HammingScorer(binary.pack_codes(query_bits), binary.pack_codes(database_bits))
    labels = (query_labels, database_labels)
    protocol = EvalProtocol(topk=50, ties="random", seed=4, tie_bounds=True)
    whole = metrics.evaluate_retrieval(scorer, labels, protocol, num_threads=1)
    monkeypatch.setattr(metrics, "_CHUNK_BYTES", 1)  # One query per chunk.
    chunked = metrics.evaluate_retrieval(scorer, labels, protocol, num_threads=2)
    assert whole.map == chunked.map
    assert whole.map_optimistic == chunked.map_optimistic
    np.testing.assert_array_equal(whole.average_precisions, chunked.average_precisions)
    assert whole.precision_at_n == chunked.precision_at_n


def test_per_query_average_precisions_are_returned():
    query_bits, database_bits, query_labels, database_labels = random_problem(11)
    result = metrics.evaluate_retrieval(
        HammingScorer(binary.pack_codes(query_bits), binary.pack_codes(database_bits)),
        (query_labels, database_labels),
        EvalProtocol(topk=20, empty="skip").map_only(),
    )
    value, per_query = result.map, result.average_precisions
    assert per_query.shape == (len(query_bits),)
    assert np.isnan(per_query[0])  # Query 0 has no label, so X = 0.
    assert value == pytest.approx(np.nanmean(per_query))


def test_metric_name():
    name = EvalProtocol(topk=5000, ties="index", empty="zero").map_name
    assert name == "mAP@5000[ties=index,empty=zero]"
    name = EvalProtocol(topk=None, ties="pessimistic", empty="skip").map_name
    assert name == "mAP@all[ties=pessimistic,empty=skip]"
    name = EvalProtocol(topk=10, ties="random", empty="zero", seed=3).map_name
    assert name == "mAP@10[ties=random,seed=3,empty=zero]"
    with pytest.raises(ValueError):
        EvalProtocol(topk=-1)


def test_evaluate_rejects_mismatched_inputs():
    codes = binary.pack_codes(np.ones((3, 8)))
    labels = np.ones((3, 2), np.uint8)
    scorer = HammingScorer(codes, codes)
    with pytest.raises(ValueError, match="classes"):
        metrics.evaluate_retrieval(scorer, (labels, np.ones((3, 3))))
    with pytest.raises(ValueError, match="labels have"):
        metrics.evaluate_retrieval(scorer, (labels, np.ones((4, 2))))
    with pytest.raises(ValueError, match="bits=9"):
        HammingScorer(codes, codes, bits=9)
    with pytest.raises(ValueError, match="empty policy"):
        EvalProtocol(empty="drop")
    with pytest.raises(ValueError, match="tie policy"):
        EvalProtocol(ties="first")


def test_memory_stays_bounded_over_many_chunks(monkeypatch):
    import tracemalloc

    rng = np.random.default_rng(12)
    query_codes = binary.pack_codes(rng.random((300, 8)) < 0.5)
    database_codes = binary.pack_codes(rng.random((20000, 8)) < 0.5)
    query_labels = (rng.random((300, 3)) < 0.3).astype(np.uint8)
    database_labels = (rng.random((20000, 3)) < 0.3).astype(np.uint8)
    monkeypatch.setattr(metrics, "_CHUNK_BYTES", 1)  # 300 chunks of one query.
    tracemalloc.start()
    try:
        metrics.evaluate_retrieval(
            HammingScorer(query_codes, database_codes),
            (query_labels, database_labels),
            EvalProtocol(topk=None, tie_bounds=True),
            num_threads=2,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Per chunk a few (1, N) arrays are live (~1 MiB); anything kept per chunk would add
    # ~0.5 MiB x 300 chunks.
    assert peak < 16 * 2**20, peak / 2**20
