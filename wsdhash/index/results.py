"""Search results and their tie order, shared by every index kind."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Top-k neighbours of each query.

    Attributes:
        distances: (Q, k) ascending; Hamming distances for binary codes, minus the AQD
            inner product <x_q, x_hat> for quantization codes. Rows are padded with
            +inf (float) or -1 (int) when the index returns fewer than k items.
        positions: (Q, k) int64 item positions in the index (-1 for padding).

    Tie order: within equal distance, ascending position, among the items the index
    returned. Which of several items tied at the k-th distance make the cut is the
    underlying search's choice (FAISS or the AQD partition), so compare results that
    include ties as sets within equal distance.
    """

    distances: np.ndarray
    positions: np.ndarray


def sort_rows(distances: np.ndarray, positions: np.ndarray, k: int) -> SearchResult:
    """Orders each row by (distance, position), drops padding to the end, keeps k."""
    distances = np.asarray(distances)
    positions = np.asarray(positions, np.int64)
    padding = positions < 0
    keys_distance = np.where(padding, np.inf, distances.astype(np.float64))
    keys_position = np.where(padding, np.iinfo(np.int64).max, positions)
    order = np.lexsort((keys_position, keys_distance), axis=1)[:, :k]
    return SearchResult(
        np.take_along_axis(distances, order, axis=1),
        np.take_along_axis(positions, order, axis=1),
    )
