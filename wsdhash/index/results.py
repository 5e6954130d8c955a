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


# Integer distances and positions packed into one int64 key, distance above position:
# one integer sort instead of a two-key lexsort (several times faster at k = 1000).
_KEY_POSITION_BITS = 40
_KEY_MAX_DISTANCE = (1 << (62 - _KEY_POSITION_BITS)) - 1


def sort_rows(distances: np.ndarray, positions: np.ndarray, k: int) -> SearchResult:
    """Orders each row by (distance, position), drops padding to the end, keeps k."""
    distances = np.asarray(distances)
    positions = np.asarray(positions, np.int64)
    padding = positions < 0
    if distances.dtype.kind in "iu" and distances.size:
        real = np.where(padding, 0, distances)
        fits = real.min() >= 0 and real.max() <= _KEY_MAX_DISTANCE
        if fits and positions.max() < (1 << _KEY_POSITION_BITS):
            return _sort_integer_rows(distances, positions, padding, k)
    keys_distance = np.where(padding, np.inf, distances.astype(np.float64))
    keys_position = np.where(padding, np.iinfo(np.int64).max, positions)
    order = np.lexsort((keys_position, keys_distance), axis=1)[:, :k]
    return SearchResult(
        np.take_along_axis(distances, order, axis=1),
        np.take_along_axis(positions, order, axis=1),
    )


def _sort_integer_rows(distances, positions, padding, k) -> SearchResult:
    """`sort_rows` for non-negative integer distances: packed int64 keys (above)."""
    keys = distances.astype(np.int64) << _KEY_POSITION_BITS
    keys |= positions
    keys[padding] = np.iinfo(np.int64).max
    if keys.shape[1] > 2 * k > 0:
        keys = np.partition(keys, k - 1, axis=1)[:, :k]
    keys = np.sort(keys, axis=1)[:, :k]
    pad = keys == np.iinfo(np.int64).max
    order_positions = np.where(pad, -1, keys & ((1 << _KEY_POSITION_BITS) - 1))
    order_distances = (keys >> _KEY_POSITION_BITS).astype(distances.dtype)
    if pad.any():
        # Padding keeps the distance FAISS gave it (the old order put it last as is).
        order_distances[pad] = _padding_distance(distances, padding)
    return SearchResult(order_distances, order_positions)


def _padding_distance(distances, padding):
    values = distances[padding]
    return (
        values[0] if len(values) and np.all(values == values[0]) else np.iinfo(distances.dtype).max
    )
