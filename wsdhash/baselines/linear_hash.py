"""What every linear-projection hash shares: codes are signs of (x - mean) @ P."""

from __future__ import annotations

import numpy as np

from wsdhash.baselines.inputs import check_features
from wsdhash.eval.binary import binarize


class LinearHash:
    """Base of LSH, PCAH, ITQ and PCA-RR: after `fit`, `mean_` (D,) and `projection()` (D, K).

    Subclasses set `name`, implement `fit` and `projection`, and set `mean_`.
    """

    name = "linear hash"
    mean_: np.ndarray | None = None

    def projection(self) -> np.ndarray | None:
        """The (D, K) projection, or None before `fit`."""
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if self.mean_ is None or self.projection() is None:
            raise RuntimeError(f"{self.name} is not fitted; call fit(features) before encoding.")

    def encode_relaxed(self, features: np.ndarray) -> np.ndarray:
        """The projections of the centered features.

        Args:
            features: Features of shape (N, D).

        Returns:
            float32 array of shape (N, K).
        """
        self._check_fitted()
        checked = check_features(
            features, method=self.name, min_samples=0, dimension=self.mean_.shape[0]
        )
        return ((checked - self.mean_) @ self.projection()).astype(np.float32)

    def encode(self, features: np.ndarray) -> np.ndarray:
        """Binary codes: +1 where the relaxed code is >= 0, else -1 (never `np.sign`).

        Args:
            features: Features of shape (N, D).

        Returns:
            int8 array of shape (N, K) with entries in {-1, +1}.
        """
        return binarize(self.encode_relaxed(features))
