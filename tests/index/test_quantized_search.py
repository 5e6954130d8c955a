"""QuantizedIndex.search (chunked, threaded, bounded top-k) against the implementation
it replaced, kept here as the slow reference: the same ids, distances and tie order."""

import numpy as np
import pytest

from wsdhash.index.quantized import QuantizedIndex
from wsdhash.index.results import SearchResult, sort_rows
from wsdhash.quantization import aqd


def _previous_search(codebooks, indices, queries, k, chunk_items=262144):
    """The search before issue 15: (Q, chunk) scores, argpartition, merge by sort_rows."""
    tables = aqd.lookup_tables(queries, codebooks, layout="additive")
    k = int(min(k, len(indices)))
    best_d = np.full((len(tables), 0), np.inf, np.float32)
    best_p = np.zeros((len(tables), 0), np.int64)
    for start in range(0, len(indices), chunk_items):
        stop = min(start + chunk_items, len(indices))
        distances = -aqd.scores_from_tables(tables, indices[start:stop])
        take = min(k, stop - start)
        part = np.argpartition(distances, take - 1, axis=1)[:, :take]
        best_d = np.concatenate([best_d, np.take_along_axis(distances, part, 1)], axis=1)
        best_p = np.concatenate([best_p, part + start], axis=1)
        merged = sort_rows(best_d, best_p, k)
        best_d, best_p = merged.distances, merged.positions
    return SearchResult(best_d, best_p)


def _full_sort(codebooks, indices, queries, k):
    """Every item sorted by (distance, position): the order ties at the k-th follow."""
    distances = -aqd.scores_from_tables(
        aqd.lookup_tables(queries, codebooks, layout="additive"), indices
    )
    positions = np.broadcast_to(np.arange(len(indices)), distances.shape)
    return sort_rows(distances, positions, k)


def _assert_equals_previous(got, codebooks, indices, queries, k, **previous_kwargs):
    """Equal to the previous search; where several items tie at the k-th distance, the
    previous search's argpartition kept any of them, the new one keeps the lowest
    positions: checked there against a full sort by (distance, position)."""
    previous = _previous_search(codebooks, indices, queries, k, **previous_kwargs)
    k = previous.positions.shape[1]
    full = _full_sort(codebooks, indices, queries, k + 1)
    _assert_same(got, SearchResult(full.distances[:, :k], full.positions[:, :k]))
    np.testing.assert_array_equal(got.distances.view(np.int32), previous.distances.view(np.int32))
    clean = np.ones(len(queries), bool)
    if full.positions.shape[1] > k:
        clean = full.distances[:, k - 1] != full.distances[:, k]
    np.testing.assert_array_equal(got.positions[clean], previous.positions[clean])
    return clean


def _assert_same(got, expected):
    assert got.distances.dtype == expected.distances.dtype == np.float32
    assert got.positions.dtype == expected.positions.dtype == np.int64
    np.testing.assert_array_equal(got.positions, expected.positions)
    # Bit for bit, the sign of zero included.
    np.testing.assert_array_equal(got.distances.view(np.int32), expected.distances.view(np.int32))


def _data(seed, num_items, num_codebooks, num_queries, dimension=12, codewords=256):
    rng = np.random.default_rng(seed)
    codebooks = rng.normal(size=(num_codebooks, codewords, dimension)).astype(np.float32)
    indices = rng.integers(0, codewords, (num_items, num_codebooks)).astype(np.uint8)
    queries = rng.normal(size=(num_queries, dimension)).astype(np.float32)
    return codebooks, indices, queries


@pytest.mark.parametrize("num_codebooks", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("k", [1, 10, 300, 5000])
def test_search_equals_previous_implementation(num_codebooks, k):
    codebooks, indices, queries = _data(num_codebooks, 3000, num_codebooks, 37)
    index = QuantizedIndex(codebooks, chunk_items=512, query_chunk=8, num_threads=3)
    got = index.build(indices).search(queries, k)
    assert got.positions.shape == (37, min(k, 3000))
    clean = _assert_equals_previous(got, codebooks, indices, queries, k)
    if num_codebooks >= 3:  # 256**3 codes for 3000 items: no ties
        assert clean.all()


def test_default_chunks_equal_previous_implementation():
    codebooks, indices, queries = _data(7, 20000, 4, 70, dimension=16)
    got = QuantizedIndex(codebooks).build(indices).search(queries, 100)
    assert _assert_equals_previous(got, codebooks, indices, queries, 100).all()


@pytest.mark.parametrize("k", [1, 7, 64, 200])
def test_ties_by_position_across_chunks(k):
    """Few distinct distances (8 codewords, integer tables): ties everywhere, also at
    the k-th. Kept ties are the lowest positions; the previous search's argpartition
    chose among ties at the k-th arbitrarily, so compare with a full sort, and with the
    previous search wherever no tie straddles the k-th."""
    rng = np.random.default_rng(k)
    codebooks = rng.integers(-2, 3, (3, 8, 4)).astype(np.float32)
    codebooks[:, 0] = 0.0  # scores of exactly zero: distance -0.0
    indices = rng.integers(0, 8, (1000, 3)).astype(np.uint8)
    queries = rng.integers(-1, 2, (11, 4)).astype(np.float32)
    queries[0] = 0.0  # every score zero: all tied
    index = QuantizedIndex(codebooks, chunk_items=100, query_chunk=4, num_threads=2)
    got = index.build(indices).search(queries, k)
    _assert_equals_previous(got, codebooks, indices, queries, k, chunk_items=100)
    np.testing.assert_array_equal(got.positions[0], np.arange(k))
    assert (got.distances[0].view(np.int32) == np.float32(-0.0).view(np.int32)).all()


def test_k_above_the_database_size_and_empty_queries():
    codebooks, indices, queries = _data(3, 50, 2, 5, codewords=16)
    index = QuantizedIndex(codebooks, chunk_items=16).build(indices)
    got = index.search(queries, 80)
    assert got.positions.shape == (5, 50)
    _assert_equals_previous(got, codebooks, indices, queries, 80)
    none = index.search(queries[:0], 10)
    assert none.positions.shape == (0, 10) and none.distances.shape == (0, 10)


def test_nan_features_sort_last_as_before():
    codebooks, indices, queries = _data(4, 400, 4, 6, codewords=32)
    queries[1, 0] = np.nan  # every score NaN
    codebooks[2, 5, 3] = np.nan  # items using codeword 5 of codebook 2 score NaN
    index = QuantizedIndex(codebooks, chunk_items=64, query_chunk=2).build(indices)
    got = index.search(queries, 399)
    expected = _full_sort(codebooks, indices, queries, 399)
    np.testing.assert_array_equal(got.positions, expected.positions)
    np.testing.assert_array_equal(got.distances, expected.distances)  # NaN == NaN here


def test_memory_does_not_grow_with_the_database():
    """The arrays one query chunk allocates are bounded by the chunk sizes."""
    import tracemalloc

    peaks = []
    for num_items in (20000, 80000):
        codebooks, indices, queries = _data(5, num_items, 4, 64, dimension=8)
        index = QuantizedIndex(codebooks, chunk_items=1024, query_chunk=64, num_threads=1)
        index.build(indices)
        tracemalloc.start()
        index.search(queries, 10)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # (64, 80000) float32 scores alone would be 20 MB; the search stays far below.
    assert peaks[1] < 8 * 2**20, peaks
    assert peaks[1] < 1.5 * peaks[0] + 2**20, peaks
