"""Tests for wsdhash.eval.binary: binarize, pack/unpack, Hamming distances."""

import numpy as np
import pytest

from wsdhash.eval import binary


def test_binarize_maps_zero_to_plus_one():
    relaxed = np.array([[-0.5, 0.0, -0.0, 1e-9, -1e-9, 3.0]])
    np.testing.assert_array_equal(binary.binarize(relaxed), [[-1, 1, 1, 1, -1, 1]])
    assert binary.binarize(relaxed).dtype == np.int8
    assert binary.binarize(0.0) == 1


def test_pack_is_msb_first_and_plus_one_is_bit_one():
    # +1 -1 -1 -1 -1 -1 -1 +1 | +1 (then 7 padding bits) -> 0b10000001, 0b10000000.
    codes = np.array([[1, -1, -1, -1, -1, -1, -1, 1, 1]])
    np.testing.assert_array_equal(binary.pack_codes(codes), [[0b10000001, 0b10000000]])


@pytest.mark.parametrize("bits", [1, 7, 8, 12, 16, 48, 64, 65, 130])
def test_pack_unpack_round_trip_with_zero_padding(bits):
    rng = np.random.default_rng(bits)
    codes = binary.binarize(rng.normal(size=(33, bits)))
    packed = binary.pack_codes(codes)
    assert packed.dtype == np.uint8 and packed.shape == (33, -(-bits // 8))
    np.testing.assert_array_equal(binary.unpack_codes(packed, bits), codes)
    padding = 8 * packed.shape[1] - bits
    if padding:
        # The low `padding` bits of the last byte must be 0 on every row.
        assert not np.any(packed[:, -1] & np.uint8((1 << padding) - 1))


def test_pack_accepts_zero_one_and_bool_codes_identically():
    rng = np.random.default_rng(1)
    bits = rng.random((10, 20)) < 0.5
    expected = binary.pack_codes(np.where(bits, 1, -1))
    np.testing.assert_array_equal(binary.pack_codes(bits), expected)
    np.testing.assert_array_equal(binary.pack_codes(bits.astype(np.uint8)), expected)
    np.testing.assert_array_equal(binary.pack_codes(bits.astype(np.float32)), expected)


def test_pack_rejects_non_binary_values():
    with pytest.raises(ValueError, match="binarize"):
        binary.pack_codes(np.array([[0.3, -1.0]]))
    with pytest.raises(ValueError, match="mix -1 and 0"):
        binary.pack_codes(np.array([[1, 0, -1]]))
    with pytest.raises(ValueError, match="2-D"):
        binary.pack_codes(np.array([1, -1]))


@pytest.mark.parametrize("bits", [3, 8, 12, 64, 100, 256, 300])
def test_hamming_equals_inner_product_formula(bits):
    rng = np.random.default_rng(bits)
    queries = binary.binarize(rng.normal(size=(7, bits)))
    database = binary.binarize(rng.normal(size=(41, bits)))
    distances = binary.hamming_distances(binary.pack_codes(queries), binary.pack_codes(database))
    inner = queries.astype(np.int64) @ database.T.astype(np.int64)
    np.testing.assert_array_equal(distances, (bits - inner) // 2)
    assert distances.dtype == (np.uint8 if bits <= 255 else np.uint16)


def test_hamming_table_fallback_matches(monkeypatch):
    rng = np.random.default_rng(3)
    query = binary.pack_codes(rng.random((5, 70)) < 0.5)
    database = binary.pack_codes(rng.random((9, 70)) < 0.5)
    expected = binary.hamming_distances(query, database)
    monkeypatch.setattr(binary, "_HAS_BITWISE_COUNT", False)
    np.testing.assert_array_equal(binary.hamming_distances(query, database), expected)


def test_hamming_blocks_large_query_sets(monkeypatch):
    # Force many XOR blocks so that block boundaries are exercised.
    monkeypatch.setattr(binary, "_XOR_BLOCK_ELEMENTS", 50)
    rng = np.random.default_rng(4)
    query = binary.pack_codes(rng.random((23, 16)) < 0.5)
    database = binary.pack_codes(rng.random((19, 16)) < 0.5)
    bits_q = binary.unpack_codes(query, 16)
    bits_d = binary.unpack_codes(database, 16)
    expected = (bits_q[:, None, :] != bits_d[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(binary.hamming_distances(query, database), expected)


def test_hamming_rejects_width_mismatch():
    with pytest.raises(ValueError, match="bytes per row"):
        binary.hamming_distances(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        binary.hamming_distances(np.zeros((2, 2), np.int32), np.zeros((2, 2), np.uint8))
