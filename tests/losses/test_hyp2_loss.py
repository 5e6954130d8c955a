"""Tests for wsdhash.losses.hyp2: zeta table, hand-worked angles, slow reference."""

import math

import numpy as np
import pytest
import tensorflow as tf

from wsdhash.losses import hyp2

# docs/methods.md, "HyP2: the threshold zeta": zeta for K x n = ceil(log2 C), n = 5
# (C = 20, 21) and 6 (C = 38).
PAPER_ZETA = {
    12: (0.3333, 0.3333),
    16: (0.0, 0.25),
    24: (0.0, 0.1667),
    32: (0.0, 0.0),
    36: (0.0556, 0.1111),
    48: (0.0, 0.0),
    64: (0.0, 0.0),
}
ROWS = {
    8: [-1, -0.25, 0, 0, 0.5, 0.5, 0.5, 0.75],
    16: [-1, -0.25, 0, 0, 0, 0.25, 0.25, 0.375],
    64: [-1, -0.3125, -0.125, -0.03125, 0, 0, 0, 0.09375],
}


@pytest.mark.parametrize("bits", sorted(PAPER_ZETA))
def test_zeta_matches_the_paper_settings(bits):
    for num_classes in (20, 21):
        assert hyp2.hyp2_zeta(bits, num_classes) == pytest.approx(PAPER_ZETA[bits][0], abs=1e-4)
    assert hyp2.hyp2_zeta(bits, 38) == pytest.approx(PAPER_ZETA[bits][1], abs=1e-4)


@pytest.mark.parametrize("bits", sorted(ROWS))
def test_zeta_rows(bits):
    for n, expected in enumerate(ROWS[bits], start=1):
        assert hyp2.hyp2_zeta(bits, 2**n) == pytest.approx(expected, abs=1e-9)
        # Any C with the same ceil(log2 C) reads the same entry.
        assert hyp2.hyp2_zeta(bits, 2 ** (n - 1) + 1) == hyp2.hyp2_zeta(bits, 2**n)


def test_zeta_edge_cases_and_errors():
    assert hyp2.log2_classes(1) == 1 and hyp2.log2_classes(2) == 1 and hyp2.log2_classes(3) == 2
    assert hyp2.hyp2_zeta(48, 1) == -1.0
    with pytest.raises(ValueError, match="Pass zeta= explicitly"):
        hyp2.hyp2_zeta(300, 21)
    with pytest.raises(ValueError, match=r"ceil\(log2 C\)=7"):
        hyp2.hyp2_zeta(4, 100)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        hyp2.hyp2_zeta(16, 0)
    assert hyp2.HyP2Loss(bits=300, num_classes=21, zeta=0.1).zeta == 0.1
    with pytest.raises(ValueError, match="No HyP2 zeta"):
        hyp2.HyP2Loss(bits=300, num_classes=21)


def test_proxy_term_by_hand_at_0_90_180_degrees():
    proxies = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    codes = tf.constant([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    labels = tf.constant([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # cos = [[1, 0], [0, 1], [-1, 0]]; |P| = |N| = 3; zeta = 0.2.
    # x1: (1 - 0) / 3 + relu(1 - 0.2) / 3; x2: (1 - 0) / 3; per example times R = 3.
    values = hyp2.hyp2_proxy_loss(codes, labels, proxies, 0.2).numpy()
    np.testing.assert_allclose(values, [0.0, 1.8, 1.0], rtol=1e-6, atol=1e-7)
    assert values.mean() == pytest.approx(2.8 / 3)


def test_pair_term_by_hand():
    # a and b share no label (pair in D both ways); c shares a label with both.
    labels = tf.constant([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.0]])
    codes = tf.constant([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    values = hyp2.hyp2_pair_loss(codes, labels, 0.2).numpy()
    # |D| = 2, each hinge = relu(1 - 0.2) = 0.8; per example R * 0.8 / 2.
    np.testing.assert_allclose(values, [1.2, 1.2, 0.0], rtol=1e-6)
    layer = hyp2.HyP2Loss(bits=2, num_classes=4, beta=0.5, zeta=0.2)
    out = layer(codes, labels)
    np.testing.assert_allclose(out["pair"], 0.5 * values, rtol=1e-6)
    np.testing.assert_allclose(out["loss"], out["proxy"] + out["pair"], rtol=1e-6)


def slow_hyp2_published(codes, labels, proxies, zeta, beta):
    """The original's batch-level scalar, with loops over entries and pairs."""
    x = np.asarray(codes, np.float64)
    p = np.asarray(proxies, np.float64)
    y = np.asarray(labels) > 0

    def cos(a, b):
        return float(a @ b) / (max(np.linalg.norm(a), 1e-12) * max(np.linalg.norm(b), 1e-12))

    pos = neg = 0.0
    num_pos = num_neg = 0
    for i in range(len(x)):
        for c in range(len(p)):
            if y[i, c]:
                pos += 1 - cos(x[i], p[c])
                num_pos += 1
            else:
                neg += max(0.0, cos(x[i], p[c]) - zeta)
                num_neg += 1
    total = (pos / num_pos if num_pos else 0.0) + (neg / num_neg if num_neg else 0.0)
    multi = [i for i in range(len(x)) if y[i].sum() > 1]
    pair, count = 0.0, 0
    for i in multi:
        for j in multi:
            if not np.any(y[i] & y[j]):
                pair += beta * max(0.0, cos(x[i], x[j]) - zeta)
                count += 1
    return total + (pair / count if count else 0.0)


def _random_inputs(seed, batch=10, classes=6, bits=12):
    rng = np.random.default_rng(seed)
    codes = rng.normal(size=(batch, bits)).astype(np.float32)
    labels = (rng.random((batch, classes)) < 0.3).astype(np.float32)
    labels[0] = 0  # no positive
    labels[1] = 0
    labels[1, :2] = 1  # multi-label
    labels[2] = 0
    labels[2, 2:4] = 1  # multi-label, irrelevant to row 1
    proxies = rng.normal(size=(classes, bits)).astype(np.float32)
    return codes, labels, proxies


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_matches_published_batch_loss(seed):
    codes, labels, proxies = _random_inputs(seed)
    zeta = 0.1 * seed
    values = hyp2.hyp2_loss(codes, labels, proxies, zeta, beta=0.5).numpy()
    assert values.shape == (10,)
    expected = slow_hyp2_published(codes, labels, proxies, zeta, 0.5)
    assert values.mean() == pytest.approx(expected, rel=1e-5)


def test_edge_cases_no_multilabel_no_positives_batch_of_one():
    rng = np.random.default_rng(5)
    codes = rng.normal(size=(6, 8)).astype(np.float32)
    proxies = rng.normal(size=(4, 8)).astype(np.float32)
    single = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1]]
    np.testing.assert_array_equal(hyp2.hyp2_pair_loss(codes, single, 0.0).numpy(), np.zeros(6))
    empty = np.zeros((6, 4), np.float32)  # no positives at all: |P| = 0 -> 0, not NaN
    values = hyp2.hyp2_loss(codes, empty, proxies, 0.0).numpy()
    assert np.all(np.isfinite(values))
    assert values.mean() == pytest.approx(slow_hyp2_published(codes, empty, proxies, 0.0, 0.5))
    neg_only = np.mean([[max(0.0, c) for c in row] for row in _cos(codes, proxies)])
    assert values.mean() == pytest.approx(neg_only, rel=1e-5)
    one = hyp2.hyp2_loss(codes[:1], single[:1], proxies, 0.0).numpy()
    assert one.shape == (1,)
    assert one[0] == pytest.approx(
        slow_hyp2_published(codes[:1], single[:1], proxies, 0.0, 0.5), rel=1e-5
    )


def _cos(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def test_permutation_and_column_invariances():
    codes, labels, proxies = _random_inputs(3)
    base = hyp2.hyp2_loss(codes, labels, proxies, 0.1).numpy()
    order = np.random.default_rng(0).permutation(len(codes))
    np.testing.assert_allclose(
        hyp2.hyp2_loss(codes[order], labels[order], proxies, 0.1).numpy(), base[order], rtol=1e-5
    )
    columns = np.random.default_rng(1).permutation(labels.shape[1])
    np.testing.assert_allclose(
        hyp2.hyp2_loss(codes, labels[:, columns], proxies[columns], 0.1).numpy(), base, rtol=1e-5
    )
    flip = np.ones(codes.shape[1], np.float32)
    flip[3] = -1
    np.testing.assert_allclose(
        hyp2.hyp2_loss(codes * flip, labels, proxies * flip, 0.1).numpy(), base, rtol=1e-5
    )


def test_gradients_finite_and_nonzero_for_codes_and_proxies():
    codes, labels, _ = _random_inputs(4)
    layer = hyp2.HyP2Loss(bits=12, num_classes=6, seed=0, zeta=-0.5)
    codes = tf.Variable(codes)
    with tf.GradientTape() as tape:
        out = layer(codes, labels)
        value = tf.reduce_mean(out["loss"])
    grad_codes, grad_proxies = tape.gradient(value, [codes, layer.proxies])
    for grad in (grad_codes.numpy(), grad_proxies.numpy()):
        assert np.all(np.isfinite(grad))
        assert np.all(np.abs(grad).sum(axis=1) > 0)
    assert float(tf.reduce_sum(out["pair"])) > 0


def test_proxy_initialisation_is_seeded_normal_with_variance_2_over_c():
    layer = hyp2.HyP2Loss(bits=256, num_classes=50, seed=3)
    proxies = layer.proxies.numpy()
    assert layer.proxies.trainable and proxies.shape == (50, 256)
    assert proxies.std() == pytest.approx(math.sqrt(2 / 50), rel=0.03)
    # Not truncated: some draws beyond 2 standard deviations exist.
    assert np.abs(proxies).max() > 2.5 * math.sqrt(2 / 50)
    np.testing.assert_array_equal(
        proxies, hyp2.HyP2Loss(bits=256, num_classes=50, seed=3).proxies.numpy()
    )
    assert not np.array_equal(
        proxies, hyp2.HyP2Loss(bits=256, num_classes=50, seed=4).proxies.numpy()
    )


def test_packaged_table_is_read_without_shared_folder():
    table = hyp2._zeta_table()
    assert len(table) == 256 * 257 // 2
    assert table[(48, 5)] == 0.0
