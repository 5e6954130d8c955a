"""PCA-RR: PCA, then a random orthogonal rotation, then the sign; nothing is learned
beyond the PCA.

The training-free baseline that recent hashing work compares against: it spreads the
variance of the leading principal components over all K bits (PCAH's later bits carry
little variance) without ITQ's iterations. It is ITQ stopped before its first update:
the same PCA and, for the same seed, the same initial rotation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wsdhash.baselines.inputs import check_bits, check_features
from wsdhash.baselines.itq import random_rotation
from wsdhash.baselines.linear_hash import LinearHash
from wsdhash.baselines.pcah import principal_directions


class PCARR(LinearHash):
    """PCA to K dimensions on centred training features, a seeded random orthogonal
    K x K rotation, then the sign (+1 at >= 0, `wsdhash.eval.binarize`).

    Codes are binarize((x - mean) @ W @ R): W (D, K) the top-K principal directions of
    the training features, R (K, K) Haar-random orthogonal (QR of a Gaussian matrix
    with the signs of R's diagonal fixed, `itq.random_rotation`), drawn from
    `numpy.random.default_rng(seed)`.

    Reference:
        Gong, Lazebnik. "Iterative Quantization: A Procrustean Approach to Learning
        Binary Codes." CVPR 2011 (PCA-RR, the random-rotation baseline).

    Args:
        bits: Code length K; must satisfy 1 <= K <= D.
        seed: Seed of the rotation.
    """

    name = "PCA-RR"

    def __init__(self, bits: int, *, seed: int = 0):
        self.bits = check_bits(bits, method=self.name)
        self.seed = int(seed)
        self.mean_: np.ndarray | None = None  # (D,)
        self.components_: np.ndarray | None = None  # (D, K) principal directions
        self.rotation_: np.ndarray | None = None  # (K, K)

    def fit(self, features: np.ndarray) -> PCARR:
        """Learns the mean and the principal directions, and draws the rotation.

        Args:
            features: Training features of shape (N, D) with N > K and D >= K.

        Returns:
            self.
        """
        checked = check_features(features, method=self.name, min_samples=2)
        self.mean_, self.components_ = principal_directions(checked, self.bits, method=self.name)
        self.rotation_ = random_rotation(self.bits, np.random.default_rng(self.seed))
        return self

    def projection(self) -> np.ndarray | None:
        # The rotation folded into the PCA projection: (D, K) @ (K, K).
        return None if self.rotation_ is None else self.components_ @ self.rotation_

    def get_state(self) -> dict[str, Any]:
        """Returns the fitted model as a dict of numpy arrays and ints (npz-friendly)."""
        self._check_fitted()
        return {
            "bits": self.bits,
            "seed": self.seed,
            "mean": self.mean_.copy(),
            "components": self.components_.copy(),
            "rotation": self.rotation_.copy(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PCARR:
        """Rebuilds a fitted model from `get_state()` output (also as loaded from npz).

        Args:
            state: Mapping with keys bits, seed, mean, components, rotation.

        Returns:
            A fitted PCARR.
        """
        model = cls(int(state["bits"]), seed=int(state["seed"]))
        model.mean_ = np.asarray(state["mean"], dtype=np.float64)
        model.components_ = np.asarray(state["components"], dtype=np.float64)
        model.rotation_ = np.asarray(state["rotation"], dtype=np.float64)
        expected = {
            "components": (model.mean_.shape[0], model.bits),
            "rotation": (model.bits, model.bits),
        }
        for key, shape in expected.items():
            if np.shape(state[key]) != shape:
                raise ValueError(
                    f"{cls.name}: state has {key} of shape {np.shape(state[key])}; expected "
                    f"{shape} from mean and bits."
                )
        return model
