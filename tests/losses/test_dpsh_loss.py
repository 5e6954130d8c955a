"""DPSH loss (wsdhash/losses/dpsh.py): a value by hand, a numpy loop, gradients, the
reference split, and fixtures from DeepHash-pytorch's DPSHLoss.

Fixtures: the DPSHLoss class of swuxyj/DeepHash-pytorch DPSH.py (fetched, class source
executed unchanged) on Z and Y below with num_train = 4, ind = arange(4), so its memory
bank is exactly this batch; produced by a scratch script outside the repository:

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python /tmp/fixtures/make_fixtures.py dpsh

It prints loss.item() and u.grad for alpha = 0.1 and alpha = 0 (config["alpha"]).
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from contracts import run_loss_test

from wsdhash.losses.dpsh import DPSHLoss, dpsh_terms

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

# DeepHash-pytorch DPSHLoss(u=Z, y=Y, ind=arange(4)): loss.item() and u.grad.
TORCH_VALUE = {0.1: 0.8047367334365845, 0.0: 0.7738460898399353}
TORCH_GRAD = {
    0.1: [
        [0.03263765200972557, -0.00030355947092175484, -0.07439935952425003, 0.03990549221634865],
        [0.007908198982477188, 0.025229526683688164, 0.01636664755642414, -0.04186995327472687],
        [-0.0016700017731636763, -0.02722111903131008, 0.006654263008385897, 0.040184155106544495],
        [0.040319740772247314, -0.008066537790000439, -0.032451435923576355, 0.05008646473288536],
    ],
    0.0: [
        [0.03888765349984169, -0.00030355947092175484, -0.06502436101436615, 0.027405492961406708],
        [0.004783199168741703, 0.031479526311159134, 0.01011664792895317, -0.05124495178461075],
        [-0.004795001819729805, -0.024096118286252022, 0.0004042629152536392, 0.046434156596660614],
        [0.05156974121928215, -0.01681653782725334, -0.029951436445116997, 0.05258646607398987],
    ],
}


def test_value_by_hand():
    # u1 = (1, 1, 1, 1), u2 = (.5, -.5, .5, -.5), both of class 0: theta_11 = 2,
    # theta_12 = 0, theta_22 = 0.5; b2 = (1, -1, 1, -1), so ||u2 - b2||^2 = 4 * 0.25.
    u = tf.constant([[1.0, 1, 1, 1], [0.5, -0.5, 0.5, -0.5]])
    labels = tf.constant([[1.0, 0], [1, 0]])
    likelihood, quantization = dpsh_terms(u, labels)
    sp = lambda x: math.log1p(math.exp(x))
    want = [(sp(2) - 2 + sp(0)) / 2, (sp(0) + sp(0.5) - 0.5) / 2]
    np.testing.assert_allclose(likelihood, want, rtol=1e-6)
    np.testing.assert_allclose(quantization, [0.0, 1.0], rtol=1e-6)
    terms = DPSHLoss(bits=4, num_classes=2, quantization_weight=0.3)(u, labels)
    np.testing.assert_allclose(terms["loss"], [want[0], want[1] + 0.3], rtol=1e-6)


def _reference(u, labels, ref_u, ref_labels, eta):
    """Slow loop over the pairs."""
    out = []
    for i in range(len(u)):
        total = 0.0
        for j in range(len(ref_u)):
            theta = 0.5 * float(np.dot(u[i], ref_u[j]))
            s = float(np.dot(labels[i], ref_labels[j]) > 0)
            total += math.log1p(math.exp(theta)) - s * theta
        b = np.where(u[i] >= 0, 1.0, -1.0)
        out.append(total / len(ref_u) + eta * float(np.sum((u[i] - b) ** 2)))
    return np.array(out)


def test_matches_slow_loop_with_references():
    rng = np.random.default_rng(0)
    refs = rng.normal(scale=1.5, size=(14, 12)).astype(np.float32)
    ref_labels = (rng.random((14, 5)) < 0.3).astype(np.float32)
    ref_labels[3] = 0  # an unlabelled row: similar to nothing, itself included
    layer = DPSHLoss(bits=12, num_classes=5, quantization_weight=0.02)
    got = layer(refs[4:9], ref_labels[4:9], ref_codes=refs, ref_labels=ref_labels, anchor_offset=4)[
        "loss"
    ]
    want = _reference(
        refs[4:9].astype(np.float64), ref_labels[4:9], refs.astype(np.float64), ref_labels, 0.02
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Class ids mean one-hot rows.
    ids = np.array([0, 2, 2, 4])
    np.testing.assert_allclose(
        layer(refs[:4], ids)["loss"], layer(refs[:4], np.eye(5, dtype=np.float32)[ids])["loss"]
    )


@pytest.mark.parametrize("alpha", [0.1, 0.0])
def test_matches_deephash_pytorch(alpha):
    # Same value with eta = alpha / K (their quantization is a mean over B x K). Their
    # bank is detached: their gradient is the anchor side only. Ours reaches both codes
    # of a pair, so our gradient = theirs + their pair gradient (alpha = 0).
    z = tf.Variable(Z)
    layer = DPSHLoss(bits=4, num_classes=3, quantization_weight=alpha / 4)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(layer(z, tf.constant(Y))["loss"])
    np.testing.assert_allclose(loss.numpy(), TORCH_VALUE[alpha], rtol=1e-6)
    want = np.array(TORCH_GRAD[alpha]) + np.array(TORCH_GRAD[0.0])
    np.testing.assert_allclose(tape.gradient(loss, z), want, rtol=1e-5, atol=1e-7)


def test_gradient_closed_form():
    # d/du_k of sum_i likelihood_i with refs = batch (R = B):
    # sum_j (sigmoid(theta_kj) - s_kj) u_j / R   (u_k as anchor and as reference, halves).
    rng = np.random.default_rng(1)
    u = rng.normal(size=(6, 8)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 1]]
    var = tf.Variable(u)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(dpsh_terms(var, labels)[0])
    theta = 0.5 * u @ u.T
    s = (labels @ labels.T > 0).astype(np.float32)
    want = ((1 / (1 + np.exp(-theta)) - s) @ u) / 6
    np.testing.assert_allclose(tape.gradient(total, var), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("labels_kind", ["single", "multi"])
def test_loss_contract_and_reference_split(labels_kind):
    run_loss_test(DPSHLoss, labels_kind=labels_kind, keys={"loss", "likelihood", "quantization"})


def test_config_round_trip():
    layer = DPSHLoss(bits=8, num_classes=3, seed=2, quantization_weight=0.5)
    clone = DPSHLoss.from_config(layer.get_config())
    assert clone.quantization_weight == 0.5 and not layer.weights
