"""Tests for wsdhash.losses.orthohash_targets: B/N/O (MaxHD) OrthoHash codebooks."""

import numpy as np
import pytest

from wsdhash.losses import orthohash_targets as codebooks


@pytest.mark.parametrize("method", ["B", "N"])
def test_random_codebooks_are_plus_minus_one_seeded(method):
    first = codebooks.generate_codebook(37, 48, method, seed=3)
    assert first.shape == (37, 48) and first.dtype == np.float32
    assert set(np.unique(first)) == {-1.0, 1.0}
    np.testing.assert_array_equal(first, codebooks.generate_codebook(37, 48, method, seed=3))
    assert not np.array_equal(first, codebooks.generate_codebook(37, 48, method, seed=4))
    # Bits are fair coins: the mean over 37 * 48 bits is near 0.
    assert abs(first.mean()) < 0.1


def test_gaussian_sign_sends_exact_zero_to_plus_one():
    class ZeroRng:
        def standard_normal(self, shape):
            return np.zeros(shape)

    np.testing.assert_array_equal(
        codebooks.gaussian_sign_codebook(2, 3, ZeroRng()), np.ones((2, 3))
    )


def test_maxhd_reaches_the_level_it_reports():
    codebook, level = codebooks.maxhd_codebook(10, 64, np.random.default_rng(0))
    assert set(np.unique(codebook)) == {-1.0, 1.0}
    assert len({row.tobytes() for row in codebook}) == 10
    assert level <= codebooks.MAXHD_INIT_DISTANCE
    assert codebooks.min_normalized_hamming(codebook) >= level - 1e-12
    # Random codes of 64 bits are ~0.5 apart on average; MaxHD must not do worse than
    # the 0.4 a plain random draw of 10 codes typically reaches.
    assert codebooks.min_normalized_hamming(codebook) >= 0.45


def test_maxhd_lowers_the_level_after_max_tries_and_is_seeded():
    rng = np.random.default_rng(1)
    codebook, level = codebooks.maxhd_codebook(6, 8, rng, max_tries=50)
    assert level < codebooks.MAXHD_INIT_DISTANCE
    assert codebooks.min_normalized_hamming(codebook) >= level - 1e-12
    again, again_level = codebooks.maxhd_codebook(6, 8, np.random.default_rng(1), max_tries=50)
    np.testing.assert_array_equal(codebook, again)
    assert level == again_level


def test_maxhd_raises_below_min_distance():
    # Two bits allow 4 distinct codes; 8 codes must repeat one (distance 0 < 0.2).
    with pytest.raises(RuntimeError, match="MaxHD found only"):
        codebooks.maxhd_codebook(8, 2, np.random.default_rng(0), max_tries=20)


def test_generate_codebook_o_is_deterministic_and_rejects_unknown_methods():
    np.testing.assert_array_equal(
        codebooks.generate_codebook(4, 16, "O", seed=2),
        codebooks.generate_codebook(4, 16, "O", seed=2),
    )
    with pytest.raises(ValueError, match="Unknown codebook method 'H'"):
        codebooks.generate_codebook(4, 16, "H")
    with pytest.raises(ValueError, match="num_classes >= 1"):
        codebooks.generate_codebook(0, 16, "B")


def test_min_normalized_hamming_by_hand():
    codebook = np.array([[1, 1, 1, 1], [1, 1, -1, -1], [1, -1, 1, -1]])
    assert codebooks.min_normalized_hamming(codebook) == 0.5
    codebook[2] = [1, 1, 1, -1]
    assert codebooks.min_normalized_hamming(codebook) == 0.25
