"""An AQD index over WSDHQ quantization codes, with the run's learned codebooks.

Stores the (M, K, D) codebooks and the database's (N, M) uint8 codeword indices
(a codes file's `codebooks` and `indices`; product-quantizer runs store block-sparse
codebooks, so the same sum applies). A query is its continuous feature x_q; items
rank by the asymmetric inner product <x_q, x_hat_n> computed from per-query M x K
lookup tables (quantization/aqd.py), descending, in bounded memory: the database is
scored in chunks and only a running top-k is kept. Results carry
distance = -<x_q, x_hat_n>, so every index sorts ascending.
"""

from __future__ import annotations

import numpy as np

from wsdhash.index.results import SearchResult, sort_rows
from wsdhash.quantization import aqd


class QuantizedIndex:
    """Exact AQD top-k over quantization codes.

    Args:
        codebooks: (M, K, D) float32 codebooks.
        chunk_items: database items scored at once per query (memory: Q x chunk floats).
    """

    kind = "aqd"

    def __init__(self, codebooks: np.ndarray, chunk_items: int = 262144):
        self.codebooks = aqd.check_codebooks(np.asarray(codebooks, np.float32))
        self.chunk_items = int(chunk_items)
        self.indices = np.zeros((0, self.codebooks.shape[0]), np.uint8)

    @property
    def num_items(self) -> int:
        return len(self.indices)

    def build(self, indices: np.ndarray) -> QuantizedIndex:
        self.indices = np.ascontiguousarray(
            aqd.check_indices(np.asarray(indices), self.codebooks, "database indices"),
            dtype=np.uint8,
        )
        return self

    def search(self, query_features: np.ndarray, k: int) -> SearchResult:
        """Top-k by AQD (largest inner product first), ties in ascending position."""
        if not self.num_items:
            raise ValueError("The index is empty; build() it first.")
        tables = aqd.lookup_tables(
            np.asarray(query_features, np.float32), self.codebooks, layout="additive"
        )  # (Q, M, K)
        k = int(min(k, self.num_items))
        best_d = np.full((len(tables), 0), np.inf, np.float32)
        best_p = np.zeros((len(tables), 0), np.int64)
        for start in range(0, self.num_items, self.chunk_items):
            stop = min(start + self.chunk_items, self.num_items)
            distances = -aqd.scores_from_tables(tables, self.indices[start:stop])  # (Q, n)
            take = min(k, stop - start)
            part = np.argpartition(distances, take - 1, axis=1)[:, :take]
            best_d = np.concatenate([best_d, np.take_along_axis(distances, part, 1)], axis=1)
            best_p = np.concatenate([best_p, part + start], axis=1)
            merged = sort_rows(best_d, best_p, k)
            best_d, best_p = merged.distances, merged.positions
        return SearchResult(best_d, best_p)

    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        return {"index": "quantized", "kind": self.kind}, {
            "codebooks": self.codebooks,
            "indices": self.indices,
        }

    @classmethod
    def from_arrays(cls, header: dict, arrays: dict[str, np.ndarray]) -> QuantizedIndex:
        del header
        return cls(np.array(arrays["codebooks"])).build(np.array(arrays["indices"]))
