"""Tests of the WSDHQ additive quantizer: ICM encoding and the ridge codebook update."""

import itertools

import numpy as np
import pytest
from scipy import optimize

from wsdhash.quantization.additive import AdditiveQuantizer, metric_factor


def _data(seed=0, num_items=300, dimension=12, num_tags=5):
    rng = np.random.default_rng(seed)
    features = np.tanh(rng.standard_normal((num_items, dimension)))
    tags = rng.standard_normal((num_tags, dimension))
    return features, tags


def _fitted(features, tags, **kwargs):
    options = {"num_codebooks": 3, "num_codewords": 16, "dtype": np.float64, "seed": 1}
    options.update(kwargs)
    return AdditiveQuantizer(**options).fit(features, tags)


@pytest.mark.parametrize("use_tags", [True, False])
def test_encoding_a_codeword_costs_nothing(use_tags):
    features, tags = _data()
    quantizer = _fitted(features, tags if use_tags else None, num_codebooks=1)
    codewords = quantizer.codebooks[0]  # (K, D); single codebook, so x = c_k exactly.
    codes = quantizer.encode(codewords)
    np.testing.assert_array_equal(codes[:, 0], np.arange(len(codewords)))
    np.testing.assert_allclose(quantizer.distortion(codewords, codes), 0.0, atol=1e-20)


def test_encoding_a_sum_of_codewords_costs_nothing():
    features, tags = _data()
    quantizer = _fitted(features, tags)
    target = np.array([[3, 7, 11]])
    item = quantizer.reconstruct(target)
    codes = quantizer.encode(item, init_codes=target)
    np.testing.assert_array_equal(codes, target)
    assert quantizer.distortion(item, codes)[0] < 1e-20


@pytest.mark.parametrize("use_tags", [True, False])
def test_icm_never_increases_distortion(use_tags):
    features, tags = _data(seed=3)
    quantizer = _fitted(features, tags if use_tags else None, max_iter=4, code_batch_size=64)
    codes, history = quantizer.encode(features, return_history=True)
    num_codebooks = quantizer.num_codebooks
    # After the first (greedy) sweep every step is an exact coordinate minimisation.
    for before, after in zip(history[num_codebooks - 1 :], history[num_codebooks:]):
        assert np.all(after <= before * (1 + 1e-12) + 1e-12)
    np.testing.assert_allclose(history[-1], quantizer.distortion(features, codes), rtol=1e-10)
    # Per-sweep totals, for a readable failure.
    sweeps = [history[s].sum() for s in range(num_codebooks - 1, len(history), num_codebooks)]
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(sweeps))


def test_icm_from_init_codes_is_monotone_from_the_start():
    features, tags = _data(seed=4)
    quantizer = _fitted(features, tags)
    rng = np.random.default_rng(0)
    start = rng.integers(0, 16, (len(features), 3)).astype(np.uint8)
    _, history = quantizer.encode(features, init_codes=start, return_history=True)
    previous = quantizer.distortion(features, start)
    for values in history:
        assert np.all(values <= previous * (1 + 1e-12) + 1e-12)
        previous = values


def test_icm_step_matches_slow_loop():
    """One coordinate step equals a brute-force argmin of ||E (x - sum C b)||^2."""
    features, tags = _data(seed=5, num_items=20)
    quantizer = _fitted(features, tags, max_iter=1, num_codebooks=1)
    codes = quantizer.encode(features)
    for item, code in zip(features, codes):
        costs = [np.sum((tags @ (item - c)) ** 2) for c in quantizer.codebooks[0]]
        assert code[0] == int(np.argmin(costs))


def test_metric_factor_matches_tag_metric():
    rng = np.random.default_rng(0)
    for num_tags in (4, 40):  # T < D and T > D (R factor).
        tags = rng.standard_normal((num_tags, 10))
        factor = metric_factor(tags)
        vector = rng.standard_normal(10)
        assert factor.shape[0] == min(num_tags, 10)
        np.testing.assert_allclose(
            np.linalg.norm(factor @ vector), np.linalg.norm(tags @ vector), rtol=1e-10
        )


def _one_hot(codes, num_codewords):
    num_items, num_codebooks = codes.shape
    matrix = np.zeros((num_items, num_codebooks * num_codewords))
    for m in range(num_codebooks):
        matrix[np.arange(num_items), m * num_codewords + codes[:, m]] = 1.0
    return matrix


def test_codebook_update_is_the_ridge_optimum():
    rng = np.random.default_rng(7)
    features, tags = _data(seed=7, num_items=60, dimension=4, num_tags=3)
    quantizer = AdditiveQuantizer(2, 4, ridge=1e-3, dtype=np.float64, seed=0)
    quantizer.initialize_codebooks(features)
    codes = rng.integers(0, 4, (60, 2))
    codes[:4, 0] = codes[:4, 1] = np.arange(4)  # Every codeword used: no row is kept.
    codebooks = quantizer.update_codebooks(features, codes).reshape(8, 4)
    one_hot = _one_hot(codes, 4)
    # Flattened problem: [B; sqrt(lambda) I] C = [X; 0] by least squares.
    stacked = np.vstack([one_hot, np.sqrt(1e-3) * np.eye(8)])
    target = np.vstack([features, np.zeros((8, 4))])
    expected = np.linalg.lstsq(stacked, target, rcond=None)[0]
    np.testing.assert_allclose(codebooks, expected, atol=1e-9)

    def objective(flat):
        c = flat.reshape(8, 4)
        return np.sum((features - one_hot @ c) ** 2) + 1e-3 * np.sum(c**2)

    numeric = optimize.minimize(objective, np.zeros(32), method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(codebooks.ravel(), numeric.x, atol=1e-5)
    assert objective(codebooks.ravel()) <= numeric.fun + 1e-9
    gradient = 2 * (one_hot.T @ (one_hot @ codebooks - features) + 1e-3 * codebooks)
    np.testing.assert_allclose(gradient, 0.0, atol=1e-9)
    # The same solution is stationary for the tag-weighted objective.
    weighted_gradient = gradient @ tags.T @ tags
    np.testing.assert_allclose(weighted_gradient, 0.0, atol=1e-9)


def test_unused_codewords_keep_previous_values():
    features, tags = _data(seed=8, num_items=40, dimension=4)
    quantizer = AdditiveQuantizer(2, 4, dtype=np.float64).fit(features, tags)
    previous = quantizer.codebooks.copy()
    codes = np.zeros((40, 2), dtype=np.uint8)  # Only codeword 0 of each codebook used.
    quantizer.update_codebooks(features, codes)
    np.testing.assert_array_equal(quantizer.codebooks[:, 1:], previous[:, 1:])
    assert not np.allclose(quantizer.codebooks[:, 0], previous[:, 0])


def test_normal_equations_match_one_hot():
    rng = np.random.default_rng(9)
    features = rng.standard_normal((50, 6))
    codes = rng.integers(0, 5, (50, 3))
    quantizer = AdditiveQuantizer(3, 5)
    gram, cross = quantizer.normal_equations(features, codes)
    one_hot = _one_hot(codes, 5)
    np.testing.assert_array_equal(gram, one_hot.T @ one_hot)
    np.testing.assert_allclose(cross, one_hot.T @ features, atol=1e-12)


def test_initialisation_is_block_diagonal():
    features, _ = _data(num_items=100, dimension=10)
    quantizer = AdditiveQuantizer(3, 8, seed=0)
    codebooks = quantizer.initialize_codebooks(features)
    # floor(10 / 3) = 3 columns each; the last column stays zero, as in the original.
    for m in range(3):
        outside = np.ones(10, dtype=bool)
        outside[3 * m : 3 * m + 3] = False
        assert np.all(codebooks[m][:, outside] == 0)
        assert np.any(codebooks[m][:, 3 * m : 3 * m + 3] != 0)


def test_seeded_determinism_and_batch_independence_of_encode_calls():
    features, tags = _data(seed=10)
    first = _fitted(features, tags, seed=5)
    second = _fitted(features, tags, seed=5)
    np.testing.assert_array_equal(first.codebooks, second.codebooks)
    np.testing.assert_array_equal(first.encode(features), second.encode(features))
    np.testing.assert_array_equal(first.encode(features), first.encode(features))
    other = _fitted(features, tags, seed=6)
    assert not np.array_equal(first.codebooks, other.codebooks)


def test_state_round_trip():
    features, tags = _data(seed=11)
    quantizer = _fitted(features, tags)
    restored = AdditiveQuantizer.from_state(quantizer.get_state())
    np.testing.assert_array_equal(restored.codebooks, quantizer.codebooks)
    np.testing.assert_array_equal(restored.encode(features), quantizer.encode(features))
    np.testing.assert_array_equal(restored.tag_embeddings, tags)
    with pytest.raises(ValueError, match="additive"):
        AdditiveQuantizer.from_state({"kind": "product"})


def test_clear_errors_for_bad_shapes():
    features, tags = _data()
    quantizer = _fitted(features, tags)
    with pytest.raises(ValueError, match="D=12"):
        quantizer.encode(features[:, :5])
    with pytest.raises(ValueError, match=r"\(N, M=3\)"):
        quantizer.update_codebooks(features, np.zeros((len(features), 2), np.uint8))
    with pytest.raises(ValueError, match="rows"):
        quantizer.update_codebooks(features, np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="0..15"):
        quantizer.reconstruct(np.full((1, 3), 16))
    with pytest.raises(ValueError, match="tag_embeddings"):
        AdditiveQuantizer(3, 16).fit(features, tags[:, :5])
    with pytest.raises(ValueError, match="fit"):
        AdditiveQuantizer(3, 16).encode(features)
    with pytest.raises(ValueError, match="at least"):
        AdditiveQuantizer(3, 16).fit(features[:10])
    with pytest.raises(ValueError, match="uint8"):
        AdditiveQuantizer(3, 300)
