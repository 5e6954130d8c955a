"""PCAH: binarised principal components, the simplest data-dependent hash.

This module also holds the PCA step that ITQ shares.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wsdhash.baselines.inputs import check_bits, check_features
from wsdhash.baselines.linear_hash import LinearHash


def principal_directions(
    features: np.ndarray, bits: int, *, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Computes the training mean and the top-`bits` principal directions.

    Args:
        features: Checked float64 features of shape (N, D).
        bits: Number of directions K to keep; needs K <= D and N > K.
        method: Name of the calling baseline, used in error messages.

    Returns:
        `(mean, directions)`: mean of shape (D,) and orthonormal directions of shape
        (D, K), ordered by decreasing variance. Each direction's sign is fixed so that
        its largest-magnitude entry is positive, so the result does not depend on the
        LAPACK build.

    Raises:
        ValueError: If K > D, or if N <= K (then some of the K directions would
            span pure null space of the sample covariance and be arbitrary).
    """
    num_samples, feature_dim = features.shape
    if bits > feature_dim:
        raise ValueError(
            f"{method}: bits={bits} exceeds the feature dimension D={feature_dim}; PCA can give at most "
            f"{feature_dim} directions."
        )
    if num_samples <= bits:
        raise ValueError(
            f"{method}: needs more samples than bits to estimate {bits} principal directions; "
            f"got N={num_samples} samples for bits={bits}."
        )
    mean = features.mean(axis=0)
    centered = features - mean
    covariance = centered.T @ centered / (num_samples - 1)  # (D, D)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending order
    order = np.argsort(eigenvalues, kind="stable")[::-1][:bits]
    directions = eigenvectors[:, order]  # (D, K)
    largest = np.argmax(np.abs(directions), axis=0)
    signs = np.sign(directions[largest, np.arange(bits)])
    signs[signs == 0] = 1.0
    return mean, directions * signs


class PCAH(LinearHash):
    """Principal component hashing: sign of the centered top-K PCA projections.

    Each bit is the sign of one principal component. Bits are uncorrelated but,
    as K grows, later bits carry little variance and become noisy, which is the
    weakness ITQ addresses.

    Reference:
        Wang, Kumar, Chang. "Semi-Supervised Hashing for Large-Scale Search."
        TPAMI 2012 (PCAH as the unsupervised baseline); see also Gong & Lazebnik,
        "Iterative Quantization", CVPR 2011.

    Args:
        bits: Code length K; must satisfy 1 <= K <= D.
        seed: Accepted for a uniform constructor across baselines; PCAH is
            deterministic and does not use it.
    """

    name = "PCAH"

    def __init__(self, bits: int, *, seed: int = 0):
        self.bits = check_bits(bits, method=self.name)
        self.seed = int(seed)
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None  # (D, K)

    def fit(self, features: np.ndarray) -> PCAH:
        """Learns the mean and the top-K principal directions.

        Args:
            features: Training features of shape (N, D) with N > K and D >= K.

        Returns:
            self.
        """
        checked = check_features(features, method=self.name, min_samples=2)
        self.mean_, self.components_ = principal_directions(checked, self.bits, method=self.name)
        return self

    def projection(self) -> np.ndarray | None:
        return self.components_

    def get_state(self) -> dict[str, Any]:
        """Returns the fitted model as a dict of numpy arrays and ints (npz-friendly)."""
        self._check_fitted()
        return {
            "bits": self.bits,
            "seed": self.seed,
            "mean": self.mean_.copy(),
            "components": self.components_.copy(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PCAH:
        """Rebuilds a fitted model from `get_state()` output (also as loaded from npz).

        Args:
            state: Mapping with keys bits, seed, mean, components.

        Returns:
            A fitted PCAH.
        """
        model = cls(int(state["bits"]), seed=int(state["seed"]))
        model.mean_ = np.asarray(state["mean"], dtype=np.float64)
        model.components_ = np.asarray(state["components"], dtype=np.float64)
        if model.components_.shape != (model.mean_.shape[0], model.bits):
            raise ValueError(
                f"{cls.name}: state has components of shape {model.components_.shape}; expected "
                f"({model.mean_.shape[0]}, {model.bits}) from mean and bits."
            )
        return model
