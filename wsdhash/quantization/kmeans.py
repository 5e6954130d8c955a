"""Seeded k-means (Euclidean or spherical) used to initialise the quantizers.

WSDHQ initialises each sub-space codebook with scikit-learn's `MiniBatchKMeans` (default
parameters, unseeded; docs/methods.md, "WSDHQ: additive quantizer"). wsdhash uses
full-batch Lloyd iterations with k-means++ seeding from one `numpy.random.Generator`, so
that an initialisation is reproducible from its seed and needs no scikit-learn. The
codebooks are refined by ICM and least squares right after, so the exact k-means variant
only moves the starting point.

Spherical k-means (`spherical=True`) clusters unit vectors by cosine similarity: items
are L2-normalised, assigned to the centre of largest inner product, and each centre is
the normalised sum of its members, so centres stay on the unit sphere.

Shapes: N items, D dimension, K clusters.
"""

from __future__ import annotations

import numpy as np

# Items per block when computing item-to-centre similarities, to bound memory.
_ASSIGN_BLOCK_ROWS = 8192


def l2_normalize(vectors: np.ndarray, axis: int = -1) -> np.ndarray:
    """Divides by the L2 norm along `axis`; all-zero vectors stay zero (no NaN)."""
    norms = np.linalg.norm(vectors, axis=axis, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def assign_to_centres(
    data: np.ndarray, centres: np.ndarray, *, spherical: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of every item.

    Args:
      data: (N, D) items (unit vectors when `spherical`).
      centres: (K, D) centres.
      spherical: rank by inner product (cosine for unit vectors) instead of distance.

    Returns:
      (assignments (N,) int64, cost (N,)): the cost is the squared distance to the
      chosen centre, or 1 - inner product when `spherical`. Ties go to the lower index.
    """
    centre_sq_norms = np.einsum("kd,kd->k", centres, centres)  # (K,)
    assignments = np.empty(len(data), dtype=np.int64)
    cost = np.empty(len(data), dtype=np.float64)
    for start in range(0, len(data), _ASSIGN_BLOCK_ROWS):
        block = data[start : start + _ASSIGN_BLOCK_ROWS]
        inner = block @ centres.T  # (B, K)
        if spherical:
            best = np.argmax(inner, axis=1)
            cost[start : start + len(block)] = np.maximum(
                1.0 - inner[np.arange(len(block)), best], 0.0
            )
        else:
            # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 does not change the argmin.
            partial = centre_sq_norms[None, :] - 2.0 * inner
            best = np.argmin(partial, axis=1)
            block_sq = np.einsum("nd,nd->n", block, block)
            cost[start : start + len(block)] = np.maximum(
                block_sq + partial[np.arange(len(block)), best], 0.0
            )
        assignments[start : start + len(block)] = best
    return assignments, cost


def _kmeans_plus_plus(
    data: np.ndarray, num_clusters: int, rng: np.random.Generator, spherical: bool
) -> np.ndarray:
    """k-means++ seeding: each new centre drawn with probability ~ current cost."""
    num_items = len(data)
    centres = np.empty((num_clusters, data.shape[1]), dtype=data.dtype)
    centres[0] = data[rng.integers(num_items)]
    _, cost = assign_to_centres(data, centres[:1], spherical=spherical)
    for k in range(1, num_clusters):
        total = cost.sum()
        if total <= 0:
            # Every item already coincides with a centre: any item will do.
            choice = rng.integers(num_items)
        else:
            choice = rng.choice(num_items, p=cost / total)
        centres[k] = data[choice]
        _, new_cost = assign_to_centres(data, centres[k : k + 1], spherical=spherical)
        cost = np.minimum(cost, new_cost)
    return centres


def kmeans(
    data: np.ndarray,
    num_clusters: int,
    *,
    seed: int = 0,
    max_iter: int = 25,
    spherical: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding, fully determined by `seed`.

    Empty clusters are re-seeded with the items of highest cost (worst represented),
    so every centre ends up owning at least one item when N >= K.

    Args:
      data: (N, D) items, N >= K.
      num_clusters: K.
      seed: seeds the k-means++ draws.
      max_iter: Lloyd iterations at most; stops early when no assignment changes.
      spherical: cluster by cosine similarity; items are L2-normalised first and the
        returned centres are unit vectors.

    Returns:
      (centres (K, D) float64, assignments (N,) int64).

    Reference:
      Arthur & Vassilvitskii, "k-means++: The Advantages of Careful Seeding", SODA 2007.
      Dhillon & Modha, "Concept Decompositions for Large Sparse Text Data using
      Clustering", Machine Learning 2001 (spherical k-means).
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"kmeans expects (N, D) data; got shape {data.shape}.")
    if num_clusters < 1 or len(data) < num_clusters:
        raise ValueError(
            f"kmeans needs at least num_clusters={num_clusters} items; got {len(data)}."
        )
    if not np.all(np.isfinite(data)):
        raise ValueError("kmeans data contains NaN or infinite values.")
    if spherical:
        data = l2_normalize(data)
    rng = np.random.default_rng(seed)
    centres = _kmeans_plus_plus(data, num_clusters, rng, spherical)
    assignments = None
    for _ in range(max(1, max_iter)):
        new_assignments, cost = assign_to_centres(data, centres, spherical=spherical)
        if assignments is not None and np.array_equal(new_assignments, assignments):
            break
        assignments = new_assignments
        counts = np.bincount(assignments, minlength=num_clusters)
        sums = np.zeros_like(centres)
        np.add.at(sums, assignments, data)
        empty = np.flatnonzero(counts == 0)
        if spherical:
            centres = np.where(counts[:, None] > 0, l2_normalize(sums), centres)
        else:
            centres = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
        if len(empty):
            # Stable sort: equal costs resolve by item index, keeping runs reproducible.
            worst = np.argsort(-cost, kind="stable")[: len(empty)]
            centres[empty] = data[worst]
            assignments = None  # Force another assignment pass.
    if assignments is None:
        assignments, _ = assign_to_centres(data, centres, spherical=spherical)
    return centres, assignments
