"""The in-graph encoder gives the quantizers' own codes."""

import numpy as np
import pytest
import tensorflow as tf

from wsdhash.quantization.additive import AdditiveQuantizer
from wsdhash.quantization.graph_encoder import QuantizationEncoder
from wsdhash.quantization.product import ProductQuantizer


def _data(seed=0, items=400, dim=12, tags=20):
    rng = np.random.default_rng(seed)
    return np.tanh(rng.normal(size=(items, dim))), rng.normal(size=(tags, dim))


@pytest.mark.parametrize("tags", [True, False])
@pytest.mark.parametrize("unit", [False, True])
def test_additive_graph_codes_equal_icm_in_float64(tags, unit):
    features, embeddings = _data()
    quantizer = AdditiveQuantizer(3, 32, seed=4, dtype=np.float64, code_batch_size=500)
    quantizer.set_tag_embeddings(embeddings if tags else None)
    quantizer.fit(features)
    queries = features[:150] * 0.9 + 0.05
    expected_input = queries
    if unit:
        expected_input = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    expected = quantizer.encode(expected_input)
    encoder = QuantizationEncoder(quantizer, unit_features=unit)
    got = tf.function(encoder)(tf.constant(queries, tf.float32 if not unit else tf.float64))
    assert got.dtype == tf.uint8 and got.shape == (150, 3)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_additive_graph_codes_in_float32_reach_the_same_distortion():
    features, embeddings = _data(seed=1)
    quantizer = AdditiveQuantizer(4, 64, seed=0)  # float32, as in training
    quantizer.set_tag_embeddings(embeddings)
    quantizer.fit(features)
    expected = quantizer.encode(features[:200])
    got = QuantizationEncoder(quantizer, unit_features=False)(features[:200].astype(np.float32))
    got = got.numpy()
    assert np.mean(got == expected) > 0.99  # float rounding may flip a near tie
    np.testing.assert_allclose(
        quantizer.distortion(features[:200], got).mean(),
        quantizer.distortion(features[:200], expected).mean(),
        rtol=1e-4,
    )


def test_product_graph_codes_equal_encode_and_zero_subvectors_take_codeword_0():
    features, _ = _data(seed=2)
    quantizer = ProductQuantizer(3, 16, seed=0).fit(features)
    features[0, :4] = 0.0  # an all-zero sub-vector
    expected = quantizer.encode(features)
    got = QuantizationEncoder(quantizer, unit_features=False)(features.astype(np.float32))
    np.testing.assert_array_equal(got.numpy(), expected)
    assert got.numpy()[0, 0] == 0


def test_needs_codebooks():
    with pytest.raises(ValueError, match="no codebooks"):
        QuantizationEncoder(ProductQuantizer(2, 4), unit_features=False)
