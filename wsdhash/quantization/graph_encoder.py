"""Quantization code assignment as TensorFlow ops, for SavedModels that serve codes.

`QuantizationEncoder` freezes a trained quantizer into constants and maps a batch of
continuous features (B, D) to codeword indices (B, M) uint8 inside the graph, so an
exported WSDHQ model can encode database images without wsdhash:

* product quantizer: every sub-vector is normalised and takes the codeword of largest
  cosine (product.py), exactly as `ProductQuantizer.encode`.
* additive quantizer: tag-weighted ICM (additive.py) unrolled over the `max_iter`
  sweeps, in the codebook orders of `AdditiveQuantizer.icm_orders`, which `encode`
  uses for every batch, and in float64 as `encode` computes: the same features get
  the same codes as `encode` gives them, whatever the batch sizes on either side.

The features are first mapped into the quantizer's space (`hypersphere` form: unit
rows, as `methods.wsdhq_quantizer.quantizer_features`).

Shapes: B batch, M codebooks, K codewords, D dimension, P projected dimension, S = D/M.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from wsdhash.quantization.additive import AdditiveQuantizer
from wsdhash.quantization.product import ProductQuantizer


class QuantizationEncoder(tf.Module):
    """Features (B, D) -> codeword indices (B, M) uint8, as constants and ops.

    Args:
        quantizer: a fitted `AdditiveQuantizer` or `ProductQuantizer`.
        unit_features: normalise every feature row first (the `hypersphere` form).
    """

    def __init__(self, quantizer: AdditiveQuantizer | ProductQuantizer, unit_features: bool):
        super().__init__()
        if quantizer.codebooks is None:
            raise ValueError("The quantizer has no codebooks yet; train or fit it first.")
        self.unit_features = bool(unit_features)
        self.num_codebooks = quantizer.num_codebooks
        self.product = isinstance(quantizer, ProductQuantizer)
        # (M, K, D) codebooks whose codewords add up to the reconstruction, kept in the
        # SavedModel so that an AQD index can be built from the served codes alone.
        additive = quantizer.full_codebooks() if self.product else quantizer.codebooks
        self.codebooks_additive = tf.Variable(
            np.asarray(additive, np.float32), trainable=False, name="codebooks"
        )
        if self.product:
            self.dtype = tf.float64
            self.codebooks = tf.constant(quantizer.codebooks, tf.float64)  # (M, K, S)
            return
        # Features are rounded to the quantizer's dtype, then encoded in float64, as
        # `AdditiveQuantizer.encode` does.
        self.dtype = tf.as_dtype(quantizer.dtype)
        factor = quantizer.metric_factor
        self.factor = None if factor is None else tf.constant(factor.T, tf.float64)  # (D, P)
        projected = quantizer.projected_codebooks()  # (M, K, P) float64
        self.projected_codebooks = tf.constant(projected, tf.float64)
        self.codeword_sq_norms = tf.constant(
            np.einsum("mkp,mkp->mk", projected, projected), tf.float64
        )
        self.orders = [[int(m) for m in order] for order in quantizer.icm_orders()]

    def __call__(self, features: tf.Tensor) -> tf.Tensor:
        features = tf.convert_to_tensor(features)
        if self.unit_features:
            features = tf.cast(features, tf.float64)
            norms = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(features), 1, keepdims=True), 1e-12))
            features = features / norms
        features = tf.cast(features, self.dtype)
        if self.product:
            return self._product(features)
        return self._additive(features)

    def _product(self, features: tf.Tensor) -> tf.Tensor:
        batch = tf.shape(features)[0]
        sub = tf.reshape(features, [batch, self.num_codebooks, -1])  # (B, M, S)
        norms = tf.norm(sub, axis=2, keepdims=True)
        sub = tf.math.divide_no_nan(sub, norms)  # an all-zero sub-vector stays 0 -> k = 0
        scores = tf.einsum("bms,mks->bmk", sub, self.codebooks)
        return tf.cast(tf.argmax(scores, axis=2), tf.uint8)

    def _additive(self, features: tf.Tensor) -> tf.Tensor:
        features = tf.cast(features, tf.float64)
        projected = features if self.factor is None else tf.matmul(features, self.factor)
        codes: list[tf.Tensor | None] = [None] * self.num_codebooks
        reconstruction = tf.zeros_like(projected)  # (B, P): sum of assigned codewords
        for order in self.orders:  # unrolled: max_iter * M small steps
            for m in order:
                books = self.projected_codebooks[m]  # (K, P)
                residual = projected - reconstruction
                if codes[m] is not None:
                    chosen = tf.gather(books, codes[m])
                    residual += chosen
                    reconstruction -= chosen
                partial = self.codeword_sq_norms[m][None, :] - 2.0 * tf.matmul(
                    residual, books, transpose_b=True
                )  # (B, K)
                codes[m] = tf.argmin(partial, axis=1, output_type=tf.int32)
                reconstruction += tf.gather(books, codes[m])
        return tf.cast(tf.stack(codes, axis=1), tf.uint8)
