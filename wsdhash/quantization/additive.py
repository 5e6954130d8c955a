"""WSDHQ's additive quantizer, faithful to the original code (docs/methods.md,
"WSDHQ: additive quantizer").

M codebooks of K = 256 full-dimensional codewords C_m in R^{K x D}; an item is stored
as M uint8 indices b = (k_1, ..., k_M) and reconstructed as the sum
x_hat = sum_m C_m[k_m] (composite / additive quantization, as in DQN and DVSQ).

Distortion (what ICM minimises), with E the (T, D) tag-embedding matrix:

    d_E(x, b) = || E (x - sum_m C_m[k_m]) ||^2 = sum_t ( e_t . (x - x_hat) )^2,

i.e. the squared error of the inner products with every tag embedding ("distortion in
the space of cosine similarities to the tags"). WSDHQ passes the raw `FinalTagEmbs` rows
as E and the raw (un-normalised) tanh features as x (docs/methods.md, "WSDHQ:
quantization loss"); this module uses whatever E it is given, without normalising it.
Without E the distortion is the plain squared Euclidean error ||x - x_hat||^2 (E = I),
as in DQN.

Implementation: ||E v||^2 = ||F v||^2 for any F with F^T F = E^T E. F = E when T <= D,
else the (D, D) R factor of E = QR, so ICM runs in min(T, D) dimensions on projected
features F x and codewords F C_m[k] and never builds the (B, K, T) tensor of the
original. For codebook m and residual r = F x - sum_{m' != m, assigned} F C_{m'}[k_{m'}]:

    k_m <- argmin_k ||r - F C_m[k]||^2 = argmin_k ( ||F C_m[k]||^2 - 2 r . F C_m[k] ).

Procedure, per batch of `code_batch_size` items (the original: 500 in training, 700 at
test time):
  codes <- none assigned (the original resets its one-hot codes to 0, so the
           first sweep is greedy: unassigned codebooks contribute nothing)
  repeat max_iter (= 3) times:
    for m in the sweep's permutation of 0..M-1 (`icm_orders`):
      k_m <- argmin_k d_E(x, b with k_m = k)
Given `init_codes` the sweeps start from those codes instead (not in the original).
The max_iter permutations are drawn once from a generator seeded by `seed` alone, and
every batch uses the same ones (the original draws new ones per batch): an item's
codes are then a function of the item and the quantizer's state only, whatever the
batch size or the item's position, so the codes file, the exported model's in-graph
encoder (graph_encoder.py) and the service give the same codes for the same feature.
The arithmetic is float64 whatever `dtype` (features are first rounded to `dtype`),
so that the graph encoder, doing the same operations in float64, reproduces the codes
bit for bit instead of flipping float32 near ties.

Codebook update (closed form, the original's `update_centers`), with B the (N, MK)
one-hot code matrix and X the (N, D) features:

    C <- (B^T B + lambda I)^{-1} B^T X,        lambda = ridge = 1e-3,

the minimiser of ||X - B C||_F^2 + lambda ||C||_F^2, solved jointly for all M*K
codewords. It is computed in the plain (unweighted) metric, as the original does,
and it also minimises the E-weighted objective ||(X - B C) E^T||_F^2 + lambda
||C E^T||_F^2: that objective's gradient is 2 ((B^T B + lambda I) C - B^T X) E^T E,
which vanishes at the same C (the minimiser is unique when E has full column rank).
Rows whose squared norm after the solve is below 1e-8 (codewords no item uses: the
ridge drives them to 0) keep their previous values, as in the original.

Initialisation (the original's `initial_centers`): the D dimensions are split into M
contiguous chunks of floor(D / M); codebook m is k-means (K clusters) on X[:, chunk_m],
placed in chunk_m's columns with zeros elsewhere. When M does not divide D the last
D mod M dimensions are zero in every initial codeword, as in the original. wsdhash
uses seeded full-batch k-means instead of unseeded MiniBatchKMeans (see kmeans.py).

Shapes: N items, B items in a batch, M codebooks, K codewords per codebook, D
dimension, T tags, P = min(T, D) projected dimension.

Reference:
  Jinpeng Wang et al., "Weakly Supervised Deep Hyperspherical Quantization for Image
  Retrieval", AAAI 2021 (code: gimpong/AAAI21-WSDHQ).
  Yue Cao et al., "Deep Visual-Semantic Quantization for Efficient Image Retrieval",
  CVPR 2017 (DVSQ; code: thulab/DeepHash).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wsdhash.quantization import kmeans as kmeans_lib
from wsdhash.quantization.protocol import QUANTIZERS, check_state_kind, state_codebooks

# A codeword this close to zero after the solve is treated as unused (the original).
_UNUSED_CODEWORD_SQ_NORM = 1e-8
# Salt of the ICM order generator, so it never coincides with the k-means generator.
_ICM_SALT = 0x1C3


def metric_factor(tag_embeddings: np.ndarray | None) -> np.ndarray | None:
    """F with F^T F = E^T E, so that ||E v|| = ||F v||; None for the Euclidean metric.

    Args:
      tag_embeddings: (T, D) matrix E, or None.

    Returns:
      (min(T, D), D) float64 F: E itself when T <= D, else the R factor of E = QR.
    """
    if tag_embeddings is None:
        return None
    embeddings = np.asarray(tag_embeddings, dtype=np.float64)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError(
            f"tag_embeddings must be a non-empty (T, D) matrix; got shape {embeddings.shape}."
        )
    if not np.all(np.isfinite(embeddings)):
        raise ValueError("tag_embeddings contains NaN or infinite values.")
    if embeddings.shape[0] <= embeddings.shape[1]:
        return embeddings
    return np.linalg.qr(embeddings, mode="r")  # (D, D); ||E v|| = ||Q R v|| = ||R v||.


@QUANTIZERS.register("additive")
class AdditiveQuantizer:
    """WSDHQ / DVSQ additive quantizer with tag-weighted ICM encoding; a
    `protocol.Quantizer`.

    Usable from a training callback: `fit` once (initialise, encode, update), then
    every few epochs `codes = encode(features)` and `update_codebooks(features, codes)`.

    Args:
      num_codebooks: M; the code has 8 * M bits when K = 256.
      num_codewords: K, at most 256 (codes are uint8).
      max_iter: ICM sweeps per encoding (the original's max_iter_update_b = 3).
      ridge: lambda of the codebook solve (1e-3 in the original).
      code_batch_size: items encoded together (memory: about B * K floats).
      num_rounds: (encode, update) rounds per `fit` (max_iter_update_Cb = 1).
      kmeans_iter: Lloyd iterations of the initial sub-space k-means.
      seed: seeds the k-means initialisation and the ICM orders.
      dtype: dtype of the codebooks and of the features ICM encodes (float32 as in the
        original); the ICM arithmetic itself is float64 (module doc).

    Reference:
      Wang et al., AAAI 2021 (WSDHQ); Cao et al., CVPR 2017 (DVSQ).
    """

    kind = "additive"
    loss_forms = ("faithful", "hypersphere")  # raw features (the original's) or unit rows

    def __init__(
        self,
        num_codebooks: int = 4,
        num_codewords: int = 256,
        *,
        max_iter: int = 3,
        ridge: float = 1e-3,
        code_batch_size: int = 500,
        num_rounds: int = 1,
        kmeans_iter: int = 25,
        seed: int = 0,
        dtype: Any = np.float32,
    ):
        if num_codebooks < 1:
            raise ValueError(f"num_codebooks must be >= 1; got {num_codebooks}.")
        if not 1 <= num_codewords <= 256:
            raise ValueError(f"num_codewords must be in 1..256 (uint8 codes); got {num_codewords}.")
        if max_iter < 1 or code_batch_size < 1 or num_rounds < 1:
            raise ValueError(
                "max_iter, code_batch_size and num_rounds must be >= 1; got "
                f"{max_iter}, {code_batch_size}, {num_rounds}."
            )
        if ridge < 0:
            raise ValueError(f"ridge must be >= 0; got {ridge}.")
        self.num_codebooks = int(num_codebooks)
        self.num_codewords = int(num_codewords)
        self.max_iter = int(max_iter)
        self.ridge = float(ridge)
        self.code_batch_size = int(code_batch_size)
        self.num_rounds = int(num_rounds)
        self.kmeans_iter = int(kmeans_iter)
        self.seed = int(seed)
        self.dtype = np.dtype(dtype)
        self.codebooks: np.ndarray | None = None  # (M, K, D)
        self.tag_embeddings: np.ndarray | None = None  # (T, D) or None
        self._factor: np.ndarray | None = None  # (P, D) or None

    @classmethod
    def for_training(
        cls, num_codebooks: int, num_codewords: int, *, seed: int, tag_embeddings: np.ndarray
    ) -> AdditiveQuantizer:
        """WSDHQ's additive quantizer, its ICM distortion weighted by `tag_embeddings`."""
        quantizer = cls(num_codebooks, num_codewords, seed=seed)
        quantizer.set_tag_embeddings(tag_embeddings)
        return quantizer

    # ----------------------------------------------------------------- checks
    @property
    def dimension(self) -> int | None:
        """D, once codebooks exist."""
        return None if self.codebooks is None else int(self.codebooks.shape[2])

    def _check_features(self, features: np.ndarray, name: str = "features") -> np.ndarray:
        features = np.asarray(features)
        if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
            raise ValueError(
                f"{name} must be a numeric (N, D) array; got dtype {features.dtype} and "
                f"shape {features.shape}."
            )
        if self.codebooks is not None and features.shape[1] != self.dimension:
            raise ValueError(
                f"{name} have D={features.shape[1]} but the codebooks have D={self.dimension}."
            )
        if not np.all(np.isfinite(features)):
            raise ValueError(f"{name} contain NaN or infinite values.")
        return features.astype(self.dtype, copy=False)

    def _check_codes(self, codes: np.ndarray, num_items: int | None = None) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.num_codebooks:
            raise ValueError(
                f"codes must be (N, M={self.num_codebooks}) codeword indices; got shape "
                f"{codes.shape}."
            )
        if num_items is not None and codes.shape[0] != num_items:
            raise ValueError(f"codes have {codes.shape[0]} rows but features have {num_items}.")
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be integers; got dtype {codes.dtype}.")
        if codes.size and (codes.min() < 0 or codes.max() >= self.num_codewords):
            raise ValueError(f"codes must lie in 0..{self.num_codewords - 1}.")
        return codes

    def _require_codebooks(self) -> np.ndarray:
        if self.codebooks is None:
            raise ValueError("The quantizer has no codebooks yet; call fit() first.")
        return self.codebooks

    def set_tag_embeddings(self, tag_embeddings: np.ndarray | None) -> None:
        """Sets E, the (T, D) tag embeddings that weight the distortion (None: Euclidean)."""
        factor = metric_factor(tag_embeddings)
        if factor is not None and self.codebooks is not None and factor.shape[1] != self.dimension:
            raise ValueError(
                f"tag_embeddings have D={factor.shape[1]} but the codebooks have "
                f"D={self.dimension}."
            )
        self.tag_embeddings = (
            None if tag_embeddings is None else np.asarray(tag_embeddings, dtype=np.float64)
        )
        self._factor = factor

    # ------------------------------------------------------------------ fit
    def initialize_codebooks(self, features: np.ndarray) -> np.ndarray:
        """Sub-space k-means initialisation (the original's `initial_centers`).

        Args:
          features: (N, D) training features, N >= K.

        Returns:
          The new (M, K, D) codebooks (also stored).
        """
        features = np.asarray(self._check_features(features), dtype=np.float64)
        dimension = features.shape[1]
        chunk = dimension // self.num_codebooks
        if chunk == 0:
            raise ValueError(
                f"D={dimension} is smaller than M={self.num_codebooks}: no sub-space to "
                "initialise each codebook from."
            )
        codebooks = np.zeros((self.num_codebooks, self.num_codewords, dimension), self.dtype)
        for m in range(self.num_codebooks):
            columns = slice(m * chunk, (m + 1) * chunk)
            centres, _ = kmeans_lib.kmeans(
                features[:, columns],
                self.num_codewords,
                seed=self.seed + m,
                max_iter=self.kmeans_iter,
            )
            codebooks[m, :, columns] = centres
        self.codebooks = codebooks
        return codebooks

    def fit(
        self, features: np.ndarray, tag_embeddings: np.ndarray | None = None
    ) -> AdditiveQuantizer:
        """Initialises the codebooks, then runs `num_rounds` (encode, update) rounds.

        This is what the original does at its first quantizer update.

        Args:
          features: (N, D) training features.
          tag_embeddings: (T, D) E weighting the ICM distortion; None for Euclidean.

        Returns:
          self.
        """
        features = self._check_features(features)
        self.set_tag_embeddings(tag_embeddings)
        if self._factor is not None and self._factor.shape[1] != features.shape[1]:
            raise ValueError(
                f"tag_embeddings have D={self._factor.shape[1]} but features have "
                f"D={features.shape[1]}."
            )
        self.initialize_codebooks(features)
        for _ in range(self.num_rounds):
            codes = self.encode(features)
            self.update_codebooks(features, codes)
        return self

    # --------------------------------------------------------------- encode
    def _projected(self, vectors: np.ndarray) -> np.ndarray:
        """F v for rows v (or v itself in the Euclidean metric), in float64."""
        vectors = np.asarray(vectors, dtype=np.float64)
        if self._factor is None:
            return vectors
        return vectors @ self._factor.T

    def encode(
        self,
        features: np.ndarray,
        init_codes: np.ndarray | None = None,
        *,
        return_history: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
        """ICM code assignment (module doc).

        Args:
          features: (N, D) features.
          init_codes: optional (N, M) codes to start from; default: none assigned, as in
            the original (the first sweep is then greedy).
          return_history: also return the (N,) distortion after every codebook update
            (for tests and diagnosis; costs one extra pass per update).

        Returns:
          (N, M) uint8 codes, or (codes, list of max_iter * M (N,) distortions).
        """
        features = self._check_features(features)
        num_items = features.shape[0]
        if init_codes is not None:
            init_codes = self._check_codes(init_codes, num_items)
        projected_codebooks = self.projected_codebooks()  # (M, K, P)
        codeword_sq_norms = np.einsum("mkp,mkp->mk", projected_codebooks, projected_codebooks)
        codes = np.zeros((num_items, self.num_codebooks), dtype=np.uint8)
        history = [
            np.empty(num_items, dtype=np.float64) for _ in range(self.max_iter * self.num_codebooks)
        ]
        orders = self.icm_orders()  # the same for every batch (module doc)
        for start in range(0, num_items, self.code_batch_size):
            stop = min(start + self.code_batch_size, num_items)
            batch_codes, batch_history = self._encode_batch(
                self._projected(features[start:stop]),
                projected_codebooks,
                codeword_sq_norms,
                None if init_codes is None else init_codes[start:stop],
                orders,
                return_history,
            )
            codes[start:stop] = batch_codes
            for step, values in enumerate(batch_history):
                history[step][start:stop] = values
        return (codes, history) if return_history else codes

    def icm_orders(self) -> list[np.ndarray]:
        """The codebook orders of the `max_iter` ICM sweeps: a function of `seed`,
        `max_iter` and M only, the same for every batch and every encoder (module doc);
        the in-graph encoder replays them."""
        rng = np.random.default_rng((self.seed, _ICM_SALT))
        return [rng.permutation(self.num_codebooks) for _ in range(self.max_iter)]

    def projected_codebooks(self) -> np.ndarray:
        """(M, K, P) codewords in the metric's projected space (F C), in float64."""
        codebooks = self._require_codebooks()
        flat = self._projected(codebooks.reshape(-1, codebooks.shape[2]))
        return flat.reshape(self.num_codebooks, self.num_codewords, -1)

    @property
    def metric_factor(self) -> np.ndarray | None:
        """F (P, D) with F^T F = E^T E, or None for the Euclidean metric."""
        return self._factor

    def _encode_batch(
        self,
        projected: np.ndarray,  # (B, P)
        projected_codebooks: np.ndarray,  # (M, K, P)
        codeword_sq_norms: np.ndarray,  # (M, K)
        init_codes: np.ndarray | None,  # (B, M)
        orders: list[np.ndarray],  # max_iter permutations of 0..M-1
        return_history: bool,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        if init_codes is None:
            codes = np.zeros((len(projected), self.num_codebooks), dtype=np.int64)
            assigned = np.zeros(self.num_codebooks, dtype=bool)
            reconstruction = np.zeros_like(projected)  # (B, P): sum of assigned codewords.
        else:
            codes = init_codes.astype(np.int64)
            assigned = np.ones(self.num_codebooks, dtype=bool)
            reconstruction = projected_codebooks[np.arange(self.num_codebooks), codes].sum(axis=1)
        history = []
        for order in orders:
            for m in order:
                residual = projected - reconstruction  # (B, P)
                if assigned[m]:
                    residual += projected_codebooks[m, codes[:, m]]
                # ||r - c_k||^2 - ||r||^2 = ||c_k||^2 - 2 r.c_k, for all k at once.
                partial = codeword_sq_norms[m][None, :] - 2.0 * (
                    residual @ projected_codebooks[m].T
                )  # (B, K)
                best = np.argmin(partial, axis=1)
                if assigned[m]:
                    reconstruction -= projected_codebooks[m, codes[:, m]]
                reconstruction += projected_codebooks[m, best]
                codes[:, m] = best
                assigned[m] = True
                if return_history:
                    error = projected.astype(np.float64) - reconstruction
                    history.append(np.einsum("bp,bp->b", error, error))
        return codes.astype(np.uint8), history

    # --------------------------------------------------------------- update
    def update_codebooks(self, features: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Closed-form ridge update C <- (B^T B + lambda I)^{-1} B^T X (module doc).

        Args:
          features: (N, D) features X.
          codes: (N, M) codeword indices.

        Returns:
          The new (M, K, D) codebooks (also stored).
        """
        previous = self._require_codebooks()
        features = np.asarray(self._check_features(features), dtype=np.float64)
        codes = self._check_codes(codes, features.shape[0])
        gram, cross = self.normal_equations(features, codes)
        solution = np.linalg.solve(
            gram + self.ridge * np.eye(gram.shape[0]), cross
        )  # (MK, D); gram + lambda I is symmetric positive (semi)definite.
        flat_previous = previous.reshape(-1, previous.shape[2])
        unused = np.einsum("rd,rd->r", solution, solution) < _UNUSED_CODEWORD_SQ_NORM
        solution[unused] = flat_previous[unused]
        self.codebooks = solution.reshape(previous.shape).astype(self.dtype)
        return self.codebooks

    def normal_equations(
        self, features: np.ndarray, codes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """B^T B (MK, MK) and B^T X (MK, D) without building the (N, MK) one-hot B.

        (B^T B)[(m, k), (m', k')] counts the items with code k in codebook m and k' in
        codebook m'; (B^T X)[(m, k)] sums the features of the items with code k in m.
        """
        features = np.asarray(features, dtype=np.float64)
        codes = np.asarray(codes, dtype=np.int64)
        num_k = self.num_codewords
        size = self.num_codebooks * num_k
        gram = np.zeros((size, size))
        cross = np.zeros((size, features.shape[1]))
        for m in range(self.num_codebooks):
            for m2 in range(m, self.num_codebooks):
                pair = np.bincount(codes[:, m] * num_k + codes[:, m2], minlength=num_k * num_k)
                block = pair.reshape(num_k, num_k).astype(np.float64)
                gram[m * num_k : (m + 1) * num_k, m2 * num_k : (m2 + 1) * num_k] = block
                gram[m2 * num_k : (m2 + 1) * num_k, m * num_k : (m + 1) * num_k] = block.T
            # Group sums by a stable sort: faster than np.add.at for (N, D) rows.
            order = np.argsort(codes[:, m], kind="stable")
            sorted_codes = codes[order, m]
            starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
            if len(order):
                cross[m * num_k + sorted_codes[starts]] = np.add.reduceat(
                    features[order], starts, axis=0
                )
        return gram, cross

    # ---------------------------------------------------------- evaluation
    def reconstruct(self, codes: np.ndarray) -> np.ndarray:
        """(N, D) reconstructions sum_m C_m[k_m] of (N, M) codes."""
        codebooks = self._require_codebooks()
        codes = self._check_codes(codes).astype(np.intp)
        reconstruction = np.zeros((codes.shape[0], codebooks.shape[2]), dtype=codebooks.dtype)
        for m in range(self.num_codebooks):
            reconstruction += codebooks[m, codes[:, m]]
        return reconstruction

    def distortion(self, features: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(N,) float64 ||E (x - x_hat)||^2 (or ||x - x_hat||^2 without E)."""
        features = np.asarray(self._check_features(features), dtype=np.float64)
        codes = self._check_codes(codes, features.shape[0])
        error = features - self.reconstruct(codes).astype(np.float64)
        if self.tag_embeddings is not None:
            error = error @ self.tag_embeddings.T
        return np.einsum("nt,nt->n", error, error)

    def describe_fit(self, features: np.ndarray, codes: np.ndarray) -> str:
        """The mean tag-weighted distortion of `codes` for `features`, for the log."""
        distortion = float(np.mean(self.distortion(features, codes)))
        return f"mean tag-weighted distortion {distortion:.4f}"

    # ------------------------------------------------------- protocol forms
    def additive_codebooks(self) -> np.ndarray:
        """The (M, K, D) codebooks: an additive quantizer's own are additive already."""
        return self.codebooks

    def set_additive_codebooks(self, codebooks: np.ndarray) -> None:
        """Takes (M, K, D) codebooks as they are (in this quantizer's dtype)."""
        self.codebooks = np.asarray(codebooks, self.dtype)

    def graph_encoder(self, unit_features: bool):
        """The quantizer as TensorFlow ops (graph_encoder.py); imports TensorFlow."""
        from wsdhash.quantization.graph_encoder import QuantizationEncoder

        return QuantizationEncoder(self, unit_features=unit_features)

    # ---------------------------------------------------------------- state
    def get_state(self) -> dict[str, Any]:
        """A dict of plain values and numpy arrays that `from_state` restores."""
        return {
            "kind": self.kind,
            "num_codebooks": self.num_codebooks,
            "num_codewords": self.num_codewords,
            "max_iter": self.max_iter,
            "ridge": self.ridge,
            "code_batch_size": self.code_batch_size,
            "num_rounds": self.num_rounds,
            "kmeans_iter": self.kmeans_iter,
            "seed": self.seed,
            "dtype": self.dtype.name,
            "codebooks": None if self.codebooks is None else self.codebooks.copy(),
            "tag_embeddings": None if self.tag_embeddings is None else self.tag_embeddings.copy(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AdditiveQuantizer:
        """Rebuilds a quantizer from `get_state()`."""
        check_state_kind(state, cls.kind, article="an")
        quantizer = cls(
            state["num_codebooks"],
            state["num_codewords"],
            max_iter=state["max_iter"],
            ridge=state["ridge"],
            code_batch_size=state["code_batch_size"],
            num_rounds=state["num_rounds"],
            kmeans_iter=state["kmeans_iter"],
            seed=state["seed"],
            dtype=state["dtype"],
        )
        expected = (quantizer.num_codebooks, quantizer.num_codewords)
        codebooks = state_codebooks(state, expected, quantizer.dtype, "M, K, D")
        if codebooks is not None:
            quantizer.codebooks = codebooks
        quantizer.set_tag_embeddings(state.get("tag_embeddings"))
        return quantizer
