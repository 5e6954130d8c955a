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


def test_additive_graph_codes_in_float32_equal_icm():
    features, embeddings = _data(seed=1)
    quantizer = AdditiveQuantizer(4, 64, seed=0)  # float32, as in training
    quantizer.set_tag_embeddings(embeddings)
    quantizer.fit(features)
    expected = quantizer.encode(features[:200])
    got = QuantizationEncoder(quantizer, unit_features=False)(features[:200].astype(np.float32))
    got = got.numpy()
    np.testing.assert_array_equal(got, expected)  # both compute in float64
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


def _quantizer(kind, code_batch_size=500):
    """A fitted float32 quantizer of `kind`, as training makes them."""
    features, embeddings = _data(seed=5, items=300)
    if kind == "product":
        return ProductQuantizer(3, 32, seed=1).fit(features), features
    quantizer = AdditiveQuantizer(3, 32, seed=1, code_batch_size=code_batch_size)
    quantizer.fit(features, embeddings if kind == "additive-tags" else None)
    return quantizer, features


@pytest.mark.parametrize("kind", ["additive-tags", "additive", "product"])
def test_codes_are_the_same_whatever_the_batch_and_the_encoder(kind):
    """Issue 22 (6): one encoder, one order. The codes file (`encode` in batches of
    `code_batch_size`), the export and the service (the graph encoder, on requests of
    any size) give every item the same codes."""
    quantizer, features = _quantizer(kind)
    features = (features * 0.9 + 0.05).astype(np.float32)
    expected = quantizer.encode(features)
    if kind != "product":
        for batch in (1, 7, 64, 299):
            quantizer.code_batch_size = batch
            np.testing.assert_array_equal(quantizer.encode(features), expected, err_msg=batch)
    encoder = tf.function(QuantizationEncoder(quantizer, unit_features=False))
    for size in (300, 128, 5):
        got = np.concatenate(
            [encoder(tf.constant(features[s : s + size])).numpy() for s in range(0, 300, size)]
        )
        np.testing.assert_array_equal(got, expected, err_msg=size)


@pytest.mark.parametrize(
    "kind,form", [("additive", "faithful"), ("additive", "hypersphere"), ("product", "product")]
)
def test_training_quantizer_and_its_graph_encoder_give_the_same_codes(kind, form):
    """The codes file's path (TrainingQuantizer.encode) and the export's (its graph
    encoder) agree for every quantizer kind and loss form, over several batches."""
    from wsdhash.methods.wsdhq_quantizer import TrainingQuantizer

    features, embeddings = _data(seed=6, items=1200, dim=16)
    quantizer = TrainingQuantizer(16, embeddings, 1, 3, kind=kind, form=form)
    quantizer.quantizer.code_batch_size = 500  # the default: several batches here
    quantizer.update(features.astype(np.float32), _NoLoss())
    queries = (features[::-1] * 1.1).astype(np.float32)
    expected = quantizer.encode(queries)
    got = quantizer.graph_encoder()(tf.constant(queries)).numpy()
    np.testing.assert_array_equal(got, expected)


class _NoLoss:
    def set_quantizer(self, codebooks, codes):
        del codebooks, codes
