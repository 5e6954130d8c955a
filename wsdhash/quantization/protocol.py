"""What every quantizer offers, and the registry that names them.

A quantizer maps (N, D) features to (N, M) uint8 codeword indices. WSDHQ's training
(`wsdhash.methods.wsdhq_quantizer.TrainingQuantizer`) uses one only through the
`Quantizer` protocol below, for the loss's targets, the codes file's codebooks and
indices, AQD evaluation and the exported model's in-graph encoder; it finds the class
by its name in `QUANTIZERS` (the `--quantizer` flag's choices, and the `kind` of its
state). Everything downstream of training (codes files, AQD search, the service) sees
only the additive (M, K, D) codebooks and the codes, never the quantizer.

A new quantizer is one class that satisfies the protocol and registers itself where
it is defined:

    @QUANTIZERS.register("residual")
    class ResidualQuantizer:
        kind = "residual"
        ...

and is imported by `wsdhash/quantization/__init__.py`, so that the registry knows it
whenever the package is imported.

This module imports only numpy and `wsdhash.registry`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from wsdhash.registry import Registry


@runtime_checkable
class Quantizer(Protocol):
    """A quantizer of (N, D) features into (N, M) uint8 codes.

    Attributes:
        kind: its `QUANTIZERS` name, also the `kind` of its state.
        loss_forms: the WSDHQ loss forms (`wsdhash.losses.wsdhq.QUANTIZATION_FORMS`)
            whose feature space it quantizes; the first is the default.
        num_codebooks: M.
        num_codewords: K per codebook, at most 256.
        codebooks: its codebooks in its own layout, or None before any fit.
    """

    kind: ClassVar[str]
    loss_forms: ClassVar[tuple[str, ...]]
    num_codebooks: int
    num_codewords: int
    codebooks: np.ndarray | None

    @classmethod
    def for_training(
        cls, num_codebooks: int, num_codewords: int, *, seed: int, tag_embeddings: np.ndarray
    ) -> Quantizer:
        """The quantizer WSDHQ trains, before any fit; ValueError for a setting it
        cannot take (`tag_embeddings`: (T, D), D the feature dimension)."""

    def fit(self, features: np.ndarray) -> Quantizer:
        """Learns codebooks from (N, D) features from scratch; returns self."""

    def initialize_codebooks(self, features: np.ndarray) -> np.ndarray:
        """The codebooks of the first training round, from (N, D) features (stored)."""

    def encode(self, features: np.ndarray) -> np.ndarray:
        """(N, M) uint8 codes of (N, D) features."""

    def update_codebooks(self, features: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """One codebook update for fixed codes; returns the new codebooks (stored)."""

    def additive_codebooks(self) -> np.ndarray:
        """(M, K, D) codebooks whose chosen codewords ADD UP to the reconstruction: the
        form the loss, AQD search, codes files and exported models take."""

    def set_additive_codebooks(self, codebooks: np.ndarray) -> None:
        """The inverse of `additive_codebooks`."""

    def describe_fit(self, features: np.ndarray, codes: np.ndarray) -> str:
        """How well `codes` fit `features`, in words, for the training log."""

    def get_state(self) -> dict[str, Any]:
        """Plain values and numpy arrays, with `kind`, that `from_state` restores."""

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Quantizer:
        """Rebuilds a quantizer from `get_state()`."""

    def graph_encoder(self, unit_features: bool):
        """The fitted quantizer as a `tf.Module`: features (B, D) -> codes (B, M) uint8,
        with its additive codebooks in a variable `codebooks_additive`. TensorFlow is
        imported only when this is called."""


QUANTIZERS: Registry[type[Quantizer]] = Registry("quantizer")


def quantizer_from_state(state: dict[str, Any]) -> Quantizer:
    """Rebuilds a quantizer of any registered kind from its `get_state()`."""
    return QUANTIZERS.get(state.get("kind")).from_state(state)


def check_state_kind(state: dict[str, Any], kind: str, article: str = "a") -> None:
    """ValueError unless `state` is the state of a `kind` quantizer."""
    if state.get("kind") != kind:
        raise ValueError(f"Not {article} {kind} quantizer state: kind={state.get('kind')!r}.")


def state_codebooks(
    state: dict[str, Any], expected: tuple[int, int], dtype, axes: str
) -> np.ndarray | None:
    """The codebooks of a state as a `dtype` copy (None when it has none), checked to be
    (M, K, .) with (M, K) = `expected`; `axes` names the layout in the error ("M, K, D")."""
    codebooks = state.get("codebooks")
    if codebooks is None:
        return None
    codebooks = np.asarray(codebooks, dtype=dtype)
    if codebooks.ndim != 3 or codebooks.shape[:2] != expected:
        raise ValueError(
            f"State codebooks have shape {codebooks.shape}; expected ({axes}) with "
            f"(M, K) = {expected}."
        )
    return codebooks.copy()
