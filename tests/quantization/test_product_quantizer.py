"""Tests of hyperspherical product quantization and the seeded k-means."""

import itertools

import numpy as np
import pytest

from wsdhash.quantization import kmeans as kmeans_lib
from wsdhash.quantization.aqd import reconstruct
from wsdhash.quantization.product import ProductQuantizer, split_subvectors


def _features(seed=0, num_items=200, dimension=8):
    return np.random.default_rng(seed).standard_normal((num_items, dimension))


def test_codewords_are_unit_and_encode_to_themselves():
    quantizer = ProductQuantizer(2, 16, seed=0).fit(_features())
    np.testing.assert_allclose(np.linalg.norm(quantizer.codebooks, axis=2), 1.0, rtol=1e-6)
    codes = np.stack([np.arange(16), np.arange(16)[::-1]], axis=1)
    items = quantizer.reconstruct(codes)
    np.testing.assert_array_equal(quantizer.encode(items), codes)
    np.testing.assert_allclose(quantizer.reconstruct(quantizer.encode(items)), items)


def test_encoding_equals_brute_force_per_subspace():
    features = _features(seed=1, num_items=150, dimension=12)
    quantizer = ProductQuantizer(3, 32, seed=2).fit(features)
    codes = quantizer.encode(features)
    sub = split_subvectors(features, 3)
    for m in range(3):
        for n in range(len(features)):
            unit = sub[n, m] / np.linalg.norm(sub[n, m])
            cosines = [unit @ c / np.linalg.norm(c) for c in quantizer.codebooks[m].astype(float)]
            assert np.isclose(cosines[codes[n, m]], max(cosines), rtol=0, atol=1e-12)


def test_encoding_equals_joint_brute_force_m2_k16():
    """All 16^2 joint codes, scored by the summed sub-space cosines."""
    features = _features(seed=3, num_items=60, dimension=6)
    quantizer = ProductQuantizer(2, 16, seed=0).fit(features)
    codes = quantizer.encode(features)
    sub = kmeans_lib.l2_normalize(split_subvectors(features, 2))
    book = quantizer.codebooks.astype(np.float64)
    for n in range(len(features)):

        def joint_cosine(pair, n=n):
            return sub[n, 0] @ book[0, pair[0]] + sub[n, 1] @ book[1, pair[1]]

        best = max(itertools.product(range(16), range(16)), key=joint_cosine)
        assert np.isclose(joint_cosine(tuple(codes[n])), joint_cosine(best), rtol=0, atol=1e-12)


def test_full_codebooks_give_the_same_reconstruction():
    quantizer = ProductQuantizer(4, 16, seed=0).fit(_features())
    codes = quantizer.encode(_features(seed=5, num_items=20))
    np.testing.assert_allclose(
        reconstruct(codes, quantizer.full_codebooks(), layout="additive"),
        quantizer.reconstruct(codes),
        atol=1e-7,
    )


def test_seeded_determinism_and_state_round_trip():
    features = _features(seed=6)
    first = ProductQuantizer(2, 16, seed=4).fit(features)
    second = ProductQuantizer(2, 16, seed=4).fit(features)
    np.testing.assert_array_equal(first.codebooks, second.codebooks)
    assert not np.array_equal(
        first.codebooks, ProductQuantizer(2, 16, seed=5).fit(features).codebooks
    )
    restored = ProductQuantizer.from_state(first.get_state())
    np.testing.assert_array_equal(restored.encode(features), first.encode(features))


def test_clear_errors():
    with pytest.raises(ValueError, match="divisible"):
        ProductQuantizer(3, 16).fit(_features(dimension=8))
    quantizer = ProductQuantizer(2, 16).fit(_features())
    with pytest.raises(ValueError, match="D=6"):
        quantizer.encode(_features(dimension=6))
    with pytest.raises(ValueError, match="fit"):
        ProductQuantizer(2, 16).encode(_features())
    with pytest.raises(ValueError, match="num_clusters"):
        kmeans_lib.kmeans(_features(num_items=5), 16)


def test_kmeans_recovers_separated_clusters_and_is_seeded():
    rng = np.random.default_rng(0)
    centres = np.eye(5) * 10
    data = np.repeat(centres, 30, axis=0) + 0.1 * rng.standard_normal((150, 5))
    found, assignments = kmeans_lib.kmeans(data, 5, seed=3)
    # Every true cluster maps to exactly one found centre.
    for cluster in range(5):
        assert len(set(assignments[cluster * 30 : (cluster + 1) * 30])) == 1
    assert len(set(assignments)) == 5
    again, _ = kmeans_lib.kmeans(data, 5, seed=3)
    np.testing.assert_array_equal(found, again)


def test_update_step_never_lowers_the_summed_cosine_and_is_optimal_per_codeword():
    features = _features(seed=5, num_items=300, dimension=8)
    quantizer = ProductQuantizer(2, 16, seed=0, kmeans_iter=1).fit(features)
    codes = quantizer.encode(features)
    before = quantizer.summed_cosine(features, codes)
    old = quantizer.codebooks.copy()
    quantizer.update_codebooks(features, codes)
    after = quantizer.summed_cosine(features, codes)
    assert after >= before - 1e-9
    np.testing.assert_allclose(np.linalg.norm(quantizer.codebooks, axis=2), 1.0, rtol=1e-6)
    # For fixed assignments, the best unit codeword is the normalised sum of its members:
    # no random unit vector does better for any codeword.
    sub = split_subvectors(features, 2)
    sub = sub / np.linalg.norm(sub, axis=2, keepdims=True)
    rng = np.random.default_rng(0)
    for m in range(2):
        for k in np.unique(codes[:, m])[:4]:
            members = sub[codes[:, m] == k, m]
            best = members.sum(0) @ quantizer.codebooks[m, k]
            for _ in range(50):
                other = rng.standard_normal(4)
                assert members.sum(0) @ (other / np.linalg.norm(other)) <= best + 1e-9
    # Codewords nobody uses keep their value.
    unused = ProductQuantizer(1, 4, seed=0)
    unused.codebooks = np.eye(4, dtype=np.float32)[None]
    unused.update_codebooks(np.array([[1.0, 0.2, 0, 0]]), np.array([[0]]))
    np.testing.assert_array_equal(unused.codebooks[0, 1:], np.eye(4)[1:])
    assert not np.allclose(old, quantizer.codebooks)


def test_full_codebooks_round_trip():
    quantizer = ProductQuantizer(3, 8, seed=0).fit(_features(seed=2, num_items=60, dimension=9))
    other = ProductQuantizer(3, 8)
    other.set_full_codebooks(quantizer.full_codebooks())
    np.testing.assert_array_equal(other.codebooks, quantizer.codebooks)
    with pytest.raises(ValueError, match="full codebooks"):
        other.set_full_codebooks(np.zeros((2, 8, 9)))
