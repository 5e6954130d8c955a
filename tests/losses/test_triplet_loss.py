"""Tests for wsdhash.losses.triplet: the original's triplet set, hand values, slow reference."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from wsdhash.losses import triplet


def original_triplets(class_ids):
    """The re-implementation's get_triplets: per class, pairs i < j (i anchor), all negatives."""
    class_ids = np.asarray(class_ids)
    triplets = []
    for label in set(class_ids.tolist()):
        members = np.flatnonzero(class_ids == label)
        negatives = np.flatnonzero(class_ids != label)
        for a, p in itertools.combinations(members, 2):
            triplets += [(a, p, n) for n in negatives]
    return triplets


def slow_triplet(codes, class_ids, margin):
    """Published mean and per-anchor values (R * anchor sum / T), with loops."""
    codes = np.asarray(codes, np.float64)
    per_anchor = np.zeros(len(codes))
    triplets = original_triplets(class_ids)
    for a, p, n in triplets:
        d_ap = np.sum((codes[a] - codes[p]) ** 2)
        d_an = np.sum((codes[a] - codes[n]) ** 2)
        per_anchor[a] += max(0.0, d_ap - d_an + margin)
    if not triplets:
        return 0.0, per_anchor
    return per_anchor.sum() / len(triplets), len(codes) * per_anchor / len(triplets)


def test_ten_classes_of_eight_give_20160_triplets():
    class_ids = np.repeat(np.arange(10), 8)
    np.random.default_rng(0).shuffle(class_ids)
    assert len(original_triplets(class_ids)) == 10 * 28 * 72 == 20160
    assert triplet.count_triplets(class_ids).numpy() == 20160
    assert triplet.count_triplets(np.eye(10)[class_ids]).numpy() == 20160


def test_by_hand_and_the_lower_index_is_the_anchor():
    codes = tf.constant([[0.0], [1.0], [3.0]])
    labels = tf.constant([0, 0, 1])
    # One triplet (0, 1, 2): relu(1 - 9 + 10) = 2; per anchor R * 2 / T = [6, 0, 0].
    np.testing.assert_allclose(triplet.triplet_loss(codes, labels, 10.0).numpy(), [6.0, 0.0, 0.0])
    # Swapping the two class-0 images makes the code 1.0 the anchor: relu(1 - 4 + 10) = 7.
    swapped = tf.constant([[1.0], [0.0], [3.0]])
    np.testing.assert_allclose(
        triplet.triplet_loss(swapped, labels, 10.0).numpy(), [21.0, 0.0, 0.0]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_slow_reference(seed):
    rng = np.random.default_rng(seed)
    class_ids = rng.integers(0, 4, size=13)
    codes = np.tanh(rng.normal(size=(13, 8))).astype(np.float32)
    published, per_anchor = slow_triplet(codes, class_ids, margin=3.0)
    for labels in (class_ids, np.eye(4, dtype=np.float32)[class_ids]):
        values = triplet.triplet_loss(codes, labels, 3.0).numpy()
        np.testing.assert_allclose(values, per_anchor, rtol=1e-5, atol=1e-6)
        assert values.mean() == pytest.approx(published, rel=1e-5)
    assert published > 0


def test_multi_hot_positive_shares_a_label_negative_shares_none():
    labels = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 0]], np.float32)
    codes = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    # Pairs i < j sharing a label: (0, 1), (0, 3). Anchor 0's negatives: row 2 only
    # (row 4 is unlabelled and takes no part). T = 2.
    d = ((codes[:, None] - codes[None]) ** 2).sum(-1)
    expected = np.zeros(5)
    expected[0] = 5 * (max(0, d[0, 1] - d[0, 2] + 2) + max(0, d[0, 3] - d[0, 2] + 2)) / 2
    np.testing.assert_allclose(
        triplet.triplet_loss(codes, labels, 2.0).numpy(), expected, rtol=1e-5
    )
    assert triplet.count_triplets(labels).numpy() == 2


def test_no_triplets_give_zero_not_nan():
    codes = tf.Variable(np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32))
    for labels in (np.zeros(6, np.int64), np.arange(6), [-1] * 6):  # one class / singletons / none
        with tf.GradientTape() as tape:
            values = triplet.triplet_loss(codes, tf.constant(labels), 5.0)
        np.testing.assert_array_equal(values.numpy(), np.zeros(6))
        grad = tape.gradient(tf.reduce_sum(values), codes)
        assert grad is None or np.all(grad.numpy() == 0)
    one = triplet.triplet_loss(codes[:1], tf.constant([3]), 5.0)
    np.testing.assert_array_equal(one.numpy(), [0.0])


def test_invariances():
    rng = np.random.default_rng(3)
    class_ids = rng.integers(0, 3, size=9)
    codes = rng.normal(size=(9, 6)).astype(np.float32)
    base = triplet.triplet_loss(codes, class_ids, 4.0).numpy()
    # Renaming classes (permuting one-hot columns) and flipping bits change nothing.
    renamed = np.array([2, 0, 1])[class_ids]
    np.testing.assert_allclose(triplet.triplet_loss(codes, renamed, 4.0).numpy(), base, rtol=1e-5)
    flip = np.where(np.arange(6) % 2 == 0, 1.0, -1.0).astype(np.float32)
    np.testing.assert_allclose(
        triplet.triplet_loss(codes * flip, class_ids, 4.0).numpy(), base, rtol=1e-5
    )
    # A batch permutation that keeps the order inside every class permutes the values.
    order = np.argsort(class_ids, kind="stable")
    np.testing.assert_allclose(
        triplet.triplet_loss(codes[order], class_ids[order], 4.0).numpy(), base[order], rtol=1e-5
    )


def test_gradients_finite_and_nonzero():
    rng = np.random.default_rng(4)
    class_ids = np.repeat(np.arange(3), 4)
    codes = tf.Variable(np.tanh(rng.normal(size=(12, 16))).astype(np.float32))
    with tf.GradientTape() as tape:
        value = tf.reduce_mean(triplet.triplet_loss(codes, class_ids, 20.0))
    grad = tape.gradient(value, codes).numpy()
    assert np.all(np.isfinite(grad))
    assert np.all(np.abs(grad).sum(axis=1) > 0)


def test_default_margins_and_dnnh_variant():
    assert triplet.default_margin(64) == 20 and triplet.default_margin(16) == 8
    layer = triplet.TripletLoss(bits=64, num_classes=10)
    assert layer.margin == 20
    dnnh = triplet.TripletLoss(bits=12, num_classes=10, dnnh_sigmoid=True)
    assert dnnh.margin == 1.0
    # DNNH form on [0, 1] codes: max(0, |a - p|^2 - |a - n|^2 + 1).
    codes = tf.constant([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    out = dnnh(codes, tf.constant([1, 1, 2]))
    np.testing.assert_allclose(out["loss"].numpy(), [3 * max(0, 1 - 2 + 1), 0, 0])
    codes = tf.constant([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    out = dnnh(codes, tf.constant([1, 1, 2]))
    np.testing.assert_allclose(out["loss"].numpy(), [3 * (2 - 1 + 1), 0, 0])
    assert set(out) == {"loss", "triplet"}


def test_keras_loss_wrapper():
    rng = np.random.default_rng(6)
    class_ids = rng.integers(0, 3, size=8)
    codes = rng.normal(size=(8, 4)).astype(np.float32)
    loss = triplet.BatchAllTripletLoss(margin=2.0)
    values = loss(np.eye(3, dtype=np.float32)[class_ids], codes)
    assert values.shape == (8,)
    np.testing.assert_allclose(values, slow_triplet(codes, class_ids, 2.0)[1], rtol=1e-5, atol=1e-6)
    clone = triplet.BatchAllTripletLoss.from_config(loss.get_config())
    assert clone.margin == 2.0
    reduced = triplet.BatchAllTripletLoss(margin=2.0, reduction="sum_over_batch_size")
    assert float(reduced(np.eye(3)[class_ids], codes)) == pytest.approx(
        slow_triplet(codes, class_ids, 2.0)[0], rel=1e-5
    )
