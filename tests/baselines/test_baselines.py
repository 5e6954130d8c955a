"""Tests for the classic unsupervised hashing baselines (LSH, PCAH, ITQ, PCA-RR)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from wsdhash.baselines import BASELINES, ITQ, LSH, PCAH, PCARR

ALL_BASELINES = [LSH, PCAH, ITQ, PCARR]
SEEDED_BASELINES = [LSH, ITQ, PCARR]


def anisotropic_features(
    num_samples: int = 400, feature_dim: int = 16, seed: int = 0
) -> np.ndarray:
    """Gaussian features with clearly distinct variances per axis, rotated and shifted,
    so that principal directions are well defined and not axis-aligned."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.2, feature_dim)
    rotation, _ = np.linalg.qr(rng.standard_normal((feature_dim, feature_dim)))
    offset = rng.normal(5.0, 1.0, size=feature_dim)  # far from the origin, so centering matters
    return (rng.standard_normal((num_samples, feature_dim)) * scales) @ rotation + offset


def clustered_data(
    seed: int, noise: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """10 Gaussian clusters in 64-D: a database of 100 per cluster and 10 held-out queries each."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((10, 64))
    database_labels = np.repeat(np.arange(10), 100)
    query_labels = np.repeat(np.arange(10), 10)
    database = centers[database_labels] + noise * rng.standard_normal((database_labels.size, 64))
    queries = centers[query_labels] + noise * rng.standard_normal((query_labels.size, 64))
    return database, database_labels, queries, query_labels


def re_shape(shape: tuple[int, ...]) -> str:
    """Escapes a shape's parentheses for use in `pytest.raises(match=...)`."""
    return str(shape).replace("(", r"\(").replace(")", r"\)")


def hamming_precision_at_k(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    database_codes: np.ndarray,
    database_labels: np.ndarray,
    k: int,
) -> float:
    """Slow reference precision@k by Hamming ranking; ties broken by database index."""
    precisions = []
    for code, label in zip(query_codes, query_labels):
        distances = np.sum(database_codes != code, axis=1)
        top = np.argsort(distances, kind="stable")[:k]
        precisions.append(np.mean(database_labels[top] == label))
    return float(np.mean(precisions))


# ---------------------------------------------------------------------------
# Registry and import hygiene
# ---------------------------------------------------------------------------


def test_registry_maps_names_to_classes():
    assert BASELINES.names() == ["itq", "lsh", "pcah", "pcarr"]
    assert BASELINES.get("lsh") is LSH
    assert BASELINES.get("pcah") is PCAH
    assert BASELINES.get("itq") is ITQ
    assert BASELINES.get("pcarr") is PCARR


def test_import_does_not_pull_in_tensorflow():
    code = "import sys, wsdhash.baselines; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# ---------------------------------------------------------------------------
# Shapes, dtypes and the >= 0 binarisation rule
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("baseline", ALL_BASELINES)
def test_shapes_and_dtypes(baseline):
    features = anisotropic_features()
    model = baseline(8, seed=1).fit(features)
    relaxed = model.encode_relaxed(features[:7])
    codes = model.encode(features[:7])
    assert relaxed.shape == (7, 8) and relaxed.dtype == np.float32
    assert codes.shape == (7, 8) and codes.dtype == np.int8
    assert set(np.unique(codes)) <= {-1, 1}
    np.testing.assert_array_equal(codes, np.where(relaxed >= 0, 1, -1))


@pytest.mark.parametrize("baseline", ALL_BASELINES)
def test_input_at_the_mean_gets_all_plus_one(baseline):
    features = anisotropic_features()
    model = baseline(8).fit(features)
    at_mean = model.mean_[None, :]
    np.testing.assert_array_equal(model.encode_relaxed(at_mean), np.zeros((1, 8), np.float32))
    np.testing.assert_array_equal(model.encode(at_mean), np.ones((1, 8), np.int8))


def test_lsh_bits_may_exceed_feature_dimension():
    codes = (
        LSH(64)
        .fit(anisotropic_features(feature_dim=4))
        .encode(anisotropic_features(10, feature_dim=4))
    )
    assert codes.shape == (10, 64)


# ---------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("baseline", ALL_BASELINES)
def test_same_seed_gives_same_codes(baseline):
    features = anisotropic_features()
    first = baseline(12, seed=3).fit(features).encode(features)
    second = baseline(12, seed=3).fit(features).encode(features)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("baseline", SEEDED_BASELINES)
def test_different_seeds_give_different_codes(baseline):
    features = anisotropic_features()
    first = baseline(12, seed=0).fit(features).encode(features)
    second = baseline(12, seed=1).fit(features).encode(features)
    assert not np.array_equal(first, second)


# ---------------------------------------------------------------------------
# PCAH
# ---------------------------------------------------------------------------


def test_pcah_directions_are_top_covariance_eigenvectors():
    features = anisotropic_features(feature_dim=16)
    bits = 6
    model = PCAH(bits).fit(features)
    directions = model.components_  # (D, K)

    np.testing.assert_allclose(directions.T @ directions, np.eye(bits), atol=1e-10)

    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(features, rowvar=False))
    top = eigenvectors[:, np.argsort(eigenvalues)[::-1][:bits]]
    # Same directions up to sign: |<u_i, v_i>| = 1 column by column, in order.
    np.testing.assert_allclose(np.abs(np.sum(top * directions, axis=0)), np.ones(bits), atol=1e-8)
    np.testing.assert_allclose(model.mean_, features.mean(axis=0), atol=1e-12)


def test_pcah_relaxed_codes_are_centered_projections():
    features = anisotropic_features()
    model = PCAH(4).fit(features)
    expected = (features - features.mean(axis=0)) @ model.components_
    np.testing.assert_allclose(model.encode_relaxed(features), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# ITQ
# ---------------------------------------------------------------------------


def test_itq_rotation_is_orthogonal():
    model = ITQ(12, seed=2).fit(anisotropic_features())
    np.testing.assert_allclose(model.rotation_.T @ model.rotation_, np.eye(12), atol=1e-10)
    np.testing.assert_allclose(model.rotation_ @ model.rotation_.T, np.eye(12), atol=1e-10)


def test_itq_loss_history_is_non_increasing():
    model = ITQ(12, seed=2, iterations=30).fit(anisotropic_features())
    history = model.loss_history_
    assert history.shape == (31,)
    assert np.all(np.diff(history) <= 1e-9 * history[0])
    assert history[-1] < history[0]  # the updates did something


def test_itq_final_loss_beats_identity_rotation():
    features = anisotropic_features()
    model = ITQ(12, seed=0).fit(features)

    # Loss recomputed independently from the encoder's outputs.
    relaxed = model.encode_relaxed(features).astype(np.float64)
    itq_loss = np.sum((model.encode(features) - relaxed) ** 2)
    np.testing.assert_allclose(itq_loss, model.loss_history_[-1], rtol=1e-5)

    pca_relaxed = PCAH(12).fit(features).encode_relaxed(features).astype(np.float64)
    pca_loss = np.sum((np.where(pca_relaxed >= 0, 1.0, -1.0) - pca_relaxed) ** 2)
    assert itq_loss <= pca_loss


def test_itq_with_zero_iterations_keeps_initial_rotation():
    model = ITQ(6, seed=4, iterations=0).fit(anisotropic_features())
    assert model.loss_history_.shape == (1,)
    np.testing.assert_allclose(model.rotation_.T @ model.rotation_, np.eye(6), atol=1e-10)


# ---------------------------------------------------------------------------
# PCA-RR
# ---------------------------------------------------------------------------


def _pcarr_reference(train: np.ndarray, features: np.ndarray, bits: int, seed: int):
    """PCA-RR the slow, plain way: principal directions from the SVD of the centred
    training matrix (not the covariance's eigh), each signed so that its largest entry
    is positive; the rotation as the QR of a Gaussian drawn from default_rng(seed)
    with R's diagonal made positive; codes +1 at >= 0."""
    mean = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    directions = vt[:bits].T  # (D, K), decreasing singular values
    for k in range(bits):
        column = directions[:, k]
        if column[np.argmax(np.abs(column))] < 0:
            directions[:, k] = -column
    gaussian = np.random.default_rng(seed).standard_normal((bits, bits))
    q, r = np.linalg.qr(gaussian)
    for k in range(bits):
        if r[k, k] < 0:
            q[:, k] = -q[:, k]
    relaxed = (features - mean) @ directions @ q
    return relaxed, np.where(relaxed >= 0, 1, -1).astype(np.int8), q


def test_pcarr_equals_a_numpy_reference():
    train = anisotropic_features(num_samples=60, feature_dim=6, seed=3)
    queries = anisotropic_features(num_samples=9, feature_dim=6, seed=4)
    model = PCARR(4, seed=7).fit(train)
    relaxed, codes, rotation = _pcarr_reference(train, queries, bits=4, seed=7)
    np.testing.assert_allclose(model.rotation_, rotation, atol=1e-12)
    np.testing.assert_allclose(model.encode_relaxed(queries), relaxed, rtol=1e-5, atol=1e-5)
    assert np.min(np.abs(relaxed)) > 1e-3  # no code near a tie, so the codes must agree
    np.testing.assert_array_equal(model.encode(queries), codes)


def test_pcarr_rotation_is_orthogonal_and_keeps_distances():
    features = anisotropic_features()
    model = PCARR(12, seed=2).fit(features)
    np.testing.assert_allclose(model.rotation_.T @ model.rotation_, np.eye(12), atol=1e-10)
    np.testing.assert_allclose(model.rotation_ @ model.rotation_.T, np.eye(12), atol=1e-10)
    # A rotation of the PCA projections: every row's norm is PCAH's relaxed code's norm.
    pca = PCAH(12).fit(features).encode_relaxed(features)
    np.testing.assert_allclose(
        np.linalg.norm(model.encode_relaxed(features), axis=1),
        np.linalg.norm(pca, axis=1),
        rtol=1e-5,
    )
    assert not np.allclose(np.abs(model.rotation_), np.eye(12))  # not a signed permutation


def test_pcarr_is_itq_before_its_first_update():
    features = anisotropic_features()
    for seed in (0, 5):
        pcarr = PCARR(8, seed=seed).fit(features)
        itq = ITQ(8, seed=seed, iterations=0).fit(features)
        np.testing.assert_array_equal(pcarr.rotation_, itq.rotation_)
        np.testing.assert_array_equal(pcarr.encode(features), itq.encode(features))


def test_pcarr_seed_changes_only_the_rotation():
    features = anisotropic_features()
    first, second = PCARR(8, seed=0).fit(features), PCARR(8, seed=1).fit(features)
    np.testing.assert_array_equal(first.components_, second.components_)
    np.testing.assert_array_equal(first.mean_, second.mean_)
    assert not np.allclose(first.rotation_, second.rotation_)
    again = PCARR(8, seed=1).fit(features)
    np.testing.assert_array_equal(again.rotation_, second.rotation_)


# ---------------------------------------------------------------------------
# LSH
# ---------------------------------------------------------------------------


def test_lsh_bit_disagreement_estimates_angle():
    rng = np.random.default_rng(0)
    feature_dim, bits, num_pairs = 32, 2048, 40
    first = rng.standard_normal((num_pairs, feature_dim))
    # Mix in a varying share of `first` so the angles spread over (0, pi).
    mix = np.linspace(-0.95, 0.95, num_pairs)[:, None]
    second = mix * first + np.sqrt(1 - mix**2) * rng.standard_normal((num_pairs, feature_dim))

    # center=False: the property is about angles around the origin.
    model = LSH(bits, seed=7, center=False).fit(np.vstack([first, second]))
    differing = np.mean(model.encode(first) != model.encode(second), axis=1)

    cosine = np.sum(first * second, axis=1) / (
        np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    )
    expected = np.arccos(np.clip(cosine, -1, 1)) / np.pi
    # Std of one estimate is <= sqrt(0.25 / 2048) ~ 0.011.
    assert np.max(np.abs(differing - expected)) < 0.05
    assert np.mean(np.abs(differing - expected)) < 0.015


def test_lsh_center_option():
    features = anisotropic_features()
    np.testing.assert_allclose(LSH(8).fit(features).mean_, features.mean(axis=0))
    np.testing.assert_array_equal(
        LSH(8, center=False).fit(features).mean_, np.zeros(features.shape[1])
    )


# ---------------------------------------------------------------------------
# Retrieval sanity on clustered data
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("data_seed", [0, 1])
def test_retrieval_precision_far_above_chance(data_seed):
    database, database_labels, queries, query_labels = clustered_data(data_seed)
    chance = 0.1
    precision = {}
    for name in BASELINES:
        model = BASELINES.get(name)(32, seed=0).fit(database)
        precision[name] = hamming_precision_at_k(
            model.encode(queries), query_labels, model.encode(database), database_labels, k=20
        )
    for name, value in precision.items():
        assert value > 4 * chance, f"{name}: precision@20 {value:.3f}, all: {precision}"
    assert precision["itq"] >= precision["pcah"] - 0.02, precision


# ---------------------------------------------------------------------------
# State round trips
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("baseline", ALL_BASELINES)
def test_state_round_trip_through_npz(baseline, tmp_path):
    features = anisotropic_features()
    model = baseline(10, seed=5).fit(features)
    state = model.get_state()
    for key, value in state.items():
        assert isinstance(value, (int, np.ndarray)), (key, type(value))

    path = tmp_path / "state.npz"
    np.savez(path, **state)
    with np.load(path) as loaded:
        restored = baseline.from_state(dict(loaded))

    np.testing.assert_array_equal(restored.encode(features), model.encode(features))
    np.testing.assert_array_equal(restored.encode_relaxed(features), model.encode_relaxed(features))
    assert restored.bits == model.bits and restored.seed == model.seed


def test_from_state_rejects_inconsistent_shapes():
    state = PCAH(4).fit(anisotropic_features()).get_state()
    state["bits"] = 5
    with pytest.raises(ValueError, match=r"components of shape \(16, 4\); expected \(16, 5\)"):
        PCAH.from_state(state)
    state = PCARR(4).fit(anisotropic_features()).get_state()
    state["rotation"] = np.eye(3)
    with pytest.raises(ValueError, match=r"PCA-RR: state has rotation of shape \(3, 3\)"):
        PCARR.from_state(state)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("baseline", ALL_BASELINES)
@pytest.mark.parametrize("bits", [0, -3])
def test_bits_below_one(baseline, bits):
    with pytest.raises(
        ValueError, match=rf"{baseline.name}: bits must be an integer >= 1; got {bits}"
    ):
        baseline(bits)


@pytest.mark.parametrize("baseline", ALL_BASELINES)
@pytest.mark.parametrize("bits", [2.5, True, "8"])
def test_bits_not_an_integer(baseline, bits):
    with pytest.raises(ValueError, match=r"bits must be an integer >= 1"):
        baseline(bits)


@pytest.mark.parametrize("baseline", ALL_BASELINES)
@pytest.mark.parametrize("shape", [(10,), (4, 5, 6)])
def test_features_not_two_dimensional(baseline, shape):
    with pytest.raises(
        ValueError, match=rf"2-D array of shape \(N, D\); got shape {re_shape(shape)}"
    ):
        baseline(2).fit(np.zeros(shape))


@pytest.mark.parametrize("baseline", ALL_BASELINES)
def test_features_with_nan_and_inf(baseline):
    features = anisotropic_features()
    features[3, 5] = np.nan
    features[7, 1] = np.inf
    features[9, 0] = -np.inf
    with pytest.raises(
        ValueError, match=r"1 NaN and 2 infinite values \(first at row 3, column 5\)"
    ):
        baseline(4).fit(features)


@pytest.mark.parametrize("baseline", ALL_BASELINES)
def test_non_finite_at_encode_time(baseline):
    model = baseline(4).fit(anisotropic_features())
    bad = anisotropic_features(5)
    bad[2, 2] = np.nan
    with pytest.raises(
        ValueError, match=r"1 NaN and 0 infinite values \(first at row 2, column 2\)"
    ):
        model.encode(bad)


@pytest.mark.parametrize("baseline", ALL_BASELINES)
def test_non_numeric_features(baseline):
    with pytest.raises(ValueError, match=r"features must be real numbers; got dtype"):
        baseline(2).fit(np.array([["a", "b"], ["c", "d"]]))


def test_lsh_needs_one_sample():
    with pytest.raises(ValueError, match=r"LSH: needs at least 1 samples; got 0"):
        LSH(4).fit(np.zeros((0, 3)))


@pytest.mark.parametrize("baseline", [PCAH, ITQ, PCARR])
def test_pca_baselines_need_more_samples_than_bits(baseline):
    with pytest.raises(
        ValueError,
        match=rf"{baseline.name}: needs more samples than bits .* N=8 samples for bits=8",
    ):
        baseline(8).fit(anisotropic_features(num_samples=8, feature_dim=16))
    with pytest.raises(ValueError, match=rf"{baseline.name}: needs at least 2 samples; got 1"):
        baseline(1).fit(np.ones((1, 4)))


@pytest.mark.parametrize("baseline", [PCAH, ITQ, PCARR])
def test_pca_baselines_need_bits_at_most_dimension(baseline):
    with pytest.raises(
        ValueError, match=rf"{baseline.name}: bits=20 exceeds the feature dimension D=16"
    ):
        baseline(20).fit(anisotropic_features(feature_dim=16))


@pytest.mark.parametrize("baseline", ALL_BASELINES)
def test_encode_before_fit(baseline):
    model = baseline(4)
    for method in (model.encode, model.encode_relaxed):
        with pytest.raises(RuntimeError, match=rf"{baseline.name} is not fitted; call fit"):
            method(anisotropic_features(3))
    with pytest.raises(RuntimeError, match=r"is not fitted"):
        model.get_state()


@pytest.mark.parametrize("baseline", ALL_BASELINES)
def test_encode_with_wrong_dimension(baseline):
    model = baseline(4).fit(anisotropic_features(feature_dim=16))
    with pytest.raises(ValueError, match=r"fitted on features of dimension D=16; got D=12"):
        model.encode(anisotropic_features(5, feature_dim=12))


@pytest.mark.parametrize("iterations", [-1, 2.0])
def test_itq_bad_iterations(iterations):
    with pytest.raises(
        ValueError, match=rf"ITQ: iterations must be an integer >= 0; got {iterations}"
    ):
        ITQ(4, iterations=iterations)
