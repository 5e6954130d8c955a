"""LSH: sign of random Gaussian projections (sign-random-projection hashing)."""

from __future__ import annotations

from typing import Any

import numpy as np

from wsdhash.baselines.inputs import check_bits, check_features
from wsdhash.baselines.linear_hash import LinearHash


class LSH(LinearHash):
    """Locality-sensitive hashing by the signs of random Gaussian projections.

    For a projection w ~ N(0, I), P[sign(w.x) != sign(w.y)] = angle(x, y) / pi, so
    the fraction of differing bits estimates the angle between two vectors.

    Centering: by default the training mean is subtracted before projecting. Deep
    features (e.g. after ReLU) sit in one orthant, where all pairwise angles about
    the origin are small and most bits would be constant; centering makes the bits
    roughly balanced, as in the LSH baselines of the hashing literature (Gong &
    Lazebnik 2011). With `center=False` the angle-about-the-origin guarantee holds
    exactly.

    Reference:
        Charikar. "Similarity Estimation Techniques from Rounding Algorithms."
        STOC 2002.

    Args:
        bits: Code length K >= 1 (may exceed the feature dimension).
        seed: Seed of the projection matrix.
        center: Whether to subtract the training mean before projecting.
    """

    name = "LSH"

    def __init__(self, bits: int, *, seed: int = 0, center: bool = True):
        self.bits = check_bits(bits, method=self.name)
        self.seed = int(seed)
        self.center = bool(center)
        self.mean_: np.ndarray | None = None  # (D,); zeros when center=False
        self.projection_: np.ndarray | None = None  # (D, K)

    def fit(self, features: np.ndarray) -> LSH:
        """Draws the projections for the features' dimension and, if centering, the mean.

        Args:
            features: Training features of shape (N, D), N >= 1.

        Returns:
            self.
        """
        checked = check_features(features, method=self.name, min_samples=1)
        feature_dim = checked.shape[1]
        self.mean_ = checked.mean(axis=0) if self.center else np.zeros(feature_dim)
        rng = np.random.default_rng(self.seed)
        self.projection_ = rng.standard_normal((feature_dim, self.bits))
        return self

    def projection(self) -> np.ndarray | None:
        return self.projection_

    def get_state(self) -> dict[str, Any]:
        """Returns the fitted model as a dict of numpy arrays and ints (npz-friendly)."""
        self._check_fitted()
        return {
            "bits": self.bits,
            "seed": self.seed,
            "center": int(self.center),
            "mean": self.mean_.copy(),
            "projection": self.projection_.copy(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LSH:
        """Rebuilds a fitted model from `get_state()` output (also as loaded from npz).

        Args:
            state: Mapping with keys bits, seed, center, mean, projection.

        Returns:
            A fitted LSH.
        """
        model = cls(int(state["bits"]), seed=int(state["seed"]), center=bool(int(state["center"])))
        model.mean_ = np.asarray(state["mean"], dtype=np.float64)
        model.projection_ = np.asarray(state["projection"], dtype=np.float64)
        if model.projection_.shape != (model.mean_.shape[0], model.bits):
            raise ValueError(
                f"{cls.name}: state has projection of shape {model.projection_.shape}; expected "
                f"({model.mean_.shape[0]}, {model.bits}) from mean and bits."
            )
        return model
