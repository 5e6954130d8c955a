"""Fixed +-1 class codebooks (OrthoHash targets): Bernoulli, sign-of-Gaussian and MaxHD.

Every generator draws from a seeded `numpy.random.Generator`, so a codebook is a pure
function of (num_classes, bits, method, seed) and is rebuilt identically from a layer's
config. Codes hold +1 and -1 only, never 0.

Reference:
    Hoe et al., "One Loss for All: Deep Hashing with a Single Cosine Similarity based
    Learning Objective", NeurIPS 2021 (supplementary Algorithm 3 for MaxHD).
"""

from __future__ import annotations

import numpy as np

CODEBOOK_METHODS = ("B", "N", "O")

# MaxHD schedule of the original code: start at a normalised Hamming distance of 0.61,
# lower it by 0.01 every 10,000 rejections, give up below 0.2.
MAXHD_INIT_DISTANCE = 0.61
MAXHD_REDUCE_DISTANCE = 0.01
MAXHD_MIN_DISTANCE = 0.2
MAXHD_MAX_TRIES = 10_000


def _check_shape(num_classes: int, bits: int) -> None:
    if int(num_classes) < 1 or int(bits) < 1:
        raise ValueError(
            f"A codebook needs num_classes >= 1 and bits >= 1; got num_classes={num_classes}, "
            f"bits={bits}."
        )


def bernoulli_codebook(num_classes: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Draws every bit independently as +1 or -1 with probability 1/2 (method `B`).

    Args:
        num_classes: C, number of rows.
        bits: K, code length.
        rng: the random source.

    Returns:
        float32 (C, K) array of +-1.
    """
    _check_shape(num_classes, bits)
    draws = rng.random((num_classes, bits)) < 0.5
    return np.where(draws, 1.0, -1.0).astype(np.float32)


def gaussian_sign_codebook(num_classes: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Takes the sign of standard normal draws (method `N`).

    `np.sign` would map an exact 0 to 0; 0 is sent to +1 instead so that codes are
    always binary (the same `>= 0 -> +1` rule as `wsdhash.eval.binary.binarize`).

    Args:
        num_classes: C, number of rows.
        bits: K, code length.
        rng: the random source.

    Returns:
        float32 (C, K) array of +-1.
    """
    _check_shape(num_classes, bits)
    draws = rng.standard_normal((num_classes, bits))
    return np.where(draws >= 0, 1.0, -1.0).astype(np.float32)


def maxhd_codebook(
    num_classes: int,
    bits: int,
    rng: np.random.Generator,
    *,
    init_distance: float = MAXHD_INIT_DISTANCE,
    reduce_distance: float = MAXHD_REDUCE_DISTANCE,
    min_distance: float = MAXHD_MIN_DISTANCE,
    max_tries: int = MAXHD_MAX_TRIES,
) -> tuple[np.ndarray, float]:
    """Greedy rejection sampling of codes far apart in Hamming distance (method `O`).

    A random +-1 code is accepted when its normalised Hamming distance (differing bits
    / K) to every accepted code is at least the current level. After `max_tries`
    rejections the level is lowered by `reduce_distance`; below `min_distance` the
    search fails. Finally the rows are permuted randomly.

    As in the original code, the rejection counter is reset only when the level is
    lowered, not when a code is accepted, so "10,000 rejections" means rejections since
    the last lowering (docs/methods.md, "OrthoHash: target codebooks").
    The level is lowered by repeated float subtraction, as in the original.

    Args:
        num_classes: C, number of rows.
        bits: K, code length.
        rng: the random source.
        init_distance: the starting level.
        reduce_distance: how much the level drops after `max_tries` rejections.
        min_distance: the level below which the search raises.
        max_tries: rejections tolerated at one level.

    Returns:
        (codebook, level): float32 (C, K) array of +-1 whose minimum pairwise
        normalised Hamming distance is >= level, and that final level.

    Raises:
        RuntimeError: when the level falls below `min_distance`.
    """
    _check_shape(num_classes, bits)
    codebook = np.zeros((num_classes, bits), dtype=np.float32)
    accepted = 0
    rejections = 0
    level = float(init_distance)
    while accepted < num_classes:
        candidate = np.where(rng.standard_normal(bits) >= 0, 1.0, -1.0).astype(np.float32)
        # (accepted,) normalised Hamming distances: (K - <a, b>) / 2K for +-1 codes.
        distances = 0.5 * (bits - codebook[:accepted] @ candidate) / bits
        if np.all(distances >= level):
            codebook[accepted] = candidate
            accepted += 1
            continue
        rejections += 1
        if rejections >= max_tries:
            rejections = 0
            level -= reduce_distance
            if level < min_distance:
                raise RuntimeError(
                    f"MaxHD found only {accepted} of {num_classes} codes of {bits} bits with "
                    f"normalised Hamming distance >= {min_distance}."
                )
    return codebook[rng.permutation(num_classes)], level


def generate_codebook(num_classes: int, bits: int, method: str = "B", seed: int = 0) -> np.ndarray:
    """Builds the fixed OrthoHash codebook of C class targets.

    Args:
        num_classes: C.
        bits: K.
        method: `B` (Bernoulli), `N` (sign of Gaussian) or `O` (MaxHD).
        seed: seeds `numpy.random.default_rng`; the same arguments give the same codebook.

    Returns:
        float32 (C, K) array of +-1.
    """
    rng = np.random.default_rng(seed)
    if method == "B":
        return bernoulli_codebook(num_classes, bits, rng)
    if method == "N":
        return gaussian_sign_codebook(num_classes, bits, rng)
    if method == "O":
        return maxhd_codebook(num_classes, bits, rng)[0]
    raise ValueError(f"Unknown codebook method {method!r}; known: {', '.join(CODEBOOK_METHODS)}.")


def min_normalized_hamming(codebook: np.ndarray) -> float:
    """Smallest normalised Hamming distance between two different rows of a +-1 codebook.

    Args:
        codebook: (C, K) array of +-1, C >= 2.

    Returns:
        min over i != j of (differing bits of rows i and j) / K.
    """
    codebook = np.asarray(codebook, dtype=np.float64)
    if codebook.ndim != 2 or codebook.shape[0] < 2:
        raise ValueError(f"Need a (C, K) codebook with C >= 2; got shape {codebook.shape}.")
    bits = codebook.shape[1]
    distances = 0.5 * (bits - codebook @ codebook.T) / bits  # (C, C)
    np.fill_diagonal(distances, np.inf)
    return float(distances.min())
