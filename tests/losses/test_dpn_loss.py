"""DPN loss (wsdhash/losses/dpn.py): a value by hand, a numpy loop, the targets, the
contract, and fixtures from DeepHash-pytorch's DPNLoss and the authors' calculate_loss.

Fixtures, on Z and the labels below with the targets T and the tie bits TIE set in
place of the random ones, produced by a scratch script outside the repository:

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python /tmp/fixtures_dpn_dfh_idhn/make.py dpn

    * DeepHash-pytorch DPN.py's DPNLoss (class source executed unchanged; its
      target_vectors and multi_label_random_center replaced by T and (TIE + 1) / 2),
      dataset "cifar10-1" (single-label: argmax) and "nuswide_21" (multi-label: CSQ's
      combined target), m = 1 and 0.5: loss.item() and u.grad;
    * the authors' calculate_loss (kamwoh/DPN scripts/train_hashing.py, function source
      unchanged; sl = 1, ce = 0, margin 1) plus their `reg * torch.pow(codes, 2).mean()`
      line with reg = 0 and 0.1, multiclass false and true: value and u.grad.
"""

import numpy as np
import pytest
import tensorflow as tf
from contracts import run_loss_test

from wsdhash.losses.dpn import DPNLoss, dpn_terms, generate_targets

Z = np.array(
    [
        [0.5, -1.0, 0.25, 2.0],
        [-0.75, 0.5, 1.5, -0.25],
        [1.25, 0.75, -0.5, 0.5],
        [0.1, -0.3, -1.2, 0.8],
    ],
    np.float32,
)
MULTI = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]], np.float32)
SINGLE = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
T = np.array([[1, -1, 1, -1], [-1, -1, 1, 1], [1, 1, -1, -1]], np.float32)
TIE = np.array([1, -1, -1, 1], np.float32)

# DeepHash-pytorch DPNLoss: (labels, m) -> loss.item(), u.grad.
DEEPHASH_VALUE = {
    ("single", 1.0): 0.856249988079071,
    ("single", 0.5): 0.5,
    ("multi", 1.0): 0.949999988079071,
    ("multi", 0.5): 0.578125,
}
DEEPHASH_GRAD = {
    ("single", 1.0): [
        [-0.0625, 0.0625, -0.0625, 0.0625],
        [0.0625, 0.0625, 0.0, -0.0625],
        [0.0, -0.0625, 0.0625, 0.0625],
        [0.0625, 0.0625, -0.0625, -0.0625],
    ],
    ("single", 0.5): [
        [-0.0625, 0.0, -0.0625, 0.0625],
        [0.0, 0.0625, 0.0, -0.0625],
        [0.0, 0.0, 0.0625, 0.0625],
        [0.0625, 0.0625, -0.0625, 0.0],
    ],
    ("multi", 1.0): [
        [-0.0625, 0.0625, -0.0625, 0.0625],
        [-0.0625, 0.0625, 0.0, -0.0625],
        [0.0, -0.0625, 0.0625, 0.0625],
        [0.0625, 0.0625, -0.0625, -0.0625],
    ],
    ("multi", 0.5): [
        [-0.0625, 0.0, -0.0625, 0.0625],
        [-0.0625, 0.0625, 0.0, -0.0625],
        [0.0, 0.0, 0.0625, 0.0625],
        [0.0625, 0.0625, -0.0625, 0.0],
    ],
}
# The authors' calculate_loss + reg * mean(u^2): (labels, reg) -> value, u.grad.
AUTHORS_VALUE = {
    ("single", 0.0): 3.424999952316284,
    ("single", 0.1): 3.507765531539917,
    ("multi", 0.0): 4.425000190734863,
    ("multi", 0.1): 4.507765769958496,
}
AUTHORS_GRAD = {
    ("single", 0.1): [
        [-0.24375000596046448, -0.012500000186264515, -0.24687500298023224, 0.2750000059604645],
        [0.24062499403953552, 0.2562499940395355, 0.01875000074505806, -0.25312501192092896],
        [0.015625, -0.24062499403953552, 0.24375000596046448, 0.2562499940395355],
        [0.2512499988079071, 0.2462500035762787, -0.26499998569488525, -0.23999999463558197],
    ],
    ("multi", 0.1): [
        [-0.24375000596046448, -0.012500000186264515, -0.24687500298023224, 0.2750000059604645],
        [-0.00937500037252903, 0.5062500238418579, 0.01875000074505806, -0.0031250000465661287],
        [0.015625, -0.24062499403953552, 0.24375000596046448, 0.2562499940395355],
        [0.2512499988079071, 0.2462500035762787, -0.26499998569488525, -0.23999999463558197],
    ],
    ("multi", 0.0): [
        [-0.25, 0.0, -0.25, 0.25],
        [0.0, 0.5, 0.0, 0.0],
        [0.0, -0.25, 0.25, 0.25],
        [0.25, 0.25, -0.25, -0.25],
    ],
}


def _layer(**kwargs):
    layer = DPNLoss(bits=4, num_classes=3, **kwargs)
    layer.targets.assign(T)
    layer.tie_target.assign(TIE)
    return layer


def _value_and_gradient(layer, labels):
    z = tf.Variable(Z)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(layer(z, labels)["loss"])
    return loss.numpy(), tape.gradient(loss, z).numpy()


def test_value_by_hand():
    # Row 0: class 0, target (1, -1, 1, -1), m = 1: hinges 0.5, 0, 0.75, 3 -> 4.25.
    # Row 1: classes 0 and 1; per class: (1.75, 1.5, 0, 0.75) + (0.25, 1.5, 0, 1.25) = 7;
    # combined: T0 + T1 = (0, -2, 2, 0), ties (1, ., ., 1) -> (1, -1, 1, 1):
    # hinges 1.75, 1.5, 0, 1.25 -> 4.5.
    u = tf.constant(Z[:2])
    y = tf.constant(MULTI[:2])
    per_class, regularization = dpn_terms(u, y, T, TIE, margin=1.0)
    np.testing.assert_allclose(per_class, [4.25, 7.0], rtol=1e-6)
    combined, _ = dpn_terms(u, y, T, TIE, margin=1.0, multi_label="combined")
    np.testing.assert_allclose(combined, [4.25, 4.5], rtol=1e-6)
    np.testing.assert_allclose(regularization, np.mean(Z[:2] ** 2, axis=1), rtol=1e-6)
    terms = _layer(polarization_weight=0.5, regularization_weight=2.0)(u, y)
    np.testing.assert_allclose(
        terms["loss"], 0.5 * np.array([4.25, 7.0]) + 2.0 * np.mean(Z[:2] ** 2, axis=1), rtol=1e-6
    )
    # Unlabelled rows cost no polarization (both rules).
    for rule in ("per_class", "combined"):
        empty = dpn_terms(u, tf.zeros((2, 3)), T, TIE, multi_label=rule)[0]
        np.testing.assert_array_equal(empty, [0.0, 0.0])


def _reference(u, labels, targets, tie, margin, rule):
    out = []
    for i in range(len(u)):
        classes = np.flatnonzero(labels[i] > 0)
        if rule == "per_class":
            total = sum(np.maximum(margin - u[i] * targets[c], 0).sum() for c in classes)
        elif len(classes):
            summed = targets[classes].sum(axis=0)
            t = np.where(summed > 0, 1.0, np.where(summed < 0, -1.0, tie))
            total = np.maximum(margin - u[i] * t, 0).sum()
        else:
            total = 0.0
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("rule", ["per_class", "combined"])
def test_matches_slow_loop(rule):
    rng = np.random.default_rng(0)
    u = rng.normal(size=(9, 16)).astype(np.float32)
    labels = (rng.random((9, 5)) < 0.4).astype(np.float32)
    labels[2] = 0
    layer = DPNLoss(bits=16, num_classes=5, seed=4, margin=0.7, multi_label=rule)
    want = _reference(u, labels, layer.targets.numpy(), layer.tie_target.numpy(), 0.7, rule)
    np.testing.assert_allclose(layer(u, labels)["polarization"], want, rtol=1e-5)
    # Class ids mean one-hot rows.
    ids = np.array([0, 3, 3, 4])
    np.testing.assert_allclose(
        layer(u[:4], ids)["loss"], layer(u[:4], np.eye(5, dtype=np.float32)[ids])["loss"]
    )


@pytest.mark.parametrize("kind", ["single", "multi"])
@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_matches_deephash_pytorch(kind, margin):
    # Their mean over B x K: polarization_weight = 1 / K; multi-label: combined targets.
    # At an exact kink (u t = m) torch's clamp(0) passes gradient 1 and relu (ours, the
    # authors') 0: those entries differ by 1 / (B K) of their gradient, the rest agree.
    labels = SINGLE if kind == "single" else MULTI
    layer = _layer(margin=margin, polarization_weight=0.25, multi_label="combined")
    value, gradient = _value_and_gradient(layer, labels)
    np.testing.assert_allclose(value, DEEPHASH_VALUE[kind, margin], rtol=1e-6)
    summed = labels @ T
    targets = np.where(summed > 0, 1.0, np.where(summed < 0, -1.0, TIE))
    kink = Z * targets == margin
    assert kink.any()
    want = np.array(DEEPHASH_GRAD[kind, margin])
    np.testing.assert_allclose(gradient[~kink], want[~kink], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gradient[kink], want[kink] + targets[kink] / 16, atol=1e-8)


@pytest.mark.parametrize("kind", ["single", "multi"])
@pytest.mark.parametrize("reg", [0.0, 0.1])
def test_matches_the_authors_code(kind, reg):
    # Defaults are the authors' (sum over bits, per-class hinge for multi-label).
    layer = _layer(regularization_weight=reg)
    value, gradient = _value_and_gradient(layer, SINGLE if kind == "single" else MULTI)
    np.testing.assert_allclose(value, AUTHORS_VALUE[kind, reg], rtol=1e-6)
    if (kind, reg) in AUTHORS_GRAD:
        np.testing.assert_allclose(gradient, AUTHORS_GRAD[kind, reg], rtol=1e-6, atol=1e-8)


def test_targets_follow_the_seed_and_method():
    targets, tie = generate_targets(20, 64, seed=1)
    again, tie_again = generate_targets(20, 64, seed=1)
    np.testing.assert_array_equal(targets, again)
    np.testing.assert_array_equal(tie, tie_again)
    assert set(np.unique(targets)) == {-1.0, 1.0} and set(np.unique(tie)) <= {-1.0, 1.0}
    assert not np.array_equal(targets, generate_targets(20, 64, seed=2)[0])
    # Bernoulli bits are independent: some rows are unbalanced; balanced rows never are.
    assert np.any((targets == -1).sum(axis=1) != 32)
    balanced = generate_targets(20, 64, method="balanced", probability=0.25, seed=1)[0]
    np.testing.assert_array_equal((balanced == -1).sum(axis=1), np.full(20, 16))
    with pytest.raises(ValueError, match="target method"):
        generate_targets(3, 8, method="hadamard")


def test_targets_are_fixed_weights_rebuilt_from_the_config():
    layer = DPNLoss(bits=32, num_classes=6, seed=5, target_method="balanced")
    assert not layer.trainable_weights and len(layer.non_trainable_weights) == 2
    clone = DPNLoss.from_config(layer.get_config())
    np.testing.assert_array_equal(clone.targets.numpy(), layer.targets.numpy())
    np.testing.assert_array_equal(clone.tie_target.numpy(), layer.tie_target.numpy())
    assert clone.target_method == "balanced" and clone.multi_label == "per_class"


@pytest.mark.parametrize("labels_kind", ["single", "multi"])
def test_loss_contract_and_reference_split(labels_kind):
    run_loss_test(DPNLoss, labels_kind=labels_kind, keys={"loss", "polarization", "regularization"})
    run_loss_test(
        DPNLoss, labels_kind=labels_kind, multi_label="combined", regularization_weight=0.1
    )
