"""GreedyHash loss (wsdhash/losses/greedyhash.py): values by hand, a numpy loop, the
straight-through gradient, the trainable classifier, pointwise references, and one tiny
training through the CLI."""

import math
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
from contracts import run_loss_test

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "training"))
from train_helpers import read_json, run_train

from wsdhash.eval import binarize, read_codes_file
from wsdhash.losses.greedyhash import (
    GreedyHashLoss,
    classification_loss,
    cubic_penalty,
    straight_through_sign,
)

W = np.array([[1, 0], [0, 1], [1, 1], [0, -1]], np.float32)


def _layer(**kwargs):
    layer = GreedyHashLoss(bits=4, num_classes=2, seed=0, **kwargs)
    layer.classifier.assign(W)
    return layer


def test_values_by_hand():
    # h = (0.5, -2, 0, 1) -> b = (1, -1, 1, 1) (sign(0) = +1) -> logits b W = (2, -1).
    # Class 0: CE = log(1 + e^-3). Penalty: mean(.125, 1, 1, 0) = 0.53125.
    # Second row h = (-1, 1, -0.5, 3) -> b = (-1, 1, -1, 1) -> logits (-2, -1); class 1.
    h = tf.constant([[0.5, -2.0, 0.0, 1.0], [-1.0, 1.0, -0.5, 3.0]])
    labels = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    terms = _layer(alpha=0.1)(h, labels)
    assert set(terms) == {"loss", "classification", "penalty"}
    np.testing.assert_allclose(terms["classification"],
                               [math.log(1 + math.exp(-3)), math.log(1 + math.exp(-1))],
                               rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(terms["penalty"], [0.53125, (0 + 0 + 0.125 + 8) / 4], rtol=1e-6)
    np.testing.assert_allclose(terms["loss"], terms["classification"] + 0.1 * terms["penalty"],
                               rtol=1e-6)  # fmt: skip
    # Multi-label BCE: mean over classes of softplus(-z) for positives, softplus(z) else.
    bce = _layer(multiclass=True)(h, tf.constant([[1.0, 1.0], [0.0, 0.0]]))["classification"]
    softplus = lambda x: math.log1p(math.exp(x))
    np.testing.assert_allclose(bce, [(softplus(-2) + softplus(1)) / 2,
                                     (softplus(-2) + softplus(-1)) / 2], rtol=1e-6)  # fmt: skip


def test_sign_of_zero_is_plus_one_like_binarize():
    h = np.array([[0.0, -0.0, 1e-30, -1e-30]], np.float32)
    np.testing.assert_array_equal(straight_through_sign(tf.constant(h)), binarize(h))


def _reference(h, labels, weights, alpha, multiclass):
    out = []
    for i in range(len(h)):
        b = np.where(h[i] >= 0, 1.0, -1.0)
        z = b @ weights
        if multiclass:
            cls = np.mean([math.log1p(math.exp(-zc)) if y > 0 else math.log1p(math.exp(zc))
                           for zc, y in zip(z, labels[i])])  # fmt: skip
        elif labels[i].sum() == 0:
            cls = 0.0
        else:
            log_softmax = z - z.max() - math.log(np.exp(z - z.max()).sum())
            cls = -(labels[i] / labels[i].sum() * log_softmax).sum()
        penalty = np.mean(np.abs(np.abs(h[i]) - 1) ** 3)
        out.append((cls + alpha * penalty, cls, penalty))
    return np.array(out)


@pytest.mark.parametrize("multiclass", [False, True])
def test_matches_slow_loop(multiclass):
    rng = np.random.default_rng(1)
    h = rng.normal(size=(10, 12)).astype(np.float32)
    labels = (rng.random((10, 5)) < 0.3).astype(np.float32)
    labels[0] = 0
    labels[1] = np.eye(5)[2]
    layer = GreedyHashLoss(bits=12, num_classes=5, seed=3, alpha=0.7, multiclass=multiclass)
    terms = layer(tf.constant(h), tf.constant(labels))
    want = _reference(h.astype(np.float64), labels, layer.classifier.numpy().astype(np.float64),
                      0.7, multiclass)  # fmt: skip
    for column, name in enumerate(("loss", "classification", "penalty")):
        np.testing.assert_allclose(terms[name], want[:, column], rtol=1e-5, atol=1e-6)


def test_straight_through_gradient():
    rng = np.random.default_rng(2)
    h = tf.Variable(rng.normal(size=(6, 8)).astype(np.float32))
    labels = tf.constant(np.eye(3, dtype=np.float32)[[0, 1, 2, 2, 1, 0]])
    layer = GreedyHashLoss(bits=8, num_classes=3, seed=1, alpha=0.0)
    with tf.GradientTape() as tape:
        got = tf.reduce_sum(layer(h, labels)["loss"])
    grad_h = tape.gradient(got, h).numpy()
    # The classification term as a function of b, b an independent variable = sign(h).
    b = tf.Variable(binarize(h.numpy()).astype(np.float32))
    with tf.GradientTape() as tape:
        logits = tf.matmul(b, layer.classifier)
        want = tf.reduce_sum(classification_loss(logits, labels))
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    np.testing.assert_allclose(grad_h, tape.gradient(want, b).numpy(), rtol=1e-6, atol=1e-7)
    assert np.abs(grad_h).max() > 0

    # The penalty's gradient: d/dh mean_k ||h|-1|^3 = 3 (|h|-1)|(|h|-1)| sign(h) / K.
    with tf.GradientTape() as tape:
        penalty = tf.reduce_sum(cubic_penalty(h))
    x = h.numpy()
    d = np.abs(x) - 1
    np.testing.assert_allclose(tape.gradient(penalty, h), 3 * d * np.abs(d) * np.sign(x) / 8,
                               rtol=1e-5, atol=1e-7)  # fmt: skip


def test_classifier_is_trainable_and_initialised_like_torch():
    layer = GreedyHashLoss(bits=16, num_classes=7, seed=4)
    assert [v.name for v in layer.trainable_variables] == ["classifier"]
    values = layer.classifier.numpy()
    assert values.shape == (16, 7) and np.abs(values).max() <= 1 / 4
    h = tf.constant(np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32))
    labels = tf.constant(np.eye(7, dtype=np.float32)[[0, 1, 2, 3, 4]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(h, labels)["loss"])
    assert np.abs(tape.gradient(loss, layer.classifier).numpy()).max() > 0
    clone = GreedyHashLoss.from_config(layer.get_config())
    np.testing.assert_array_equal(clone.classifier.numpy(), values)  # same seed, same init


@pytest.mark.parametrize("labels_kind,multiclass", [("single", False), ("multi", True),
                                                    ("multi", False)])  # fmt: skip
def test_loss_contract_and_pointwise_references(labels_kind, multiclass):
    run_loss_test(GreedyHashLoss, labels_kind=labels_kind, multiclass=multiclass,
                  keys={"loss", "classification", "penalty"})  # fmt: skip
    rng = np.random.default_rng(5)
    codes = tf.constant(rng.normal(size=(8, 16)).astype(np.float32))
    labels = tf.constant((rng.random((8, 6)) < 0.4).astype(np.float32))
    layer = GreedyHashLoss(bits=16, num_classes=6, seed=2, multiclass=multiclass)
    whole = layer(codes, labels)
    for start in (0, 4):
        part = layer(codes[start : start + 4], labels[start : start + 4], ref_codes=codes,
                     ref_labels=labels, anchor_offset=start)  # fmt: skip
        for name in whole:
            np.testing.assert_allclose(part[name], whole[name][start : start + 4], rtol=1e-6)


def test_trains_through_the_cli(tmp_path):
    data_dir, workdir = tmp_path / "data", tmp_path / "run"
    run_train(str(data_dir), workdir, "--steps=6", "--method=greedyhash", "--head=linear",
              "--greedyhash_multiclass=true", "--greedyhash_alpha=0.1")  # fmt: skip
    metrics = read_json(workdir / "metrics.json")
    assert 0.0 <= metrics["map"] <= 1.0 and np.isfinite(metrics["map"])
    codes = read_codes_file(workdir / "codes.h5")
    assert codes.bits == 16 and codes.query.codes.shape == (30, 2)
    assert codes.query.codes.dtype == np.uint8
    unpacked = np.unpackbits(codes.query.codes, axis=1)[:, :16]
    np.testing.assert_array_equal(unpacked, (codes.query.features >= 0).astype(np.uint8))
