"""ITQ: PCA followed by a learned rotation that minimises the quantization error."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from wsdhash.baselines.inputs import check_bits, check_features
from wsdhash.baselines.linear_hash import LinearHash
from wsdhash.baselines.pcah import principal_directions
from wsdhash.eval.binary import binarize


def quantization_loss(projected: np.ndarray, rotation: np.ndarray) -> float:
    """Returns ||sgn(V R) - V R||_F^2, the ITQ objective at its best codes for R.

    Args:
        projected: PCA-projected, centered features V of shape (N, K).
        rotation: Orthogonal matrix R of shape (K, K).

    Returns:
        The squared Frobenius norm, summed over all N samples and K bits.
    """
    rotated = projected @ rotation
    return float(np.sum((binarize(rotated) - rotated) ** 2))


def random_rotation(size: int, rng: np.random.Generator) -> np.ndarray:
    """Draws a Haar-distributed random orthogonal matrix of shape (size, size).

    The QR factor of a Gaussian matrix is only Haar-distributed after fixing the
    signs of R's diagonal (Mezzadri 2007); without that the result is biased.
    """
    gaussian = rng.standard_normal((size, size))
    q, r = np.linalg.qr(gaussian)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    return q * signs


class ITQ(LinearHash):
    """Iterative quantization: PCA to K dims, then an orthogonal rotation learned so
    that the rotated projections lie close to the vertices of the hypercube.

    Alternates B = sgn(V R) and R = argmin_R ||B - V R||_F^2 over orthogonal R (an
    orthogonal Procrustes problem solved by the SVD of B^T V).

    `loss_history_[t]` is the quantization loss ||sgn(V R_t) - V R_t||_F^2 (summed
    over the training set) of the rotation after t updates; entry 0 is the random
    initial rotation, so the history has `iterations + 1` entries. Each update can
    only lower this loss, so the history is non-increasing.

    Reference:
        Gong, Lazebnik. "Iterative Quantization: A Procrustean Approach to Learning
        Binary Codes." CVPR 2011; Gong, Lazebnik, Gordo, Perronnin, TPAMI 2013.

    Args:
        bits: Code length K; must satisfy 1 <= K <= D.
        seed: Seed of the random initial rotation.
        iterations: Number of alternating updates (the paper uses 50).
    """

    name = "ITQ"

    def __init__(self, bits: int, *, seed: int = 0, iterations: int = 50):
        self.bits = check_bits(bits, method=self.name)
        if (
            isinstance(iterations, bool)
            or not isinstance(iterations, numbers.Integral)
            or iterations < 0
        ):
            raise ValueError(
                f"{self.name}: iterations must be an integer >= 0; got {iterations!r}."
            )
        self.seed = int(seed)
        self.iterations = int(iterations)
        self.mean_: np.ndarray | None = None  # (D,)
        self.components_: np.ndarray | None = None  # (D, K) principal directions
        self.rotation_: np.ndarray | None = None  # (K, K)
        self.loss_history_: np.ndarray | None = None  # (iterations + 1,)

    def fit(self, features: np.ndarray) -> ITQ:
        """Learns the mean, the principal directions and the rotation.

        Args:
            features: Training features of shape (N, D) with N > K and D >= K.

        Returns:
            self.
        """
        checked = check_features(features, method=self.name, min_samples=2)
        mean, components = principal_directions(checked, self.bits, method=self.name)
        projected = (checked - mean) @ components  # V: (N, K)

        rng = np.random.default_rng(self.seed)
        rotation = random_rotation(self.bits, rng)
        losses = [quantization_loss(projected, rotation)]
        for _ in range(self.iterations):
            codes = binarize(projected @ rotation).astype(np.float64)  # B: (N, K)
            # Procrustes: R maximising tr(R^T V^T B); with V^T B = U S W^T, R = U W^T.
            u, _, wt = np.linalg.svd(projected.T @ codes)
            rotation = u @ wt
            losses.append(quantization_loss(projected, rotation))

        self.mean_ = mean
        self.components_ = components
        self.rotation_ = rotation
        self.loss_history_ = np.asarray(losses)
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
            "iterations": self.iterations,
            "mean": self.mean_.copy(),
            "components": self.components_.copy(),
            "rotation": self.rotation_.copy(),
            "loss_history": self.loss_history_.copy(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ITQ:
        """Rebuilds a fitted model from `get_state()` output (also as loaded from npz).

        Args:
            state: Mapping with keys bits, seed, iterations, mean, components,
                rotation, loss_history.

        Returns:
            A fitted ITQ.
        """
        model = cls(
            int(state["bits"]), seed=int(state["seed"]), iterations=int(state["iterations"])
        )
        model.mean_ = np.asarray(state["mean"], dtype=np.float64)
        model.components_ = np.asarray(state["components"], dtype=np.float64)
        model.rotation_ = np.asarray(state["rotation"], dtype=np.float64)
        model.loss_history_ = np.asarray(state["loss_history"], dtype=np.float64)
        expected = {
            "components": (model.mean_.shape[0], model.bits),
            "rotation": (model.bits, model.bits),
        }
        for key, shape in expected.items():
            if np.shape(state[key]) != shape:
                raise ValueError(
                    f"{cls.name}: state has {key} of shape {np.shape(state[key])}; expected {shape} "
                    f"from mean and bits."
                )
        return model
