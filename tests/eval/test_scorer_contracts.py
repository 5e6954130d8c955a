"""Every scorer passes the scorer contract (tests/contracts.py): its ranking keys order
each query's items as a slow formula's distances do, block by block and after a column
permutation, and the chunked evaluator's mAP over it equals a brute-force ranking."""

import numpy as np
import pytest
from contracts import run_scorer_test

from wsdhash.eval import pack_codes
from wsdhash.eval.scorers import AQDScorer, FeatureScorer, HammingScorer, MatrixScorer

QUERIES, ITEMS = 11, 57


def _labels(rng):
    query = (rng.random((QUERIES, 4)) < 0.4).astype(np.uint8)
    database = (rng.random((ITEMS, 4)) < 0.4).astype(np.uint8)
    return query, database


@pytest.mark.parametrize("bits", [7, 16, 70])
def test_hamming_scorer(bits):
    rng = np.random.default_rng(bits)
    query = rng.integers(0, 2, (QUERIES, bits)).astype(bool)
    database = rng.integers(0, 2, (ITEMS, bits)).astype(bool)
    # Slow formula: count differing bits one pair at a time (many ties at 7 bits).
    reference = np.array([[sum(a != b) for b in database] for a in query])
    scorer = HammingScorer(pack_codes(query), pack_codes(database), bits=bits)
    run_scorer_test(scorer, reference, _labels(rng), topk=20)


def test_aqd_scorer():
    rng = np.random.default_rng(3)
    codebooks = rng.normal(size=(2, 256, 6)).astype(np.float32)
    indices = rng.integers(0, 256, (ITEMS, 2))
    query = rng.normal(size=(QUERIES, 6)).astype(np.float32)
    # Slow formula: larger inner product with the reconstruction is closer.
    reference = np.array(
        [
            [-float(np.dot(q, codebooks[0, i[0]] + codebooks[1, i[1]])) for i in indices]
            for q in query
        ]
    )
    run_scorer_test(AQDScorer(query, indices, codebooks), reference, _labels(rng), topk=None)


def test_feature_and_matrix_scorers():
    rng = np.random.default_rng(4)
    query = rng.normal(size=(QUERIES, 5)).astype(np.float32)
    database = rng.normal(size=(ITEMS, 5)).astype(np.float32)
    reference = -np.array([[float(np.dot(q, d)) for d in database] for q in query])
    run_scorer_test(FeatureScorer(query, database), reference, _labels(rng), topk=30)
    distances = rng.integers(0, 4, (QUERIES, ITEMS)).astype(np.float64)  # ties
    run_scorer_test(MatrixScorer(distances=distances), distances, _labels(rng), topk=30)
