"""DSH loss (wsdhash/losses/dsh.py): a value by hand, a numpy loop, gradients, the
reference split, and fixtures from DeepHash-pytorch's DSHLoss.

Fixtures: the DSHLoss class of swuxyj/DeepHash-pytorch DSH.py (fetched, class source
executed unchanged) on Z and Y below with num_train = 4, ind = arange(4), so its memory
bank is exactly this batch; produced by a scratch script outside the repository:

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python /tmp/fixtures/make_fixtures.py dsh

It prints loss.item() and u.grad for alpha = 0.1 and alpha = 0 (config["alpha"]).
"""

import numpy as np
import pytest
import tensorflow as tf
from contracts import run_loss_test

from wsdhash.losses.dsh import DSHLoss, dsh_terms

Z = np.array(
    [
        [0.5, -1.0, 0.25, 2.0],
        [-0.75, 0.5, 1.5, -0.25],
        [1.25, 0.75, -0.5, 0.5],
        [0.1, -0.3, -1.2, 0.8],
    ],
    np.float32,
)
Y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]], np.float32)

# DeepHash-pytorch DSHLoss(u=Z, y=Y, ind=arange(4)), K = 4 (m = 8): loss.item(), u.grad.
TORCH_VALUE = {0.1: 1.9582812786102295, 0.0: 1.9098438024520874}
TORCH_GRAD = {
    0.1: [
        [0.09375, 0.05937499925494194, -0.22187499701976776, -0.02187500335276127],
        [-0.1249999925494194, 0.13750000298023224, 0.25312501192092896, -0.20000000298023224],
        [-0.11249999701976776, -0.18124999105930328, 0.009374996647238731, 0.10624999552965164],
        [0.14375001192092896, -0.02187500335276127, -0.04062499850988388, 0.11562500149011612],
    ],
    0.0: [
        [0.10000000149011612, 0.05937499925494194, -0.21562500298023224, -0.02812500298023224],
        [-0.13124999403953552, 0.14374999701976776, 0.24687500298023224, -0.20624999701976776],
        [-0.11874999850988388, -0.17499999701976776, 0.0031249970197677612, 0.11249999701976776],
        [0.15000000596046448, -0.02812500298023224, -0.03437499701976776, 0.12187500298023224],
    ],
}


@pytest.mark.parametrize("similar", [True, False])
def test_value_by_hand(similar):
    # u1 = (1, 1, 1, 1), u2 = (.5, -.5, .5, -.5): D = .25 + 2.25 + .25 + 2.25 = 5, m = 8.
    # Similar: pair 0.5 * 5; dissimilar: 0.5 * (8 - 5). Self pairs cost 0; mean over 2.
    u = tf.constant([[1.0, 1, 1, 1], [0.5, -0.5, 0.5, -0.5]])
    labels = tf.constant([[1.0, 0], [1, 0]] if similar else [[1.0, 0], [0, 1]])
    contrastive, regularization = dsh_terms(u, labels)
    pair = 2.5 if similar else 1.5
    np.testing.assert_allclose(contrastive, [pair / 2, pair / 2], rtol=1e-6)
    np.testing.assert_allclose(regularization, [0.0, 0.5], rtol=1e-6)
    terms = DSHLoss(bits=4, num_classes=2, regularization_weight=0.2)(u, labels)
    np.testing.assert_allclose(terms["loss"], [pair / 2, pair / 2 + 0.1], rtol=1e-6)
    # A margin below the distance: dissimilar pairs cost nothing.
    low = dsh_terms(u, labels, margin=4.0)[0]
    np.testing.assert_allclose(low, [pair / 2] * 2 if similar else [0.0, 0.0], rtol=1e-6)


def _reference(u, labels, ref_u, ref_labels, margin, alpha):
    out = []
    for i in range(len(u)):
        total = 0.0
        for j in range(len(ref_u)):
            d = float(np.sum((u[i] - ref_u[j]) ** 2))
            s = float(np.dot(labels[i], ref_labels[j]) > 0)
            total += 0.5 * s * d + 0.5 * (1 - s) * max(margin - d, 0.0)
        out.append(total / len(ref_u) + alpha * float(np.mean(np.abs(np.abs(u[i]) - 1))))
    return np.array(out)


def test_matches_slow_loop_with_references():
    rng = np.random.default_rng(0)
    refs = rng.normal(scale=0.8, size=(14, 6)).astype(np.float32)
    ref_labels = (rng.random((14, 5)) < 0.3).astype(np.float32)
    layer = DSHLoss(bits=6, num_classes=5, regularization_weight=0.3)
    got = layer(refs[4:9], ref_labels[4:9], ref_codes=refs, ref_labels=ref_labels, anchor_offset=4)[
        "loss"
    ]
    want = _reference(
        refs[4:9].astype(np.float64),
        ref_labels[4:9],
        refs.astype(np.float64),
        ref_labels,
        12.0,
        0.3,
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.1, 0.0])
def test_matches_deephash_pytorch(alpha):
    # Same value; their bank is detached (anchor-side gradient only), ours reaches both
    # codes of a pair: our gradient = theirs + their contrastive gradient (alpha = 0).
    z = tf.Variable(Z)
    layer = DSHLoss(bits=4, num_classes=3, regularization_weight=alpha)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(layer(z, tf.constant(Y))["loss"])
    np.testing.assert_allclose(loss.numpy(), TORCH_VALUE[alpha], rtol=1e-6)
    want = np.array(TORCH_GRAD[alpha]) + np.array(TORCH_GRAD[0.0])
    np.testing.assert_allclose(tape.gradient(loss, z), want, rtol=1e-5, atol=1e-7)


def test_gradient_of_the_self_pair_is_zero():
    u = tf.Variable([[0.3, -0.2, 0.9, 0.1]])
    with tf.GradientTape() as tape:
        contrastive = tf.reduce_sum(dsh_terms(u, tf.constant([[1.0]]))[0])
    assert contrastive.numpy() == 0.0
    np.testing.assert_array_equal(tape.gradient(contrastive, u), np.zeros((1, 4)))


@pytest.mark.parametrize("labels_kind", ["single", "multi"])
def test_loss_contract_and_reference_split(labels_kind):
    run_loss_test(DSHLoss, labels_kind=labels_kind, keys={"loss", "contrastive", "regularization"})


def test_config_round_trip():
    layer = DSHLoss(bits=8, num_classes=3, margin=5.0, regularization_weight=0.5)
    clone = DSHLoss.from_config(layer.get_config())
    assert clone.margin == 5.0 and clone.regularization_weight == 0.5
