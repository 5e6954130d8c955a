"""PCA-RR: PCA, then a random orthogonal rotation, then the sign; nothing is learned
beyond the PCA.

The training-free baseline that recent hashing work compares against: it spreads the
variance of the leading principal components over all K bits (PCAH's later bits carry
little variance) without ITQ's iterations. It is ITQ stopped before its first update
(the same PCA and, for the same seed, the same initial rotation), so it is written as
exactly that: `ITQ` with no update.
"""

from __future__ import annotations

from wsdhash.baselines.itq import ITQ


class PCARR(ITQ):
    """PCA to K dimensions on centred training features, a seeded random orthogonal
    K x K rotation, then the sign (+1 at >= 0, `wsdhash.eval.binarize`).

    Codes are binarize((x - mean) @ W @ R): W (D, K) the top-K principal directions of
    the training features, R (K, K) Haar-random orthogonal (QR of a Gaussian matrix
    with the signs of R's diagonal fixed, `itq.random_rotation`), drawn from
    `numpy.random.default_rng(seed)`: `ITQ(iterations=0)`. Its state is ITQ's (with
    `iterations` 0 and a one-entry loss history).

    Reference:
        Gong, Lazebnik. "Iterative Quantization: A Procrustean Approach to Learning
        Binary Codes." CVPR 2011 (PCA-RR, the random-rotation baseline).

    Args:
        bits: Code length K; must satisfy 1 <= K <= D.
        seed: Seed of the rotation.
        iterations: must be 0 (accepted so that ITQ's `from_state` rebuilds it).
    """

    name = "PCA-RR"

    def __init__(self, bits: int, *, seed: int = 0, iterations: int = 0):
        if iterations != 0:
            raise ValueError(f"{self.name}: no rotation updates; got iterations={iterations!r}.")
        super().__init__(bits, seed=seed, iterations=0)
