"""An AQD index over WSDHQ quantization codes, with the run's learned codebooks.

Stores the (M, K, D) codebooks and the database's (N, M) uint8 codeword indices
(a codes file's `codebooks` and `indices`; product-quantizer runs store block-sparse
codebooks, so the same sum applies). A query is its continuous feature x_q; items
rank by the asymmetric inner product <x_q, x_hat_n> computed from per-query M x K
lookup tables (quantization/aqd.py), descending. Results carry
distance = -<x_q, x_hat_n>, so every index sorts ascending; ties in ascending position.

Search, in memory bounded by the chunk sizes whatever N is:
* Queries go in chunks of `query_chunk` (one task each on a small thread pool; numpy
  releases the GIL in the gathers, adds, partitions and sorts). A chunk's tables are
  kept transposed, (K, Qc) per codebook, so gathering one item's entries copies Qc
  contiguous floats and the tables stay in the cache (K Qc 4 bytes each).
* Items go in chunks of `chunk_items`: their (n, Qc) scores are summed from the
  gathered tables in the order of `aqd.scores_from_tables`, (T_0 + T_1) + (T_2 + T_3)
  + ..., so they are the same float32 numbers as before.
* Each query keeps a bounded top-k. An item enters only when its score reaches the
  query's current k-th best; the (distance, position) pairs of those candidates are
  packed into one int64 key each (an order-preserving integer of the float32 distance,
  then the position), so one partition of the kept keys and the candidates' keys picks
  the k smallest by (distance, position), exactly, ties by position included.
  Candidates wait in a buffer and are merged when about k (at least 1024) per query
  are pending.
Lookup tables are computed for up to `_TABLE_BLOCK` queries at once (one einsum, as
before), and the k results' distances are recomputed from the tables with the same
float32 sums, so distances, positions and their order equal those of one
`scores_from_tables` call on the whole database followed by a (distance, position)
sort.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from wsdhash.index.results import SearchResult
from wsdhash.quantization import aqd

# Queries whose lookup tables are computed at once (Q x M x K floats: 16 MiB for
# M = 4, K = 256).
_TABLE_BLOCK = 4096
# Candidates merge into the kept top-k when about max(k, this) per query are pending.
_MIN_MERGE = 1024
_MAX_DEFAULT_THREADS = 4
# Positions take the low 31 bits of a key, the distance's order-preserving integer the
# 32 above them.
_POSITION_BITS = 31
_POSITION_MASK = (1 << _POSITION_BITS) - 1
_PAD = np.iinfo(np.int64).max


def _default_threads() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # Not on Linux.
        available = os.cpu_count() or 1
    return max(1, min(_MAX_DEFAULT_THREADS, available))


def _keys(scores: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """int64 keys whose order is that of (distance = -score, position).

    The distance's float32 bits become an integer with the same order (negative floats
    have their magnitude bits flipped; -0.0 == 0.0; NaN last, as NumPy sorts it), put
    above the position's 31 bits.
    """
    distances = np.subtract(np.float32(0.0), scores, order="C")  # -score; -0.0 -> 0.0
    bits = distances.view(np.int32)
    keys = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(np.int64)
    keys += 1 << 31
    nan = np.isnan(distances)
    if nan.any():
        keys[nan] = (1 << 32) - 1
    keys <<= _POSITION_BITS
    keys |= positions
    return keys


def _key_distances(keys: np.ndarray) -> np.ndarray:
    """The float32 distances of `_keys` (zeros as 0.0, NaN as some NaN)."""
    ordered = ((keys >> _POSITION_BITS) - (1 << 31)).astype(np.int32)
    return (ordered ^ ((ordered >> 31) & 0x7FFFFFFF)).view(np.float32)


class QuantizedIndex:
    """Exact AQD top-k over quantization codes.

    Args:
        codebooks: (M, K, D) float32 codebooks.
        chunk_items: database items scored at once per query chunk (memory: a few
            chunk_items x query_chunk floats per thread).
        query_chunk: queries searched together by one thread.
        num_threads: query chunks searched concurrently; default min(4, available cores).
    """

    kind = "aqd"
    HEADER = "quantized"  # the shard header's "index" (index_file.py)

    def __init__(
        self,
        codebooks: np.ndarray,
        chunk_items: int = 4096,
        query_chunk: int = 64,
        num_threads: int | None = None,
    ):
        self.codebooks = aqd.check_codebooks(np.asarray(codebooks, np.float32))
        self.chunk_items = int(chunk_items)
        self.query_chunk = int(query_chunk)
        self.num_threads = num_threads
        if self.chunk_items < 1 or self.query_chunk < 1:
            raise ValueError(
                f"chunk_items and query_chunk must be >= 1; got {chunk_items}, {query_chunk}."
            )
        self.indices = np.zeros((0, self.codebooks.shape[0]), np.uint8)

    @classmethod
    def create(cls, kind: str, codes, params, codebooks) -> QuantizedIndex:
        """An empty index with `codebooks` (kind, codes and params: unused)."""
        del kind, codes, params
        if codebooks is None:
            raise ValueError("An aqd index needs the codebooks (a WSDHQ codes file).")
        return cls(codebooks)

    @staticmethod
    def check_params(kind: str, params, num_bytes=None, num_items=None) -> None:
        """An AQD index takes no index parameters: nothing to check."""
        del kind, params, num_bytes, num_items

    def probe(self, codes) -> np.ndarray:
        """The query its first item answers: that item's reconstruction."""
        del codes
        return aqd.reconstruct(self.indices[:1], self.codebooks)

    def stored_codes(self, position: int) -> np.ndarray:
        """An item's (M,) codeword indices."""
        return np.asarray(self.indices[position])

    @property
    def num_items(self) -> int:
        return len(self.indices)

    def build(self, indices: np.ndarray) -> QuantizedIndex:
        indices = aqd.check_indices(np.asarray(indices), self.codebooks, "database indices")
        if len(indices) > _POSITION_MASK + 1:
            raise ValueError(
                f"An AQD index holds at most {_POSITION_MASK + 1} items; got {len(indices)} "
                "(shard the database)."
            )
        self.indices = np.ascontiguousarray(indices, dtype=np.uint8)
        return self

    def search(self, query_features: np.ndarray, k: int) -> SearchResult:
        """Top-k by AQD (largest inner product first), ties in ascending position."""
        if not self.num_items:
            raise ValueError("The index is empty; build() it first.")
        queries = aqd.check_features(query_features, "query_features")
        if queries.shape[1] != self.codebooks.shape[2]:
            # As before: lookup_tables reports features that do not fit the codebooks.
            aqd.lookup_tables(queries[:0], self.codebooks, layout="additive")
        k = max(0, int(min(k, self.num_items)))
        distances = np.full((len(queries), k), np.inf, np.float32)
        positions = np.zeros((len(queries), k), np.int64)
        if k == 0 or len(queries) == 0:
            return SearchResult(distances, positions)
        chunks = [
            (start, min(start + self.query_chunk, len(queries)))
            for start in range(0, len(queries), self.query_chunk)
        ]
        threads = max(1, min(self.num_threads or _default_threads(), len(chunks)))
        pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
        try:
            for block_start in range(0, len(queries), _TABLE_BLOCK):
                block_stop = min(block_start + _TABLE_BLOCK, len(queries))
                tables = aqd.lookup_tables(
                    queries[block_start:block_stop], self.codebooks, layout="additive"
                )  # (Qb, M, K)

                def run(bounds, tables=tables, offset=block_start):
                    start, stop = bounds
                    d, p = self._search_chunk(tables[start - offset : stop - offset], k)
                    distances[start:stop], positions[start:stop] = d, p

                todo = [b for b in chunks if block_start <= b[0] < block_stop]
                if pool is None:
                    for bounds in todo:
                        run(bounds)
                else:
                    list(pool.map(run, todo))
        finally:
            if pool is not None:
                pool.shutdown()
        return SearchResult(distances, positions)

    def _search_chunk(self, tables: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Qc, k) distances and positions of one query chunk from its (Qc, M, K) tables."""
        num_queries, num_codebooks, _ = tables.shape
        transposed = [np.ascontiguousarray(tables[:, m].T) for m in range(num_codebooks)]
        width = min(self.chunk_items, self.num_items)
        buffers = [np.empty((width, num_queries), np.float32) for _ in range(3)]
        kept = np.zeros((num_queries, 0), np.int64)  # keys, at most k per query
        threshold = np.full(num_queries, -np.inf, np.float32)  # score of the k-th kept
        pending_rows: list[np.ndarray] = []
        pending_keys: list[np.ndarray] = []
        pending = 0
        merge_at = num_queries * max(k, _MIN_MERGE)

        def keep(merged):
            nonlocal kept
            if merged.shape[1] > k:
                merged = np.partition(merged, k - 1, axis=1)[:, :k]
            kept = merged
            if kept.shape[1] == k:
                worst = kept.max(axis=1)
                full = worst != _PAD
                threshold[full] = -_key_distances(worst[full])
                threshold[np.isnan(threshold)] = -np.inf  # a NaN kept: anything may enter

        def merge():
            nonlocal pending, pending_rows, pending_keys
            rows = np.concatenate(pending_rows)
            keys = np.concatenate(pending_keys)
            pending_rows, pending_keys, pending = [], [], 0
            order = np.argsort(rows, kind="stable")  # radix sort of uint16
            rows, keys = rows[order].astype(np.intp), keys[order]
            counts = np.bincount(rows, minlength=num_queries)
            starts = np.cumsum(counts) - counts
            columns = kept.shape[1] + int(counts.max())
            merged = np.full((num_queries, columns), _PAD, np.int64)
            merged[:, : kept.shape[1]] = kept
            slots = rows * columns + (kept.shape[1] - starts[rows] + np.arange(len(rows)))
            merged.reshape(-1)[slots] = keys
            keep(merged)

        for start in range(0, self.num_items, self.chunk_items):
            codes = self.indices[start : start + self.chunk_items]
            n = len(codes)
            scores = self._chunk_scores(transposed, codes, [b[:n] for b in buffers])  # (n, Qc)
            if np.isneginf(threshold).all() and not pending:
                # Nothing kept reaches k yet: the whole chunk is a candidate.
                positions = np.arange(start, start + n, dtype=np.int64)
                keep(np.concatenate([kept, _keys(scores.T, positions)], axis=1))
                continue
            if np.isneginf(threshold).any():  # queries with fewer than k kept take all
                flat = np.flatnonzero(~(scores < threshold))
            else:
                flat = np.flatnonzero(scores >= threshold)
            if not len(flat):
                continue
            items, rows = np.divmod(flat, num_queries)
            pending_rows.append(rows.astype(np.uint16))
            pending_keys.append(_keys(scores.reshape(-1)[flat], items + start))
            pending += len(flat)
            if pending >= merge_at:
                merge()
        if pending:
            merge()
        kept = np.sort(kept, axis=1)
        positions = kept & _POSITION_MASK
        distances = _key_distances(kept)
        # Zeros and NaNs again from the same float32 sums: their sign and payload.
        redo = (distances == 0) | np.isnan(distances)
        if redo.any():
            rows, columns = np.nonzero(redo)
            scores = self._gathered_scores(transposed, self.indices[positions[rows, columns]], rows)
            distances[rows, columns] = -scores
        return distances, positions

    @staticmethod
    def _chunk_scores(transposed, codes, buffers) -> np.ndarray:
        """(n, Qc) scores: codebook pairs summed as `aqd.scores_from_tables` does."""
        scores, part, other = buffers
        for group, m in enumerate(range(0, len(transposed), 2)):
            target = scores if group == 0 else part
            np.take(transposed[m], codes[:, m], axis=0, out=target, mode="wrap")
            if m + 1 < len(transposed):
                np.take(transposed[m + 1], codes[:, m + 1], axis=0, out=other, mode="wrap")
                np.add(target, other, out=target)
            if group:
                np.add(scores, part, out=scores)
        return scores

    @staticmethod
    def _gathered_scores(transposed, codes, rows) -> np.ndarray:
        """Scores of (query row, item codes (n, M)) pairs, summed as `_chunk_scores`."""
        num_queries = transposed[0].shape[1]
        scores = None
        for m in range(0, len(transposed), 2):
            part = transposed[m].reshape(-1)[codes[:, m].astype(np.intp) * num_queries + rows]
            if m + 1 < len(transposed):
                flat = codes[:, m + 1].astype(np.intp) * num_queries + rows
                part = part + transposed[m + 1].reshape(-1)[flat]
            scores = part if scores is None else scores + part
        return scores

    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {"index": self.HEADER, "kind": self.kind}, {
            "codebooks": self.codebooks,
            "indices": self.indices,
        }

    @staticmethod
    def reading(total: int | None = None) -> QuantizedReading:
        """Where `read_index_file` puts shards' indices (`QuantizedReading`)."""
        return QuantizedReading(total)

    @classmethod
    def from_arrays(
        cls, header: dict, arrays: dict[str, np.ndarray], reading: QuantizedReading | None = None
    ) -> QuantizedIndex:
        """The index a `to_arrays` header and arrays describe; with a combining
        `reading`, the one index all its shards' indices were read into."""
        del header
        codebooks = np.asarray(arrays["codebooks"])
        if reading is None or not reading.rows:
            return cls(codebooks).build(np.asarray(arrays["indices"]))
        if reading.index is None:
            reading.index = cls(codebooks)
            reading.index.indices = reading.buffer  # filled shard by shard
        elif not np.array_equal(reading.index.codebooks, codebooks):
            raise ValueError("its codebooks differ from the first shard's")
        aqd.check_indices(arrays["indices"], reading.index.codebooks, "database indices")
        return reading.index


class QuantizedReading:
    """Reads the indices of all an index's shards, one after another, into one array
    of `total` rows searched as one index (one search; one copy of the codebooks).

    Args:
        total: the items of all the shards read with this; None (or more than one
            index holds): each shard is an index of its own.
    """

    def __init__(self, total: int | None = None):
        self.total = total if total is not None and total <= _POSITION_MASK + 1 else None
        self.buffer, self.index, self.rows, self.filled = None, None, 0, 0

    def allocate(self, header: dict, entry: dict) -> np.ndarray | None:
        del header
        shape = entry.get("shape")
        fits = (
            self.total is not None
            and entry.get("name") == "indices"
            and entry.get("dtype") == "|u1"
            and isinstance(shape, list)
            and len(shape) == 2
            and all(isinstance(n, int) and n >= 1 for n in shape)
        )
        if not fits:
            return None
        count, width = shape
        if self.buffer is None:
            self.buffer = np.empty((max(self.total, count), width), np.uint8)
        self.rows = count
        start, self.filled = self.filled, self.filled + count
        # Another width, or rows beyond `total`: a view of the wrong shape, refused.
        return self.buffer[start : start + count]

    def shares(self, index) -> bool:
        """Whether `index` is the one index this reading fills."""
        return self.total is not None and self.index is not None and index is self.index
