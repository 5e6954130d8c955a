"""GreedyHash loss (wsdhash/losses/greedyhash.py): values by hand, a numpy loop, the
straight-through gradient, the trainable classifier, pointwise references, fixtures from
the reference PyTorch code, and one tiny training through the CLI.

Fixtures: the GreedyHashLoss class of swuxyj/DeepHash-pytorch GreedyHash.py (class source,
with its Hash straight-through Function, executed unchanged on CPU) on u = Z and one-hot
Y below (K = 8, C = 3), its fc.weight (C x K) set to W8.T, W8 the classifier of
GreedyHashLoss(bits=8, num_classes=3, seed=0) read from a built layer; config["alpha"] 0.1
and 0. Produced once by a scratch script outside the repository:

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy scipy
    .venv/bin/python /tmp/fixtures_csq_gh/make_ours.py  # our centres, tie, W8 -> ours.json
    /tmp/torchenv/bin/python /tmp/fixtures_csq_gh/make_fixtures.py greedyhash

It prints loss.item(), u.grad and fc.weight.grad (transposed to K x C). The authors'
ssppp/GreedyHash cifar1.py (its hash Function and hash_layer executed unchanged; the loss
lines of its training loop, CrossEntropyLoss + 0.1 * mean | |x| - 1 |^3, with fc = W8.T)
gives the same numbers bit for bit at alpha = 0.1.
"""

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

# No zero entry: torch.sign(0) = 0, ours +1 (a documented departure).
Z = np.array(
    [
        [0.5, -1.0, 0.25, 2.0, -0.75, 1.5, -0.25, 0.1],
        [-0.75, 0.5, 1.5, -0.25, 1.25, -2.0, 0.3, -0.6],
        [1.25, 0.75, -0.5, 0.5, -1.5, 0.2, 0.9, -1.1],
        [0.1, -0.3, -1.2, 0.8, 0.4, -0.9, 2.5, -0.05],
    ],
    np.float32,
)
Y = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
# GreedyHashLoss(bits=8, num_classes=3, seed=0).classifier, as printed once (K x C).
W8 = np.array(
    [
        [-0.20434291660785675, 0.1456710398197174, 0.2121768295764923],
        [0.19147905707359314, -0.07877969741821289, 0.2618836462497711],
        [0.21792146563529968, -0.2142951488494873, 0.24697169661521912],
        [0.028408735990524292, -0.25732672214508057, -0.2749253213405609],
        [0.17472407221794128, -0.21399472653865814, -0.10059002041816711],
        [0.014353036880493164, -0.05222803354263306, -0.2041734904050827],
        [-0.19968806207180023, -0.24125108122825623, -0.23761676251888275],
        [0.3517005145549774, -0.06145668029785156, -0.21193154156208038],
    ],
    np.float32,
)

# DeepHash-pytorch GreedyHashLoss(u=Z, onehot_y=Y), fc.weight = W8.T: keys config["alpha"];
# loss.item(), u.grad, and fc.weight.grad.T (the same for both alphas).
TORCH_VALUE = {
    0.1: 1.1662718057632446,
    0.0: 1.1306276321411133,
}
TORCH_GRAD = {
    0.1: [
        [
            0.055056288838386536,
            -0.018334949389100075,
            -0.040134016424417496,
            -0.03505144268274307,
            -0.05074811354279518,
            -0.017808621749281883,
            -0.0007782257162034512,
            -0.08011968433856964,
        ],
        [
            -0.019414644688367844,
            0.06351474672555923,
            0.0969248041510582,
            0.026320019736886024,
            0.04688149690628052,
            -0.023484449833631516,
            -0.0007357052527368069,
            0.015852821990847588,
        ],
        [
            -0.02546352706849575,
            -0.04189741238951683,
            -0.05063357576727867,
            0.013172272592782974,
            -0.002756428439170122,
            0.02078142762184143,
            0.0011926299193874002,
            0.041932348161935806,
        ],
        [
            -0.019998369738459587,
            0.04669789597392082,
            0.06002897396683693,
            0.012796095572412014,
            0.025938980281352997,
            -0.009104068391025066,
            0.02352355420589447,
            0.017131812870502472,
        ],
    ],
    0.0: [
        [
            0.057400040328502655,
            -0.018334949389100075,
            -0.034860577434301376,
            -0.04442644119262695,
            -0.05133404955267906,
            -0.020152371376752853,
            -0.006051663309335709,
            -0.07252593338489532,
        ],
        [
            -0.020000582560896873,
            0.06585849821567535,
            0.09458105266094208,
            0.021046582609415054,
            0.04629556089639664,
            -0.01410945039242506,
            0.003858044743537903,
            0.014352822676301003,
        ],
        [
            -0.02604946494102478,
            -0.04131147637963295,
            -0.05297732725739479,
            0.015516022220253944,
            -0.0004126783460378647,
            0.02678142860531807,
            0.0012863799929618835,
            0.0420260988175869,
        ],
        [
            -0.01240462064743042,
            0.042104147374629974,
            0.060403972864151,
            0.01317109540104866,
            0.029313979670405388,
            -0.009197818115353584,
            0.0024298038333654404,
            0.008670873939990997,
        ],
    ],
}
TORCH_WEIGHT_GRAD = [
    [-0.13711971044540405, 0.27315717935562134, -0.1360374391078949],
    [0.22642245888710022, -0.04907779395580292, -0.1773446798324585],
    [-0.16567695140838623, -0.10293583571910858, 0.2686127722263336],
    [-0.13711971044540405, 0.27315717935562134, -0.1360374391078949],
    [0.23953112959861755, -0.541511595249176, 0.30198052525520325],
    [-0.23953112959861755, 0.541511595249176, -0.30198052525520325],
    [0.32883384823799133, -0.3174322247505188, -0.01140160858631134],
    [-0.32883384823799133, 0.3174322247505188, 0.01140160858631134],
]


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
    np.testing.assert_allclose(
        terms["classification"], [math.log(1 + math.exp(-3)), math.log(1 + math.exp(-1))], rtol=1e-6
    )
    np.testing.assert_allclose(terms["penalty"], [0.53125, (0 + 0 + 0.125 + 8) / 4], rtol=1e-6)
    np.testing.assert_allclose(
        terms["loss"], terms["classification"] + 0.1 * terms["penalty"], rtol=1e-6
    )
    # Multi-label BCE: mean over classes of softplus(-z) for positives, softplus(z) else.
    bce = _layer(multiclass=True)(h, tf.constant([[1.0, 1.0], [0.0, 0.0]]))["classification"]

    def softplus(x):
        return math.log1p(math.exp(x))

    np.testing.assert_allclose(
        bce, [(softplus(-2) + softplus(1)) / 2, (softplus(-2) + softplus(-1)) / 2], rtol=1e-6
    )


def test_sign_of_zero_is_plus_one_like_binarize():
    h = np.array([[0.0, -0.0, 1e-30, -1e-30]], np.float32)
    np.testing.assert_array_equal(straight_through_sign(tf.constant(h)), binarize(h))


def _reference(h, labels, weights, alpha, multiclass):
    out = []
    for i in range(len(h)):
        b = np.where(h[i] >= 0, 1.0, -1.0)
        z = b @ weights
        if multiclass:
            cls = np.mean(
                [
                    math.log1p(math.exp(-zc)) if y > 0 else math.log1p(math.exp(zc))
                    for zc, y in zip(z, labels[i])
                ]
            )
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
    want = _reference(
        h.astype(np.float64), labels, layer.classifier.numpy().astype(np.float64), 0.7, multiclass
    )
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
    np.testing.assert_allclose(
        tape.gradient(penalty, h), 3 * d * np.abs(d) * np.sign(x) / 8, rtol=1e-5, atol=1e-7
    )


def _fixture_layer(**kwargs):
    layer = GreedyHashLoss(bits=8, num_classes=3, seed=0, **kwargs)
    layer.classifier.assign(W8)
    return layer


@pytest.mark.parametrize("alpha", [0.1, 0.0])
def test_matches_deephash_pytorch(alpha):
    # Single-label data, no zero code entry: the same loss, the same straight-through
    # gradient w.r.t. the relaxed code, and the same classifier gradient (theirs is the
    # (C, K) fc.weight of the authors' nn.Linear(K, C, bias=False); ours is its transpose).
    z = tf.Variable(Z)
    layer = _fixture_layer(alpha=alpha)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(layer(z, tf.constant(Y))["loss"])
    grad_z, grad_w = tape.gradient(loss, [z, layer.classifier])
    np.testing.assert_allclose(loss.numpy(), TORCH_VALUE[alpha], rtol=1e-5)
    np.testing.assert_allclose(grad_z, TORCH_GRAD[alpha], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_w, TORCH_WEIGHT_GRAD, rtol=1e-5, atol=1e-7)


def test_multiclass_penalty_matches_deephash_pytorch():
    # multiclass=True replaces their softmax CE by a per-class sigmoid BCE (a documented
    # departure, no counterpart in their code); the cubic penalty is unchanged: alpha times
    # its batch mean, and its gradient, are their alpha = 0.1 loss minus their alpha = 0 one.
    z = tf.Variable(Z)
    layer = _fixture_layer(alpha=0.1, multiclass=True)
    with tf.GradientTape() as tape:
        terms = layer(z, tf.constant(Y))
        penalty = tf.reduce_mean(terms["loss"] - terms["classification"])
    np.testing.assert_allclose(penalty.numpy(), TORCH_VALUE[0.1] - TORCH_VALUE[0.0], rtol=1e-5)
    want = np.array(TORCH_GRAD[0.1]) - np.array(TORCH_GRAD[0.0])
    np.testing.assert_allclose(tape.gradient(penalty, z), want, rtol=1e-5, atol=1e-7)


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


@pytest.mark.parametrize(
    "labels_kind,multiclass", [("single", False), ("multi", True), ("multi", False)]
)
def test_loss_contract_and_pointwise_references(labels_kind, multiclass):
    run_loss_test(
        GreedyHashLoss,
        labels_kind=labels_kind,
        multiclass=multiclass,
        keys={"loss", "classification", "penalty"},
    )
    rng = np.random.default_rng(5)
    codes = tf.constant(rng.normal(size=(8, 16)).astype(np.float32))
    labels = tf.constant((rng.random((8, 6)) < 0.4).astype(np.float32))
    layer = GreedyHashLoss(bits=16, num_classes=6, seed=2, multiclass=multiclass)
    whole = layer(codes, labels)
    for start in (0, 4):
        part = layer(
            codes[start : start + 4],
            labels[start : start + 4],
            ref_codes=codes,
            ref_labels=labels,
            anchor_offset=start,
        )
        for name in whole:
            np.testing.assert_allclose(part[name], whole[name][start : start + 4], rtol=1e-6)


def test_trains_through_the_cli(tmp_path):
    data_dir, workdir = tmp_path / "data", tmp_path / "run"
    run_train(
        str(data_dir),
        workdir,
        "--steps=6",
        "--method=greedyhash",
        "--head=linear",
        "--greedyhash_multiclass=true",
        "--greedyhash_alpha=0.1",
    )
    metrics = read_json(workdir / "metrics.json")
    assert 0.0 <= metrics["map"] <= 1.0 and np.isfinite(metrics["map"])
    codes = read_codes_file(workdir / "codes.h5")
    assert codes.bits == 16 and codes.query.codes.shape == (30, 2)
    assert codes.query.codes.dtype == np.uint8
    unpacked = np.unpackbits(codes.query.codes, axis=1)[:, :16]
    np.testing.assert_array_equal(unpacked, (codes.query.features >= 0).astype(np.uint8))
