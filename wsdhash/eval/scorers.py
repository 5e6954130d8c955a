"""Scorers: where the evaluator's rankings come from, one family for every code kind.

A scorer produces, for a range of queries, the (rows, N) keys that rank the database
ascending (smaller = closer). The one chunked evaluator (`metrics.evaluate_retrieval`)
asks it for one block of queries at a time, so no scorer ever builds the whole (Q, N)
matrix, and every convention (tie policy and tie bounds, empty queries, cut-off R,
precision@N, thread pool) is applied in one place for every kind:

| name       | query side               | database side                | key                    |
|------------|--------------------------|------------------------------|------------------------|
| `hamming`  | packed binary codes      | packed binary codes          | Hamming distance       |
| `aqd`      | continuous features      | codeword indices + codebooks | -<x_q, x_hat_n> (AQD)  |
| `features` | continuous features      | continuous features          | -<x_q, x_n> (diagnosis)|
| `matrix`   | a given (Q, N) distances or scores matrix (small problems, tests)           |

Hamming keys also carry the code length, which enables the Hamming-radius figures
(precision within radius r, precision-recall over r = 0..K).

`SCORERS` maps the name a codes file records (`CodesFile.scorer`) to the scorer built
from that file, so evaluation, search, the report and the demo rank a file the way it
says. AQD's score arithmetic (lookup tables, paired-codebook gathers) lives in
`wsdhash.quantization.aqd`; this module only asks it for blocks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from wsdhash.eval import binary, ranking
from wsdhash.registry import Registry


class Scorer:
    """A source of ascending ranking keys, one block of queries at a time.

    Attributes:
        name: the family name (`SCORERS`).
        num_queries, num_items: Q and N.
        key_itemsize: bytes per key, for the evaluator's chunk sizes.
        radius_bits: K when the keys are Hamming distances (enables the radius
            figures), else None.
    """

    name = "scorer"
    radius_bits: int | None = None

    def __init__(self, num_queries: int, num_items: int, key_itemsize: int):
        self.num_queries, self.num_items, self.key_itemsize = num_queries, num_items, key_itemsize

    def keys(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, N) ascending keys of queries start..stop-1."""
        raise NotImplementedError

    def permuted(self, permutation: np.ndarray) -> Scorer:
        """The same scorer over the database reordered by `permutation` ("random" ties)."""
        return _PermutedColumns(self, permutation)


class _PermutedColumns(Scorer):
    def __init__(self, inner: Scorer, permutation: np.ndarray):
        super().__init__(inner.num_queries, inner.num_items, inner.key_itemsize)
        self.name, self.radius_bits = inner.name, inner.radius_bits
        self.inner, self.permutation = inner, permutation

    def keys(self, start: int, stop: int) -> np.ndarray:
        return self.inner.keys(start, stop)[:, self.permutation]


class HammingScorer(Scorer):
    """Hamming distances between packed binary codes (popcount over 64-bit words).

    Args:
        query_codes: (Q, ceil(K/8)) uint8 packed codes.
        database_codes: (N, ceil(K/8)) uint8 packed codes.
        bits: K (default: 8 x bytes per code).
    """

    name = "hamming"

    def __init__(self, query_codes: np.ndarray, database_codes: np.ndarray, bits=None):
        query_codes = binary.check_packed(query_codes, "query_codes")
        database_codes = binary.check_packed(database_codes, "database_codes")
        num_bytes = database_codes.shape[1]
        if query_codes.shape[1] != num_bytes:
            raise ValueError(
                f"Query codes have {query_codes.shape[1]} bytes per row, database codes "
                f"{num_bytes}."
            )
        bits = 8 * num_bytes if bits is None else int(bits)
        if -(-bits // 8) != num_bytes:
            raise ValueError(
                f"bits={bits} needs {-(-bits // 8)} bytes per code; codes have {num_bytes}."
            )
        self.dtype = binary.distance_dtype(num_bytes)
        super().__init__(len(query_codes), len(database_codes), self.dtype.itemsize)
        self.radius_bits = bits
        self.query_codes, self.database_codes = query_codes, database_codes
        self._query_words = binary.packed_to_words(query_codes)  # (W, Q)
        self._database_words = binary.packed_to_words(database_codes)  # (W, N)

    def keys(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.num_items), dtype=self.dtype)
        return binary.hamming_distances_from_words(
            self._query_words[:, start:stop], self._database_words, out
        )

    def permuted(self, permutation: np.ndarray) -> Scorer:
        return HammingScorer(
            self.query_codes, self.database_codes[permutation], bits=self.radius_bits
        )


class MatrixScorer(Scorer):
    """A given (Q, N) matrix: `distances` (ascending) or `scores` (descending).

    Args:
        distances, scores: exactly one of them.
        bits: with uint8/uint16 Hamming `distances`, K (enables the radius figures).
    """

    name = "matrix"

    def __init__(self, distances=None, scores=None, bits: int | None = None):
        if (distances is None) == (scores is None):
            raise ValueError("Pass exactly one of distances= and scores=.")
        matrix = np.asarray(distances if scores is None else scores)
        if matrix.ndim != 2:
            raise ValueError(
                f"Distances/scores must be a 2-D (Q, N) array; got shape {matrix.shape}."
            )
        if bits is not None:
            if scores is not None or matrix.dtype not in (np.uint8, np.uint16):
                raise ValueError("bits= with a matrix needs uint8/uint16 Hamming distances=.")
            self.radius_bits = bits
        itemsize = max(matrix.dtype.itemsize, 8 if scores is not None else 0)
        super().__init__(matrix.shape[0], matrix.shape[1], itemsize)
        self.matrix, self.descending = matrix, scores is not None

    def keys(self, start: int, stop: int) -> np.ndarray:
        block = self.matrix[start:stop]
        if self.descending:
            return ranking.ascending_keys(None, block)
        return ranking.ascending_keys(block, None)


class _BlockScorer(Scorer):
    """Keys from a `scores(start, stop)` callable (larger = closer), negated."""

    def __init__(self, num_queries: int, num_items: int, block_scores: Callable):
        super().__init__(num_queries, num_items, 4)  # float32 scores
        self._block_scores = block_scores

    def keys(self, start: int, stop: int) -> np.ndarray:
        scores = self._block_scores(start, stop)
        if scores.shape != (stop - start, self.num_items):
            raise ValueError(
                f"Scores of queries {start}..{stop - 1} have shape {scores.shape}; expected "
                f"{(stop - start, self.num_items)}."
            )
        return ranking.ascending_keys(None, scores)


class AQDScorer(_BlockScorer):
    """Asymmetric quantizer distance: continuous queries against quantized items.

    Args:
        query_features: (Q, D) continuous query features (un-normalised, as WSDHQ).
        database_indices: (N, M) uint8 codeword indices.
        codebooks: (M, K, D) additive or (M, K, D / M) product codebooks.
        layout: "additive" or "product"; None infers it from the shapes.
    """

    name = "aqd"

    def __init__(self, query_features, database_indices, codebooks, layout: str | None = None):
        from wsdhash.quantization import aqd  # score arithmetic only (numpy)

        self.codebooks = aqd.check_codebooks(codebooks)
        self.queries = aqd.check_features(query_features, "query_features")
        self.layout = aqd.infer_layout(self.codebooks, self.queries.shape[1], layout)
        self.indices = aqd.check_indices(database_indices, self.codebooks, "database_indices")
        database = aqd.PairedCodes(self.indices, self.codebooks.shape[1])

        def block_scores(start: int, stop: int) -> np.ndarray:
            tables = aqd.lookup_tables(self.queries[start:stop], self.codebooks, layout=self.layout)
            return database.scores(tables)

        super().__init__(len(self.queries), len(self.indices), block_scores)

    def permuted(self, permutation: np.ndarray) -> Scorer:
        return AQDScorer(self.queries, self.indices[permutation], self.codebooks, self.layout)


class FeatureScorer(_BlockScorer):
    """Inner products of continuous features (unquantized; for diagnosis).

    Args:
        query_features: (Q, D). database_features: (N, D).
    """

    name = "features"

    def __init__(self, query_features, database_features):
        from wsdhash.quantization import aqd

        queries = aqd.check_features(query_features, "query_features")
        database = aqd.check_features(database_features, "database_features")
        if queries.shape[1] != database.shape[1]:
            raise ValueError(
                f"Queries have D={queries.shape[1]}, database items D={database.shape[1]}."
            )
        self.queries, self.database = queries, database
        super().__init__(
            len(queries), len(database), lambda start, stop: queries[start:stop] @ database.T
        )

    def permuted(self, permutation: np.ndarray) -> Scorer:
        return FeatureScorer(self.queries, self.database[permutation])


# -----------------------------------------------------------------------------
# From codes files
# -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScorerKind:
    """What a codes file's scorer name means to every reader of the file.

    Attributes:
        name: the registry name, stored in the file.
        title: how reports and tables name the ranking ("Hamming", "AQD").
        build: (codes file, name for errors) -> the evaluator's `Scorer`.
        index_kind: the search index that ranks the same way (wsdhash/index/), or
            None when there is none.
        index_codes: a split -> what that index stores for it.
        vectors: codes file -> (N, D) float vectors of the database, for plots.
    """

    name: str
    title: str
    build: Callable[..., Scorer]
    index_kind: str | None
    index_codes: Callable | None
    vectors: Callable


def _hamming_from_file(contents, source: str) -> Scorer:
    return HammingScorer(contents.query.codes, contents.database.codes, bits=contents.bits)


def _aqd_from_file(contents, source: str) -> Scorer:
    if contents.codebooks is None:
        raise ValueError(f"{source} says its codes are AQD codes but holds no codebooks.")
    if contents.query.features is None or contents.database.indices is None:
        raise ValueError(
            f"{source} has codebooks but no query features or database indices, which AQD needs."
        )
    return AQDScorer(contents.query.features, contents.database.indices, contents.codebooks)


def _features_from_file(contents, source: str) -> Scorer:
    if contents.query.features is None or contents.database.features is None:
        raise ValueError(f"{source} holds no features of both splits.")
    return FeatureScorer(contents.query.features, contents.database.features)


def _bit_vectors(contents) -> np.ndarray:
    return binary.unpack_codes(contents.database.codes, contents.bits).astype(np.float32)


def _quantized_vectors(contents) -> np.ndarray:
    """The continuous features when stored, else the codeword reconstructions."""
    if contents.database.features is not None:
        return np.asarray(contents.database.features, np.float32)
    from wsdhash.quantization.aqd import reconstruct

    return reconstruct(contents.database.indices, contents.codebooks)


def _feature_vectors(contents) -> np.ndarray:
    return np.asarray(contents.database.features, np.float32)


SCORERS: Registry[ScorerKind] = Registry("scorer")
SCORERS.register("hamming")(
    ScorerKind(
        "hamming", "Hamming", _hamming_from_file, "flat", lambda split: split.codes, _bit_vectors
    )
)
SCORERS.register("aqd")(
    ScorerKind("aqd", "AQD", _aqd_from_file, "aqd", lambda split: split.indices, _quantized_vectors)
)
SCORERS.register("features")(
    ScorerKind("features", "features", _features_from_file, None, None, _feature_vectors)
)


def scorer_kind(contents) -> ScorerKind:
    """The `ScorerKind` a codes file names."""
    return SCORERS.get(contents.scorer)


def scorer_for_codes_file(contents, source: str = "codes file", name: str | None = None) -> Scorer:
    """The scorer a codes file calls for (`contents.scorer`), or the one named."""
    return SCORERS.get(name or contents.scorer).build(contents, source)
