"""Tests of lookup-table AQD / SQD scores and chunked AQD mAP."""

import numpy as np
import pytest

from wsdhash.eval import aqd_metrics, metrics
from wsdhash.eval.protocol import EvalProtocol
from wsdhash.eval.scorers import MatrixScorer
from wsdhash.quantization import aqd


def _problem(seed=0, num_queries=23, num_items=400, dimension=8, num_codebooks=3, num_codewords=16):
    rng = np.random.default_rng(seed)
    codebooks = rng.standard_normal((num_codebooks, num_codewords, dimension)).astype(np.float32)
    queries = rng.standard_normal((num_queries, dimension)).astype(np.float32)
    indices = rng.integers(0, num_codewords, (num_items, num_codebooks)).astype(np.uint8)
    query_labels = (rng.random((num_queries, 5)) < 0.3).astype(np.uint8)
    database_labels = (rng.random((num_items, 5)) < 0.2).astype(np.uint8)
    return queries, indices, codebooks, query_labels, database_labels


@pytest.mark.parametrize("num_codebooks", [1, 2, 3, 4])
def test_aqd_scores_equal_naive_inner_products(num_codebooks):
    queries, indices, codebooks, _, _ = _problem(num_codebooks=num_codebooks)
    expected = np.zeros((len(queries), len(indices)))
    for n, code in enumerate(indices):
        reconstruction = sum(codebooks[m, code[m]].astype(float) for m in range(num_codebooks))
        expected[:, n] = queries.astype(float) @ reconstruction
    np.testing.assert_allclose(aqd.aqd_scores(queries, indices, codebooks), expected, atol=1e-4)


def test_product_layout_scores_equal_concatenation():
    rng = np.random.default_rng(1)
    codebooks = rng.standard_normal((4, 16, 3)).astype(np.float32)  # D = 12
    queries = rng.standard_normal((5, 12)).astype(np.float32)
    indices = rng.integers(0, 16, (30, 4)).astype(np.uint8)
    reconstruction = np.concatenate([codebooks[m, indices[:, m]] for m in range(4)], axis=1)
    np.testing.assert_allclose(
        aqd.aqd_scores(queries, indices, codebooks), queries @ reconstruction.T, atol=1e-4
    )
    assert aqd.infer_layout(codebooks, 12) == "product"


def test_sqd_and_feature_scores_equal_naive():
    queries, indices, codebooks, _, _ = _problem(seed=2)
    query_indices = indices[:7]
    database_reconstruction = aqd.reconstruct(indices, codebooks)
    query_reconstruction = aqd.reconstruct(query_indices, codebooks)
    np.testing.assert_allclose(
        aqd.sqd_scores(query_indices, indices, codebooks),
        query_reconstruction @ database_reconstruction.T,
        atol=1e-4,
    )
    np.testing.assert_allclose(
        aqd.feature_scores(queries, database_reconstruction),
        queries @ database_reconstruction.T,
        atol=1e-5,
    )


@pytest.mark.parametrize("ties", ["index", "random", "optimistic", "pessimistic"])
@pytest.mark.parametrize("empty", ["zero", "skip"])
def test_chunked_map_equals_full_matrix_map(ties, empty):
    # Integer-valued codewords and queries make many exactly tied scores.
    queries, indices, codebooks, query_labels, database_labels = _problem(seed=3)
    codebooks = np.round(codebooks)
    queries = np.round(queries)
    query_labels[:3] = 0  # Queries without relevant items exercise `empty`.
    full = aqd.aqd_scores(queries, indices, codebooks)
    labels = (query_labels, database_labels)
    protocol = EvalProtocol(topk=50, ties=ties, empty=empty, seed=7).map_only()
    expected = metrics.evaluate_retrieval(MatrixScorer(scores=full), labels, protocol)
    expected_map, expected_per_query = expected.map, expected.average_precisions
    for chunk, threads in ((1, 1), (5, 2), (100, 1)):
        result = aqd_metrics.aqd_evaluate(
            queries,
            indices,
            codebooks,
            labels,
            protocol,
            query_chunk_size=chunk,
            num_threads=threads,
        )
        value, per_query = result.map, result.average_precisions
        assert value == pytest.approx(expected_map, abs=1e-12)
        np.testing.assert_allclose(per_query, expected_per_query, atol=1e-12)
    assert np.isnan(per_query[:3]).all() == (empty == "skip")


def test_evaluate_returns_names_and_counts():
    queries, indices, codebooks, query_labels, database_labels = _problem(seed=4)
    query_labels[0] = 0
    labels = (query_labels, database_labels)
    protocol = EvalProtocol(topk=30, empty="skip", precision_at=(10, 20))
    result = aqd_metrics.aqd_evaluate(
        queries, indices, codebooks, labels, protocol, query_chunk_size=4
    )
    assert result.map_name == "mAP@30[ties=index,empty=skip]"
    assert result.num_scored_queries <= len(queries) - 1
    full = metrics.evaluate_retrieval(
        MatrixScorer(scores=aqd.aqd_scores(queries, indices, codebooks)), labels, protocol
    )
    assert result.num_scored_queries == full.num_scored_queries
    for n in (10, 20):
        assert result.precision_at_n[n] == pytest.approx(full.precision_at_n[n], abs=1e-12)


def test_all_skipped_gives_zero():
    queries, indices, codebooks, query_labels, database_labels = _problem(seed=5)
    value = aqd_metrics.aqd_mean_average_precision(
        queries,
        indices,
        codebooks,
        (np.zeros_like(query_labels), database_labels),
        EvalProtocol(topk=5000, empty="skip"),
        query_chunk_size=4,
    )
    assert value == 0.0


def test_sqd_and_feature_map_run_through_the_evaluator():
    queries, indices, codebooks, query_labels, database_labels = _problem(seed=6)
    reconstruction = aqd.reconstruct(indices, codebooks)
    labels = (query_labels, database_labels)
    protocol = EvalProtocol(topk=40)
    value = aqd_metrics.sqd_mean_average_precision(
        indices[:23], indices, codebooks, labels, protocol, query_chunk_size=6
    )
    expected = metrics.mean_average_precision(
        MatrixScorer(scores=aqd.sqd_scores(indices[:23], indices, codebooks)), labels, protocol
    )
    assert value == pytest.approx(expected, abs=1e-12)
    value = aqd_metrics.feature_mean_average_precision(
        queries, reconstruction, labels, protocol, query_chunk_size=6
    )
    expected = metrics.mean_average_precision(
        MatrixScorer(scores=queries @ reconstruction.T), labels, protocol
    )
    assert value == pytest.approx(expected, abs=1e-12)


def test_clear_errors():
    queries, indices, codebooks, query_labels, database_labels = _problem()
    with pytest.raises(ValueError, match="neither"):
        aqd.aqd_scores(queries[:, :5], indices, codebooks)
    with pytest.raises(ValueError, match=r"\(N, M=3\)"):
        aqd.aqd_scores(queries, indices[:, :2], codebooks)
    with pytest.raises(ValueError, match="0..15"):
        aqd.aqd_scores(queries, np.full((2, 3), 16), codebooks)
    with pytest.raises(ValueError, match="must match"):
        aqd_metrics.aqd_mean_average_precision(
            queries, indices, codebooks, (query_labels[:3], database_labels), EvalProtocol()
        )
    with pytest.raises(ValueError, match="empty"):
        EvalProtocol(empty="nan")
    with pytest.raises(ValueError, match="tie"):
        EvalProtocol(ties="stable")
    with pytest.raises(ValueError, match="product"):
        aqd.lookup_tables(queries, codebooks, layout="product")
