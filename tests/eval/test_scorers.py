"""Scorers: every code kind goes through the one chunked evaluator and gets the same
conventions (tie bounds included) as a full score matrix; codes files name their
scorer."""

import h5py
import numpy as np
import pytest

from wsdhash.eval import (
    CodesFile,
    CodesSplit,
    metrics,
    pack_codes,
    read_codes_file,
    scorers,
    write_codes_file,
)
from wsdhash.eval.codes_file import seal
from wsdhash.eval.file_evaluation import evaluate_codes_file
from wsdhash.eval.protocol import EvalProtocol
from wsdhash.quantization import aqd


def _problem(seed=0, queries=17, items=60, dim=6, books=3, words=8):
    rng = np.random.default_rng(seed)
    codebooks = np.round(rng.normal(size=(books, words, dim)))  # integers: many exact ties
    indices = rng.integers(0, words, (items, books)).astype(np.uint8)
    features = np.round(rng.normal(size=(queries, dim)))
    labels = lambda n: (rng.random((n, 4)) < 0.3).astype(np.uint8)
    return features, indices, codebooks.astype(np.float32), labels(queries), labels(items)


@pytest.mark.parametrize("ties", ["index", "random", "optimistic", "pessimistic"])
def test_aqd_scorer_equals_the_full_matrix_with_tie_bounds(ties):
    features, indices, codebooks, query_labels, database_labels = _problem()
    full = aqd.aqd_scores(features, indices, codebooks)
    protocol = EvalProtocol(topk=25, ties=ties, seed=3, precision_at=(5, 10), tie_bounds=True)
    labels = (query_labels, database_labels)
    expected = metrics.evaluate_retrieval(scorers.MatrixScorer(scores=full), labels, protocol)
    for chunk in (1, 4, None):
        got = metrics.evaluate_retrieval(
            scorers.AQDScorer(features, indices, codebooks),
            labels,
            protocol,
            query_chunk_size=chunk,
        )
        assert got.map == expected.map
        assert got.map_optimistic == expected.map_optimistic
        assert got.map_pessimistic == expected.map_pessimistic
        assert got.map_optimistic >= got.map >= got.map_pessimistic
        np.testing.assert_array_equal(got.average_precisions, expected.average_precisions)
        assert got.precision_at_n == pytest.approx(expected.precision_at_n, abs=1e-12)
    assert expected.map_optimistic > expected.map_pessimistic  # the ties do matter here


def test_hamming_and_feature_scorers_equal_their_matrices():
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, (30, 12)) * 2 - 1
    packed = pack_codes(bits)
    labels = (rng.random((30, 3)) < 0.4).astype(np.uint8)
    protocol = EvalProtocol(topk=10)
    by_scorer = metrics.evaluate_retrieval(
        scorers.HammingScorer(packed[:9], packed, bits=12), (labels[:9], labels), protocol
    )
    distances = scorers.HammingScorer(packed[:9], packed, bits=12).keys(0, 9)
    by_matrix = metrics.evaluate_retrieval(
        scorers.MatrixScorer(distances=distances, bits=12), (labels[:9], labels), protocol
    )
    assert by_scorer.map == by_matrix.map and by_scorer.radius_precision is not None
    np.testing.assert_array_equal(by_scorer.radius_recall, by_matrix.radius_recall)
    features = rng.normal(size=(30, 5)).astype(np.float32)
    scorer = scorers.FeatureScorer(features[:9], features)
    np.testing.assert_array_equal(scorer.keys(0, 9), -(features[:9] @ features.T))


def _codes_file(path, quantized):
    features, indices, codebooks, query_labels, database_labels = _problem(seed=2, words=256)
    features = features.astype(np.float32)
    rng = np.random.default_rng(2)
    binary = lambda n: pack_codes(rng.integers(0, 2, (n, 16)) * 2 - 1)
    extra = {"codebooks": codebooks} if quantized else {}
    contents = CodesFile(
        bits=24 if quantized else 16,
        query=CodesSplit(
            indices[:17] if quantized else binary(17), query_labels, features=features
        ),
        database=CodesSplit(
            indices if quantized else binary(60),
            database_labels,
            indices=indices if quantized else None,
        ),
        **extra,
    )
    write_codes_file(path, contents)
    return contents


@pytest.mark.parametrize("quantized", [False, True])
def test_codes_files_name_their_scorer(tmp_path, quantized):
    path = tmp_path / "codes.h5"
    written = _codes_file(path, quantized)
    name = "aqd" if quantized else "hamming"
    with h5py.File(path, "r") as f:
        assert f.attrs["scorer"] == name
    contents = read_codes_file(path)
    assert contents.scorer == name == written.scorer
    assert scorers.scorer_kind(contents).title == ("AQD" if quantized else "Hamming")
    result = evaluate_codes_file(contents, EvalProtocol(topk=20, tie_bounds=True))
    assert (result.precision_within_radius is None) == quantized  # radius: Hamming only
    assert result.map_optimistic is not None  # tie bounds for both kinds
    # The attribute is required (files of this format always have it); an unknown one
    # is refused. (Resealed: the edits get a matching checksum.)
    with h5py.File(path, "a") as f:
        del f.attrs["scorer"]
    seal(path)
    with pytest.raises(ValueError, match="missing root attribute 'scorer'"):
        read_codes_file(path)
    with h5py.File(path, "a") as f:
        f.attrs["scorer"] = "cosine"
    seal(path)
    with pytest.raises(ValueError, match="unknown scorer 'cosine'"):
        read_codes_file(path)
