"""Hyperspherical product quantization: PQ with unit-norm sub-codewords.

The D dimensions are split into M contiguous sub-spaces of D / M dimensions (M must
divide D). Each sub-vector is L2-normalised and quantized independently to one of K
unit-norm codewords by cosine similarity; the codebook of each sub-space comes from
spherical k-means. The reconstruction is the concatenation of the chosen codewords, so
every sub-vector of it lies on the unit sphere (||x_hat||^2 = M; divide by sqrt(M) for
a unit vector, which changes no ranking).

Encoding is exact: sub-spaces are independent, so the best joint code maximises each
sub-space's cosine separately, k_m = argmax_k <x_m / ||x_m||, c_{m,k}> (ties: lower k;
an all-zero sub-vector gets k = 0).

This is the role the paper gives to "hyperspherical quantization"; WSDHQ's released
code quantizes additively instead (additive.py; docs/methods.md, "WSDHQ: additive quantizer").

FAISS layout: `codebooks` (M, K, D/M) is `faiss.ProductQuantizer.centroids` reshaped
to (M, ksub, dsub), with sub-space m = dimensions [m * dsub, (m + 1) * dsub), and the
(N, M) uint8 codes are what `pq.compute_codes` returns for nbits = 8 (one byte per
sub-quantizer, sub-quantizer 0 first). To run FAISS on the same codes, normalise each
sub-vector before `compute_codes`. For wsdhash's codes file, whose codebooks are
(M, 256, D), `full_codebooks()` places each sub-codebook in its own columns with zeros
elsewhere; the additive reconstruction of those equals the concatenation, so AQD and
SQD give the same scores either way.

Shapes: N items, M codebooks (sub-spaces), K codewords, D dimension, S = D / M.

Reference:
  Jegou, Douze & Schmid, "Product Quantization for Nearest Neighbor Search",
  TPAMI 2011.
  Wang et al., "Weakly Supervised Deep Hyperspherical Quantization for Image
  Retrieval", AAAI 2021.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wsdhash.quantization import kmeans as kmeans_lib
from wsdhash.quantization.protocol import QUANTIZERS, check_state_kind, state_codebooks


def split_subvectors(features: np.ndarray, num_codebooks: int) -> np.ndarray:
    """(N, D) -> (N, M, D / M) contiguous sub-vectors; a clear error if M does not divide D."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be an (N, D) array; got shape {features.shape}.")
    dimension = features.shape[1]
    if num_codebooks < 1 or dimension % num_codebooks:
        raise ValueError(
            f"Product quantization needs D divisible by M; got D={dimension}, M={num_codebooks}."
        )
    return features.reshape(features.shape[0], num_codebooks, dimension // num_codebooks)


@QUANTIZERS.register("product")
class ProductQuantizer:
    """Product quantizer on the hypersphere (module doc); a `protocol.Quantizer`.

    Args:
      num_codebooks: M sub-spaces; 8 * M bits when K = 256.
      num_codewords: K per sub-space, at most 256 (uint8 codes).
      kmeans_iter: Lloyd iterations of spherical k-means.
      seed: seeds k-means; sub-space m uses seed + m.

    Reference:
      Jegou et al., TPAMI 2011 (PQ).
    """

    kind = "product"
    loss_forms = ("product",)  # normalised sub-vectors, and only with this quantizer

    def __init__(
        self,
        num_codebooks: int = 4,
        num_codewords: int = 256,
        *,
        kmeans_iter: int = 25,
        seed: int = 0,
    ):
        if num_codebooks < 1:
            raise ValueError(f"num_codebooks must be >= 1; got {num_codebooks}.")
        if not 1 <= num_codewords <= 256:
            raise ValueError(f"num_codewords must be in 1..256 (uint8 codes); got {num_codewords}.")
        self.num_codebooks = int(num_codebooks)
        self.num_codewords = int(num_codewords)
        self.kmeans_iter = int(kmeans_iter)
        self.seed = int(seed)
        self.codebooks: np.ndarray | None = None  # (M, K, S), unit rows.

    @classmethod
    def for_training(
        cls, num_codebooks: int, num_codewords: int, *, seed: int, tag_embeddings: np.ndarray
    ) -> ProductQuantizer:
        """WSDHQ's product quantizer; M must divide D, the tag-embedding dimension (the
        tag embeddings do not weight its encoding)."""
        dimension = tag_embeddings.shape[1]
        if dimension % num_codebooks:
            raise ValueError(
                f"The product quantizer splits D={dimension} (the tag-embedding "
                f"dimension) into M={num_codebooks} sub-spaces; M must divide D."
            )
        return cls(num_codebooks, num_codewords, seed=seed)

    @property
    def dimension(self) -> int | None:
        """D, once codebooks exist."""
        return None if self.codebooks is None else self.num_codebooks * self.codebooks.shape[2]

    def _subvectors(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features)
        if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
            raise ValueError(
                f"features must be a numeric (N, D) array; got dtype {features.dtype} and "
                f"shape {features.shape}."
            )
        if self.codebooks is not None and features.shape[1] != self.dimension:
            raise ValueError(
                f"features have D={features.shape[1]} but the codebooks cover D={self.dimension}."
            )
        if not np.all(np.isfinite(features)):
            raise ValueError("features contain NaN or infinite values.")
        return kmeans_lib.l2_normalize(
            split_subvectors(features.astype(np.float64, copy=False), self.num_codebooks)
        )  # (N, M, S), unit sub-vectors.

    def _require_codebooks(self) -> np.ndarray:
        if self.codebooks is None:
            raise ValueError("The quantizer has no codebooks yet; call fit() first.")
        return self.codebooks

    def fit(self, features: np.ndarray) -> ProductQuantizer:
        """Spherical k-means in every sub-space.

        Args:
          features: (N, D) training features, N >= K, D divisible by M.

        Returns:
          self.
        """
        subvectors = self._subvectors(features)
        codebooks = np.empty(
            (self.num_codebooks, self.num_codewords, subvectors.shape[2]), dtype=np.float32
        )
        for m in range(self.num_codebooks):
            centres, _ = kmeans_lib.kmeans(
                subvectors[:, m],
                self.num_codewords,
                seed=self.seed + m,
                max_iter=self.kmeans_iter,
                spherical=True,
            )
            codebooks[m] = centres
        self.codebooks = codebooks
        return self

    def initialize_codebooks(self, features: np.ndarray) -> np.ndarray:
        """The first training round's codebooks: `fit` (spherical k-means); returns them."""
        return self.fit(features).codebooks

    def encode(self, features: np.ndarray) -> np.ndarray:
        """(N, M) uint8 codes: the codeword of largest cosine in every sub-space."""
        codebooks = self._require_codebooks()
        subvectors = self._subvectors(features)
        codes = np.empty((subvectors.shape[0], self.num_codebooks), dtype=np.uint8)
        for m in range(self.num_codebooks):
            # Sub-vectors are unit (or zero), codewords unit: inner product = cosine.
            codes[:, m] = np.argmax(subvectors[:, m] @ codebooks[m].T.astype(np.float64), axis=1)
        return codes

    def update_codebooks(self, features: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """One spherical Lloyd step from the current codebooks; returns the new codebooks.

        Every codeword becomes the normalised mean of the unit sub-vectors assigned to it
        by `codes`, which maximises the summed cosine of those sub-vectors for fixed
        assignments. A codeword with no sub-vector (or whose members cancel out) keeps its
        value. This is the product-mode counterpart of the additive quantizer's
        closed-form update between training rounds.

        Args:
          features: (N, D) features.
          codes: (N, M) codes of those features (usually `encode(features)`).
        """
        codebooks = self._require_codebooks()
        subvectors = self._subvectors(features)  # (N, M, S)
        codes = np.asarray(codes)
        if codes.shape != subvectors.shape[:2]:
            raise ValueError(
                f"codes must be (N={subvectors.shape[0]}, M={self.num_codebooks}); got shape "
                f"{codes.shape}."
            )
        updated = codebooks.astype(np.float64)
        for m in range(self.num_codebooks):
            sums = np.zeros_like(updated[m])  # (K, S)
            np.add.at(sums, codes[:, m].astype(np.intp), subvectors[:, m])
            norms = np.linalg.norm(sums, axis=1)
            moved = norms > 1e-12
            updated[m, moved] = sums[moved] / norms[moved, None]
        self.codebooks = updated.astype(np.float32)
        return self.codebooks

    def summed_cosine(self, features: np.ndarray, codes: np.ndarray) -> float:
        """Sum over items and sub-spaces of cos(x_m, c_{m, k_m}): what PQ on the sphere
        maximises (module doc)."""
        subvectors = self._subvectors(features)
        return float(np.sum(subvectors * self.reconstruct(codes).reshape(subvectors.shape)))

    def describe_fit(self, features: np.ndarray, codes: np.ndarray) -> str:
        """The mean summed sub-space cosine of `codes` to `features`, for the log."""
        cosine = self.summed_cosine(features, codes) / len(codes)
        return f"mean summed sub-space cosine {cosine:.4f}"

    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """(N, D) concatenation of the chosen unit sub-codewords."""
        codebooks = self._require_codebooks()
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.num_codebooks:
            raise ValueError(
                f"codes must be (N, M={self.num_codebooks}) indices; got shape {codes.shape}."
            )
        if codes.size and (codes.min() < 0 or codes.max() >= self.num_codewords):
            raise ValueError(f"codes must lie in 0..{self.num_codewords - 1}.")
        parts = codebooks[np.arange(self.num_codebooks), codes.astype(np.intp)]  # (N, M, S)
        return parts.reshape(codes.shape[0], -1)

    def full_codebooks(self) -> np.ndarray:
        """(M, K, D) block-sparse codebooks for the codes file (module doc)."""
        codebooks = self._require_codebooks()
        size = codebooks.shape[2]
        full = np.zeros((self.num_codebooks, self.num_codewords, self.dimension), np.float32)
        for m in range(self.num_codebooks):
            full[m, :, m * size : (m + 1) * size] = codebooks[m]
        return full

    additive_codebooks = full_codebooks  # the protocol's name

    def set_full_codebooks(self, full: np.ndarray) -> None:
        """Inverse of `full_codebooks`: takes sub-codebook m from its own columns."""
        full = np.asarray(full, np.float32)
        if full.ndim != 3 or full.shape[:2] != (self.num_codebooks, self.num_codewords):
            raise ValueError(
                f"full codebooks must be (M={self.num_codebooks}, K={self.num_codewords}, D); "
                f"got shape {full.shape}."
            )
        size = split_subvectors(full[0], self.num_codebooks).shape[2]
        self.codebooks = np.stack(
            [full[m, :, m * size : (m + 1) * size] for m in range(self.num_codebooks)]
        )

    set_additive_codebooks = set_full_codebooks  # the protocol's name

    def graph_encoder(self, unit_features: bool):
        """The quantizer as TensorFlow ops (graph_encoder.py); imports TensorFlow."""
        from wsdhash.quantization.graph_encoder import QuantizationEncoder

        return QuantizationEncoder(self, unit_features=unit_features)

    def get_state(self) -> dict[str, Any]:
        """A dict of plain values and numpy arrays that `from_state` restores."""
        return {
            "kind": self.kind,
            "num_codebooks": self.num_codebooks,
            "num_codewords": self.num_codewords,
            "kmeans_iter": self.kmeans_iter,
            "seed": self.seed,
            "codebooks": None if self.codebooks is None else self.codebooks.copy(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ProductQuantizer:
        """Rebuilds a quantizer from `get_state()`."""
        check_state_kind(state, cls.kind)
        quantizer = cls(
            state["num_codebooks"],
            state["num_codewords"],
            kmeans_iter=state["kmeans_iter"],
            seed=state["seed"],
        )
        expected = (quantizer.num_codebooks, quantizer.num_codewords)
        codebooks = state_codebooks(state, expected, np.float32, "M, K, S")
        if codebooks is not None:
            quantizer.codebooks = codebooks
        return quantizer
