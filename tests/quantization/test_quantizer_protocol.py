"""Every registered quantizer keeps the `Quantizer` protocol that training, the codes
file, AQD search and export rely on (wsdhash/quantization/protocol.py)."""

import numpy as np
import pytest

from wsdhash.quantization import QUANTIZERS, Quantizer, quantizer_from_state
from wsdhash.quantization.aqd import reconstruct
from wsdhash.quantization.protocol import check_state_kind, state_codebooks


def _features(seed=0, num_items=120, dimension=8):
    return np.random.default_rng(seed).standard_normal((num_items, dimension)).astype(np.float32)


def _trained(name):
    tags = np.random.default_rng(9).standard_normal((5, 8)).astype(np.float32)
    quantizer = QUANTIZERS.get(name).for_training(2, 16, seed=3, tag_embeddings=tags)
    quantizer.initialize_codebooks(_features())
    return quantizer


def test_registry_names_the_built_in_quantizers():
    assert QUANTIZERS.names() == ["additive", "product"]
    for name in QUANTIZERS:
        assert QUANTIZERS.get(name).kind == name
    with pytest.raises(KeyError, match="Unknown quantizer 'residual'; known: additive, product"):
        QUANTIZERS.get("residual")


@pytest.mark.parametrize("name", QUANTIZERS.names())
def test_quantizer_keeps_the_protocol(name):
    quantizer = _trained(name)
    assert isinstance(quantizer, Quantizer)
    assert quantizer.loss_forms and all(isinstance(form, str) for form in quantizer.loss_forms)
    features = _features(seed=1, num_items=30)
    codes = quantizer.encode(features)
    assert codes.dtype == np.uint8 and codes.shape == (30, 2)
    quantizer.update_codebooks(_features(), quantizer.encode(_features()))
    assert isinstance(quantizer.describe_fit(features, codes), str)


@pytest.mark.parametrize("name", QUANTIZERS.names())
def test_additive_codebooks_reconstruct_as_the_quantizer(name):
    quantizer = _trained(name)
    codes = quantizer.encode(_features(seed=2, num_items=25))
    books = quantizer.additive_codebooks()
    assert books.shape == (2, 16, 8)
    np.testing.assert_allclose(
        reconstruct(codes, books, layout="additive"), quantizer.reconstruct(codes), atol=1e-6
    )
    other = QUANTIZERS.get(name)(2, 16)
    other.set_additive_codebooks(books)
    np.testing.assert_array_equal(other.additive_codebooks(), books)


@pytest.mark.parametrize("name", QUANTIZERS.names())
def test_state_round_trip_through_the_registry(name):
    quantizer = _trained(name)
    restored = quantizer_from_state(quantizer.get_state())
    assert type(restored) is type(quantizer)
    features = _features(seed=4, num_items=40)
    np.testing.assert_array_equal(restored.encode(features), quantizer.encode(features))
    empty = quantizer_from_state(QUANTIZERS.get(name)(2, 16).get_state())
    assert empty.codebooks is None


def test_state_helpers_name_the_problem():
    with pytest.raises(ValueError, match="Not an additive quantizer state: kind='product'"):
        check_state_kind({"kind": "product"}, "additive", article="an")
    with pytest.raises(ValueError, match=r"expected \(M, K, S\) with \(M, K\) = \(2, 16\)"):
        state_codebooks({"codebooks": np.zeros((3, 16, 4))}, (2, 16), np.float32, "M, K, S")
    assert state_codebooks({}, (2, 16), np.float32, "M, K, D") is None
    with pytest.raises(KeyError, match="Unknown quantizer"):
        quantizer_from_state({"kind": "lsq"})
