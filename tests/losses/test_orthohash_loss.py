"""Tests for wsdhash.losses.orthohash: hand-worked angles, slow reference, invariances."""

import math

import numpy as np
import pytest
import tensorflow as tf

from wsdhash.losses import orthohash, orthohash_targets

# Two orthogonal 4-bit targets: class 0 = o0, class 1 = o1.
O0 = [1.0, 1.0, 1.0, 1.0]
O1 = [1.0, 1.0, -1.0, -1.0]
CODEBOOK = np.array([O0, O1], dtype=np.float32)


def _log_sum_exp(z):
    top = max(z)
    return top + math.log(sum(math.exp(v - top) for v in z))


def slow_orthohash(
    codes,
    labels,
    codebook,
    scale,
    margin,
    margin_type,
    multiclass,
    multiclass_loss="label_smoothing",
):
    """One example, one class at a time, as the original formula reads."""
    out = []
    for v, y in zip(np.asarray(codes, np.float64), np.asarray(labels)):
        positives = [c for c in range(len(y)) if y[c] > 0]
        if multiclass:
            marked = set(positives)
        else:
            marked = set(positives[:1])  # the original's argmax = first positive
        z = []
        for c, o in enumerate(np.asarray(codebook, np.float64)):
            u = float(v @ o) / (np.linalg.norm(v) * np.linalg.norm(o))
            m = margin if c in marked else 0.0
            if margin_type == "cos":
                z.append(scale * (u - m))
            else:
                u = min(max(u, -0.99999), 0.99999)
                z.append(scale * math.cos(math.acos(u) + m))
        if multiclass and multiclass_loss == "bce":
            total = 0.0
            for c, zc in enumerate(z):
                t = 1.0 if y[c] > 0 else 0.0
                total += max(zc, 0) - zc * t + math.log(1 + math.exp(-abs(zc)))
            out.append(total / len(z))
        elif not positives:
            out.append(0.0)
        elif multiclass:
            out.append(sum(_log_sum_exp(z) - z[c] for c in positives) / len(positives))
        else:
            out.append(_log_sum_exp(z) - z[positives[0]])
    return np.array(out)


def test_cos_margin_by_hand_at_0_90_180_degrees():
    codes = tf.constant([O0, O1, [-1.0, -1.0, -1.0, -1.0]])  # 0, 90, 180 degrees from o0
    labels = tf.constant([[1.0, 0.0]] * 3)
    ce = orthohash.orthohash_cross_entropy(codes, labels, CODEBOOK, scale=2.0, margin=0.2)
    # z = s (u - m y): [1.6, 0], [-0.4, 2], [-2.4, 0]; CE = log(1 + exp(z1 - z0)).
    expected = [math.log1p(math.exp(-1.6)), math.log1p(math.exp(2.4)), math.log1p(math.exp(2.4))]
    np.testing.assert_allclose(ce.numpy(), expected, rtol=1e-6)


def test_default_scale_is_sqrt_bits():
    codes = tf.constant([O1])
    labels = tf.constant([[1.0, 0.0]])
    ce = orthohash.orthohash_cross_entropy(codes, labels, CODEBOOK, margin=0.0)
    # u = [0, 1], s = sqrt(4) = 2 -> CE = log(1 + e^2).
    np.testing.assert_allclose(ce.numpy(), [math.log1p(math.exp(2.0))], rtol=1e-6)


def test_arc_margin_by_hand():
    codes = tf.constant([O1, [-1.0, -1.0, -1.0, -1.0]])  # 90 and 180 degrees from o0
    labels = tf.constant([[1.0, 0.0], [1.0, 0.0]])
    ce = orthohash.orthohash_cross_entropy(
        codes, labels, CODEBOOK, scale=2.0, margin=0.2, margin_type="arc"
    )
    # 90 degrees: z0 = 2 cos(pi/2 + 0.2) = -2 sin 0.2, z1 = 2 cos(arccos(0.99999)).
    z1 = 2 * math.cos(math.acos(0.99999))
    first = math.log1p(math.exp(z1 + 2 * math.sin(0.2)))
    # 180 degrees: u0 clipped to -0.99999, z1 = 2 cos(pi/2) = 0.
    z0 = 2 * math.cos(math.acos(-0.99999) + 0.2)
    second = math.log1p(math.exp(0.0 - z0))
    np.testing.assert_allclose(ce.numpy(), [first, second], rtol=1e-5)


def test_label_smoothing_by_hand_margin_on_all_positives():
    codes = tf.constant([O0])
    labels = tf.constant([[1.0, 1.0]])
    ce = orthohash.orthohash_cross_entropy(
        codes, labels, CODEBOOK, scale=2.0, margin=0.2, multiclass=True
    )
    # z = 2 ([1, 0] - 0.2) = [1.6, -0.4]; CE = lse(z) - mean(z).
    expected = math.log(math.exp(1.6) + math.exp(-0.4)) - 0.6
    np.testing.assert_allclose(ce.numpy(), [expected], rtol=1e-6)


def test_quantization_variants_by_hand():
    codes = tf.constant([[2.0, 1.0, -1.0, 0.0], [0.5, -0.5, 2.0, 0.0], O1])
    cs = orthohash.quantization_error(codes, "cs").numpy()
    # sign([2, 1, -1, 0]) = [1, 1, -1, 1] (0 -> +1): cos = 4 / (sqrt(6) * 2).
    assert cs[0] == pytest.approx(1 - 4 / (2 * math.sqrt(6)), rel=1e-6)
    assert cs[2] == pytest.approx(0.0, abs=1e-7)
    l1 = orthohash.quantization_error(codes, "l1").numpy()
    l2 = orthohash.quantization_error(codes, "l2").numpy()
    assert l1[1] == pytest.approx((0.5 + 0.5 + 1 + 1) / 4)
    assert l2[1] == pytest.approx((0.25 + 0.25 + 1 + 1) / 4)


def test_quantization_gradient_treats_sign_as_constant():
    codes = tf.Variable([[0.3, -0.7, 1.2, 0.1]])
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(orthohash.quantization_error(codes, "l2"))
    grad = tape.gradient(value, codes).numpy()
    signs = np.array([1, -1, 1, 1])
    np.testing.assert_allclose(grad, 2 * (codes.numpy() - signs) / 4, rtol=1e-6)


def _random_inputs(seed, batch=9, classes=5, bits=16, multi=True):
    rng = np.random.default_rng(seed)
    codes = rng.normal(size=(batch, bits)).astype(np.float32)
    if multi:
        labels = (rng.random((batch, classes)) < 0.35).astype(np.float32)
        labels[0] = 0  # no positive
        labels[1] = 1  # every class
    else:
        labels = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, batch)]
        labels[0] = 0  # untagged
    return codes, labels, orthohash_targets.generate_codebook(classes, bits, "B", seed)


@pytest.mark.parametrize("margin_type", ["cos", "arc"])
@pytest.mark.parametrize(
    "multiclass,multiclass_loss",
    [(False, "label_smoothing"), (True, "label_smoothing"), (True, "bce")],
)
def test_agrees_with_slow_reference(margin_type, multiclass, multiclass_loss):
    codes, labels, codebook = _random_inputs(7, multi=multiclass)
    if not multiclass:
        labels[2] = [1, 0, 1, 0, 0]  # several positives: single-label uses the first
    fast = orthohash.orthohash_cross_entropy(
        codes,
        labels,
        codebook,
        scale=3.0,
        margin=0.3,
        margin_type=margin_type,
        multiclass=multiclass,
        multiclass_loss=multiclass_loss,
    )
    slow = slow_orthohash(
        codes, labels, codebook, 3.0, 0.3, margin_type, multiclass, multiclass_loss
    )
    np.testing.assert_allclose(fast.numpy(), slow, rtol=1e-5, atol=1e-6)
    if multiclass_loss != "bce":
        assert fast.numpy()[0] == 0.0


def test_layer_total_combines_weighted_terms_and_batch_of_one():
    layer = orthohash.OrthoHashLoss(
        bits=16, num_classes=5, seed=1, ce_weight=0.5, quantization_weight=2.0
    )
    codes, labels, _ = _random_inputs(2, multi=False)
    out = layer(codes, labels)
    assert set(out) == {"loss", "ce", "quantization"}
    for value in out.values():
        assert value.shape == (9,)
    np.testing.assert_allclose(out["loss"], 0.5 * out["ce"] + 2.0 * out["quantization"], rtol=1e-6)
    one = layer(codes[3:4], labels[3:4])
    np.testing.assert_allclose(one["loss"], out["loss"][3:4], rtol=1e-6)


def test_permutation_and_column_invariances():
    codes, labels, codebook = _random_inputs(3)
    kwargs = {"scale": 4.0, "margin": 0.2, "multiclass": True}
    base = orthohash.orthohash_cross_entropy(codes, labels, codebook, **kwargs).numpy()
    order = np.random.default_rng(0).permutation(len(codes))
    permuted = orthohash.orthohash_cross_entropy(codes[order], labels[order], codebook, **kwargs)
    np.testing.assert_allclose(permuted.numpy(), base[order], rtol=1e-6)
    columns = np.random.default_rng(1).permutation(labels.shape[1])
    swapped = orthohash.orthohash_cross_entropy(
        codes, labels[:, columns], codebook[columns], **kwargs
    )
    np.testing.assert_allclose(swapped.numpy(), base, rtol=1e-5)
    # Flipping one bit in every code and in every target keeps all cosines.
    flip = np.ones(codes.shape[1], np.float32)
    flip[5] = -1
    flipped = orthohash.orthohash_cross_entropy(codes * flip, labels, codebook * flip, **kwargs)
    np.testing.assert_allclose(flipped.numpy(), base, rtol=1e-5)


def test_gradients_finite_and_nonzero_except_untagged_rows():
    codes, labels, codebook = _random_inputs(4, multi=False)
    codes = tf.Variable(codes)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(orthohash.orthohash_cross_entropy(codes, labels, codebook))
    grad = tape.gradient(value, codes).numpy()
    assert np.all(np.isfinite(grad))
    assert np.all(grad[0] == 0)  # untagged row
    assert np.all(np.abs(grad[1:]).sum(axis=1) > 0)


def test_keras_loss_wrapper_matches_layer_and_round_trips():
    layer = orthohash.OrthoHashLoss(
        bits=16, num_classes=5, seed=9, margin_type="arc", multiclass=True
    )
    loss = orthohash.OrthoHashCodebookLoss(
        layer.codebook.numpy(), margin_type="arc", multiclass=True
    )
    codes, labels, _ = _random_inputs(5)
    values = loss(labels, codes)
    assert values.shape == (9,)
    np.testing.assert_allclose(values, layer(codes, labels)["loss"], rtol=1e-6)
    clone = orthohash.OrthoHashCodebookLoss.from_config(loss.get_config())
    np.testing.assert_allclose(clone(labels, codes), values, rtol=1e-6)


def test_layer_codebook_is_fixed_and_reproducible():
    layer = orthohash.OrthoHashLoss(bits=12, num_classes=6, seed=4, codebook_method="N")
    assert not layer.codebook.trainable and layer.trainable_weights == []
    np.testing.assert_array_equal(
        layer.codebook.numpy(), orthohash_targets.generate_codebook(6, 12, "N", seed=4)
    )
    explicit = orthohash.OrthoHashLoss(bits=2, num_classes=2, codebook=[[1, -1], [-1, -1]])
    np.testing.assert_array_equal(explicit.codebook.numpy(), [[1, -1], [-1, -1]])
    with pytest.raises(ValueError, match="shape"):
        orthohash.OrthoHashLoss(bits=3, num_classes=2, codebook=[[1, -1], [-1, -1]])
    with pytest.raises(ValueError, match="Unknown margin_type 'sphere'"):
        orthohash.OrthoHashLoss(bits=3, num_classes=2, margin_type="sphere")
