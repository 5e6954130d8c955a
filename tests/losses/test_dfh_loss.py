"""DFH loss (wsdhash/losses/dfh.py): a value by hand, a numpy loop (centre fit and
loss), the reference split, and fixtures from DeepHash-pytorch's DFHLoss.

Fixtures: the DFHLoss class of swuxyj/DeepHash-pytorch DFH.py (fetched, class source
executed unchanged, with its module-level `config`) on Z and Y below with num_train = 4,
ind = arange(4), so its memory bank is exactly this batch; produced by a scratch script
outside the repository:

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python /tmp/fixtures_dpn_dfh_idhn/make.py dfh
    /tmp/torchenv/bin/python /tmp/fixtures_dpn_dfh_idhn/eta0.py

Their first call quantizes to sign(u) (centres 0) and then fits V from 0 on this batch:
that V is wsdhash's per-call centre fit. A second call with the same inputs quantizes to
sign(mu sign(V) y + u): wsdhash's loss on this batch. Printed: loss.item(), u.grad and V
for m = 3, mu = 0.1 and 1, eta = 0.5; call 1 with m = 0; call 1 with eta = 0.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from contracts import run_loss_test

from wsdhash.losses.dfh import DFHLoss, dfh_terms, fit_centers

Z = np.array(
    [
        [0.5, -0.05, 0.25, 2.0],
        [-0.75, 0.5, 0.03, -0.25],
        [1.25, 0.02, -0.5, 0.5],
        [0.08, -0.3, -1.2, -0.04],
    ],
    np.float32,
)
Y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]], np.float32)

# DeepHash-pytorch DFHLoss: V after the first call (the same for every mu).
TORCH_V = [
    [-0.5740662813186646, -0.5740662813186646, 1.1813113689422607],
    [-0.5740662813186646, -0.5740662813186646, 1.1813113689422607],
    [1.9249989986419678, -0.8702280521392822, -1.1222580671310425],
    [0.8702279925346375, -1.9249989986419678, 1.1222580671310425],
]
# Second call (loss with the fitted centres): loss.item() and u.grad per mu.
TORCH_VALUE = {0.1: 3.191044330596924, 1.0: 3.316044330596924}
TORCH_GRAD = {
    0.1: [
        [0.02106817066669464, 0.03707904368638992, -0.10393530875444412, 0.04046924412250519],
        [0.05585285276174545, -0.03468780592083931, -0.04755771532654762, 0.009157262742519379],
        [-0.02257392555475235, -0.057975996285676956, 0.017244402319192886, 0.007694773375988007],
        [0.14016912877559662, 0.036380160599946976, 0.012756213545799255, 0.14274072647094727],
    ],
    1.0: [
        [0.14606817066669464, 0.03707904368638992, -0.10393530875444412, 0.04046924412250519],
        [0.05585285276174545, 0.09031219035387039, -0.04755771532654762, 0.009157262742519379],
        [-0.02257392555475235, -0.057975996285676956, 0.017244402319192886, 0.007694773375988007],
        [0.14016912877559662, 0.036380160599946976, 0.012756213545799255, 0.14274072647094727],
    ],
}
# First call (centres 0: b = sign(u), i.e. mu = 0 here): m = 3; m = 0; eta = 0.
TORCH_FIRST_VALUE = 3.181044340133667
TORCH_MARGIN0_VALUE = 0.9397884607315063
TORCH_MARGIN0_GRAD = [
    [0.009096518158912659, 0.04612656682729721, -0.07609663903713226, 0.07082276046276093],
    [0.028406081721186638, -0.031231088563799858, -0.05167706683278084, 0.018267586827278137],
    [0.008764874190092087, -0.06216958537697792, 0.019128259271383286, 0.0034684017300605774],
    [-0.01591179147362709, 0.03809286653995514, -0.006647320464253426, 0.1023654192686081],
]
TORCH_METRIC_VALUE = 2.920050621032715


def sp(x):
    return math.log1p(math.exp(x))


def test_value_by_hand():
    # u1 = (1, 1, 1, 1), u2 = (.5, -.5, .5, -.5), m = 1, mu = 0 (b = sign u).
    # theta_11 = 2, theta_12 = 0, theta_22 = 0.5. Similar: s log(1 + exp(m - theta)).
    u = tf.constant([[1.0, 1, 1, 1], [0.5, -0.5, 0.5, -0.5]])
    same, other = tf.constant([[1.0, 0], [1, 0]]), tf.constant([[1.0, 0], [0, 1]])
    metric, quantization, _ = dfh_terms(u, same, margin=1.0, push=0.0)
    np.testing.assert_allclose(metric, [(sp(-1) + sp(1)) / 2, (sp(1) + sp(0.5)) / 2], rtol=1e-6)
    np.testing.assert_allclose(quantization, [0.0, 0.25], rtol=1e-6)
    # Dissimilar pair: log(1 + exp(m + theta_12)); self pairs stay similar.
    metric = dfh_terms(u, other, margin=1.0, push=0.0)[0]
    np.testing.assert_allclose(metric, [(sp(-1) + sp(1)) / 2, (sp(1) + sp(0.5)) / 2], rtol=1e-6)
    metric = dfh_terms(u, other, margin=2.0, push=0.0)[0]
    np.testing.assert_allclose(metric, [(sp(0) + sp(2)) / 2, (sp(2) + sp(1.5)) / 2], rtol=1e-6)
    terms = DFHLoss(bits=4, num_classes=2, margin=2.0, push=0.0, quantization_weight=2.0)(u, other)
    np.testing.assert_allclose(terms["loss"], np.array(metric) + [0.0, 0.5], rtol=1e-6)


def _fit_reference(y, b, vul, nta):
    """DeepHash-pytorch's Center_gradient from V = 0, in float64 with explicit gradients."""
    k, c = b.shape[1], y.shape[1]
    v, target, rate = np.zeros((k, c)), k * (2 * np.eye(c) - 1), 0.03
    for i in range(200):
        grad = 2 * (v @ y.T - b.T) @ y / (k * len(y))
        grad += vul * 4 * v @ (v.T @ v - target) / c**2
        grad += nta * 2 * (v - np.sign(v)) / (k * c)
        if i in (149, 179):
            rate *= 0.1
        v = v - rate * grad
    return v


def _reference(u, labels, ref_u, ref_labels, margin, mu, eta, vul, nta):
    """Slow loop over the pairs, after the centre fit on the references."""
    sign = lambda x: np.where(x >= 0, 1.0, -1.0)  # noqa: E731
    centers = np.sign(_fit_reference(ref_labels, sign(ref_u), vul, nta))
    out = []
    for i in range(len(u)):
        total = 0.0
        for j in range(len(ref_u)):
            theta = 0.5 * float(np.dot(u[i], ref_u[j]))
            s = float(np.dot(labels[i], ref_labels[j]) > 0)
            total += (1 - s) * sp(margin + theta) + s * sp(margin - theta)
        b = sign(mu * centers @ labels[i] + u[i])
        out.append(total / len(ref_u) + eta * float(np.mean((b - u[i]) ** 2)))
    return np.array(out)


def test_matches_slow_loop_with_references():
    rng = np.random.default_rng(0)
    refs = rng.normal(scale=0.3, size=(14, 8)).astype(np.float32)
    ref_labels = (rng.random((14, 5)) < 0.3).astype(np.float32)
    ref_labels[3] = 0  # an unlabelled row: similar to nothing, no push
    layer = DFHLoss(
        bits=8,
        num_classes=5,
        margin=1.5,
        push=0.5,
        quantization_weight=0.7,
        inter_weight=0.5,
        center_quantization_weight=2.0,
    )
    got = layer(refs[4:9], ref_labels[4:9], ref_codes=refs, ref_labels=ref_labels, anchor_offset=4)[
        "loss"
    ]
    r64 = refs.astype(np.float64)
    want = _reference(r64[4:9], ref_labels[4:9], r64, ref_labels, 1.5, 0.5, 0.7, 0.5, 2.0)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(
        fit_centers(ref_labels, np.where(refs >= 0, 1.0, -1.0), 0.5, 2.0),
        _fit_reference(ref_labels.astype(np.float64), np.where(r64 >= 0, 1.0, -1.0), 0.5, 2.0),
        rtol=1e-4,
        atol=1e-5,
    )
    # Class ids mean one-hot rows.
    ids = np.array([0, 2, 2, 4])
    np.testing.assert_allclose(
        layer(refs[:4], ids)["loss"], layer(refs[:4], np.eye(5, dtype=np.float32)[ids])["loss"]
    )


def test_centre_fit_matches_deephash_pytorch():
    v = fit_centers(Y, np.where(Z >= 0, 1.0, -1.0))
    np.testing.assert_allclose(v, TORCH_V, rtol=1e-5, atol=1e-6)


def _loss_and_anchor_gradient(layer):
    # Their bank is detached: the gradient of theirs is ours with the references fixed.
    z = tf.Variable(Z)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(
            layer(z, Y, ref_codes=tf.stop_gradient(tf.convert_to_tensor(z)), ref_labels=Y)["loss"]
        )
    return loss.numpy(), tape.gradient(loss, z).numpy()


@pytest.mark.parametrize("mu", [0.1, 1.0])
def test_matches_deephash_pytorch(mu):
    value, gradient = _loss_and_anchor_gradient(DFHLoss(bits=4, num_classes=3, push=mu))
    np.testing.assert_allclose(value, TORCH_VALUE[mu], rtol=1e-6)
    np.testing.assert_allclose(gradient, TORCH_GRAD[mu], rtol=1e-5, atol=1e-7)
    # Without the push, b = sign(u): their first call (centres still 0).
    value, _ = _loss_and_anchor_gradient(DFHLoss(bits=4, num_classes=3, push=0.0))
    np.testing.assert_allclose(value, TORCH_FIRST_VALUE, rtol=1e-6)


def test_margin_zero_and_both_sided_gradient():
    layer = DFHLoss(bits=4, num_classes=3, margin=0.0, push=0.0)
    value, gradient = _loss_and_anchor_gradient(layer)
    np.testing.assert_allclose(value, TORCH_MARGIN0_VALUE, rtol=1e-6)
    np.testing.assert_allclose(gradient, TORCH_MARGIN0_GRAD, rtol=1e-5, atol=1e-7)
    # The pair term is symmetric: with the references live, its gradient doubles.
    layer = DFHLoss(bits=4, num_classes=3, quantization_weight=0.0)
    value, anchor = _loss_and_anchor_gradient(layer)
    np.testing.assert_allclose(value, TORCH_METRIC_VALUE, rtol=1e-6)
    z = tf.Variable(Z)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(layer(z, Y)["loss"])
    np.testing.assert_allclose(tape.gradient(loss, z), 2 * anchor, rtol=1e-5, atol=1e-7)


def test_normalized_labels_push_with_the_mean_centre():
    # Row 1 has labels 0 and 1: with normalisation the rows are y / |y| in the centre fit
    # and in the push (mu/2 (c_0 + c_1)); without, the raw rows.
    codes = np.where(Z >= 0, 1.0, -1.0)
    normalized = Y / Y.sum(axis=1, keepdims=True)
    for rows, flag in ((Y, False), (normalized, True)):
        centers = np.sign(fit_centers(rows, codes).numpy())
        _, q, _ = dfh_terms(tf.constant(Z), Y, push=2.0, normalize_labels=flag)
        b = np.where(2.0 * centers @ rows[1] + Z[1] >= 0, 1.0, -1.0)
        np.testing.assert_allclose(q[1], np.mean((b - Z[1]) ** 2), rtol=1e-6)
    raw = dfh_terms(tf.constant(Z), Y, push=2.0)[1]
    assert not np.allclose(raw, dfh_terms(tf.constant(Z), Y, push=2.0, normalize_labels=True)[1])


@pytest.mark.parametrize("labels_kind", ["single", "multi"])
def test_loss_contract_and_reference_split(labels_kind):
    run_loss_test(DFHLoss, labels_kind=labels_kind, keys={"loss", "metric", "quantization"})


def test_config_round_trip():
    layer = DFHLoss(bits=8, num_classes=3, margin=0.0, push=1.0, normalize_labels=True)
    clone = DFHLoss.from_config(layer.get_config())
    assert clone.margin == 0.0 and clone.push == 1.0 and clone.normalize_labels
    assert not layer.weights
