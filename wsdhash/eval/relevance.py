"""Multi-label relevance: a query and an item are relevant when they share a label.

Label rows are packed into uint64 bit masks (any number of classes C, W = ceil(C/64)
words per row), so relevance is an AND plus a test for non-zero instead of a float
matrix product. Single-label data is the one-hot special case.

Shapes: Q queries, N database items, C classes, W = ceil(C/64) mask words.
"""

from __future__ import annotations

import numpy as np


def check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """Checks that labels are a 2-D (rows, C) array of 0/1 (or bool) values."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (rows, classes) array; got shape {labels.shape}.")
    if labels.dtype != np.bool_ and not np.issubdtype(labels.dtype, np.number):
        raise ValueError(f"{name} must be numeric 0/1 or bool; got dtype {labels.dtype}.")
    return labels


def pack_label_masks(labels: np.ndarray) -> np.ndarray:
    """Packs multi-hot label rows into 64-bit masks.

    Args:
      labels: (N, C) array; any non-zero entry counts as "has this label".

    Returns:
      (W, N) uint64 array, W = max(1, ceil(C/64)); word rows are contiguous so that one
      word of every item is tested in a single vectorised pass.
    """
    labels = check_labels(labels, "labels")
    num_rows, num_classes = labels.shape
    packed = np.packbits(labels != 0, axis=1, bitorder="little")  # (N, ceil(C/8))
    num_words = max(1, -(-num_classes // 64))
    padded = np.zeros((num_rows, num_words * 8), dtype=np.uint8)
    padded[:, : packed.shape[1]] = packed
    return np.ascontiguousarray(padded.view(np.uint64).T)


def relevance_from_masks(
    query_masks: np.ndarray, database_masks: np.ndarray, items: np.ndarray | None = None
) -> np.ndarray:
    """Relevance of database items to each query, from packed masks.

    Args:
      query_masks: (W, Q) uint64 masks from `pack_label_masks`.
      database_masks: (W, N) uint64 masks.
      items: optional 1-D array of database indices; only used when Q == 1 so that a
        ranking step can ask for the relevance of a few candidates only.

    Returns:
      (Q, N) bool, or (len(items),) bool when `items` is given.
    """
    if items is not None:
        relevant = np.zeros(len(items), dtype=np.bool_)
        for word in range(query_masks.shape[0]):
            relevant |= (database_masks[word, items] & query_masks[word, 0]) != 0
        return relevant
    relevant = np.zeros((query_masks.shape[1], database_masks.shape[1]), dtype=np.bool_)
    for word in range(query_masks.shape[0]):
        relevant |= (query_masks[word, :, None] & database_masks[word, None, :]) != 0
    return relevant


def relevance_matrix(query_labels: np.ndarray, database_labels: np.ndarray) -> np.ndarray:
    """Relevance of every database item to every query: they share at least one label.

    Args:
      query_labels: (Q, C) 0/1 labels.
      database_labels: (N, C) 0/1 labels.

    Returns:
      (Q, N) bool.
    """
    query_labels = check_labels(query_labels, "query_labels")
    database_labels = check_labels(database_labels, "database_labels")
    if query_labels.shape[1] != database_labels.shape[1]:
        raise ValueError(
            f"Query labels have {query_labels.shape[1]} classes but database labels have "
            f"{database_labels.shape[1]}."
        )
    return relevance_from_masks(pack_label_masks(query_labels), pack_label_masks(database_labels))
