"""BiHalf loss (wsdhash/losses/bihalf.py): the bi-half assignment and a value by hand, a
numpy loop with references, fixtures from the authors' PyTorch code (value, gradient and
the bi-half autograd Function's backward), and the loss contract.

Fixtures: the `hash` autograd Function of liyunqianggyn/Deep-Unsupervised-Image-Hashing
ImageHashing/Cifar10_I.py (fetched; class source executed with `.cuda()` removed, gamma =
6 and 0) and the loss lines of its training loop (F.cosine_similarity of the batch's two
halves, F.mse_loss), on H (8 x 4 outputs) and X (8 x 5 features) of fixture_checks.py;
produced by a scratch script outside the repository:

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python /tmp/fixtures_unsupervised/make_fixtures.py

It prints B, loss.item() and h.grad per gamma, and h.grad after hash.apply(h).backward(G).
"""

import numpy as np
import pytest
import tensorflow as tf
from contracts import run_loss_test
from fixture_checks import (
    LABELS,
    H,
    X,
    check_centered_features,
    check_features_required,
    check_labels_ignored,
    check_torch_fixture,
    feature_loss_with_references,
    slow_pair_similarity,
)

from wsdhash.losses.bihalf import BiHalfLoss, bi_half, bihalf_terms, straight_through_bi_half

# The authors' hash.apply(H) (the same for both gammas).
TORCH_B = [
    [1, -1, -1, 1],
    [-1, 1, 1, -1],
    [1, 1, -1, 1],
    [-1, -1, -1, 1],
    [-1, 1, 1, -1],
    [1, -1, -1, -1],
    [-1, 1, 1, -1],
    [1, -1, 1, 1],
]
# loss.item() (gamma only changes the backward).
TORCH_VALUE = 1.9095971584320068
TORCH_GRAD = {
    6.0: [
        [-0.09375, 0.0, 0.234375, 0.1875],
        [-0.04266896843910217, -0.004206031560897827, 0.18329396843910217, 0.4092569053173065],
        [0.12087169289588928, -0.26886507868766785, 0.019753307104110718, -0.019753307104110718],
        [0.14777728915214539, 0.1897227168083191, -0.09597273170948029, -0.09597271680831909],
        [0.07499999552965164, 0.018750004470348358, -0.13124999403953552, -0.09375],
        [0.07079396396875381, 0.060456037521362305, -0.05204397067427635, 0.465506911277771],
        [-0.13024668395519257, -0.3344900906085968, 0.017746690660715103, -0.055246688425540924],
        [-0.09152728319168091, 0.12409772723913193, 0.06784771382808685, -0.020972713828086853],
    ],
    0.0: [
        [0.0, 0.0, 0.0, 0.0],
        [-0.08954396843910217, 0.08954396843910217, 0.08954396843910217, 0.2686319053173065],
        [0.07399669289588928, -0.22199007868766785, -0.07399669289588928, 0.07399669289588928],
        [-0.05847272276878357, 0.05847272276878357, -0.05847272276878357, -0.05847272276878357],
        [0.0, 0.0, 0.0, 0.0],
        [0.08954396843910217, -0.08954396843910217, -0.08954396843910217, 0.2686319053173065],
        [-0.07399669289588928, -0.22199007868766785, 0.07399669289588928, -0.07399669289588928],
        [0.05847272276878357, 0.05847272276878357, 0.05847272276878357, -0.05847272276878357],
    ],
}
# hash.apply(H).backward(G), gamma = 6: G + 6 (H - B) / 32.
TORCH_UPSTREAM = [
    [0.2, -0.225, 0.625, 0.7],
    [-0.55, 0.3, 0.45, -0.35],
    [0.55, 0.0, -0.3, 0.125],
    [-0.2, 0.65, 0.25, -0.65],
    [0.15, -0.05, -0.5, 0.5],
    [0.725, 0.475, -0.15, 0.35],
    [-0.275, 0.35, 0.85, -0.025],
    [0.35, -0.4, 0.225, 1.1],
]
TORCH_FUNCTION_GRAD = [
    [0.10625000298023224, -0.22499999403953552, 0.859375, 0.887499988079071],
    [-0.503125011920929, 0.20625001192092896, 0.543749988079071, -0.20937499403953552],
    [0.596875011920929, -0.046875, -0.20625001192092896, 0.03125],
    [0.006250008940696716, 0.78125, 0.21249999105930328, -0.6875],
    [0.22499999403953552, -0.0312499962747097, -0.6312500238418579, 0.40625],
    [0.706250011920929, 0.625, -0.11250001192092896, 0.546875],
    [-0.33125001192092896, 0.23749998211860657, 0.7937500476837158, -0.006249995902180672],
    [0.19999998807907104, -0.3343749940395355, 0.2343749850988388, 1.1375000476837158],
]


def test_bi_half_by_hand():
    # Column 0: 0.3 > 0.1 > -0.2 > -0.5 -> the top two +1. Column 1: -1 < 2 < 3 < 4.
    u = tf.constant([[0.1, 4.0], [-0.5, 3.0], [0.3, -1.0], [-0.2, 2.0]])
    np.testing.assert_array_equal(bi_half(u), [[1, 1], [-1, 1], [1, -1], [-1, -1]])
    # Odd N: floor(N/2) = 1 entry per column is +1, even where every entry is positive.
    np.testing.assert_array_equal(bi_half(tf.constant([[1.0], [3.0], [2.0]])), [[-1], [1], [-1]])
    # Ties by row order.
    np.testing.assert_array_equal(bi_half(tf.constant([[0.5], [0.5]])), [[1], [-1]])


def test_value_by_hand():
    # Two rows, one pair. u = (2, -1), (1, 1): column 0 -> b = (+1, -1), column 1 -> (-1, +1);
    # cos(b_0, b_1) = -1. Features (1, 0), (1, 1): cos = 1/sqrt(2). Pair: (-1 - 0.7071)^2.
    u = tf.constant([[2.0, -1.0], [1.0, 1.0]])
    x = tf.constant([[1.0, 0.0], [1.0, 1.0]])
    similarity, quantization = bihalf_terms(u, features=x)
    pair = (-1.0 - 1 / np.sqrt(2)) ** 2
    np.testing.assert_allclose(similarity, [pair, pair], rtol=1e-6)
    # mean_k (u - b)^2: row 0 ((2-1)^2 + (-1+1)^2)/2 = 0.5; row 1 ((1+1)^2 + 0)/2 = 2.
    np.testing.assert_allclose(quantization, [0.5, 2.0], rtol=1e-6)
    terms = BiHalfLoss(bits=2, num_classes=2, gamma=4.0)(
        u, tf.constant([[1.0, 0], [0, 1]]), features=x
    )
    np.testing.assert_allclose(terms["quantization"], [1.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(terms["loss"], [pair + 1.0, pair + 4.0], rtol=1e-6)


def _reference(ref_u, ref_x, offset, count, gamma):
    """Per-anchor loss by loops: bi-half per column, pairs r <-> r + R/2."""
    ref_u = ref_u.astype(np.float64)
    rows, bits = ref_u.shape
    b = -np.ones_like(ref_u)
    for k in range(bits):
        for r in sorted(range(rows), key=lambda r: -ref_u[r, k])[: rows // 2]:
            b[r, k] = 1.0
    similarity = slow_pair_similarity(b, ref_x, offset, count)
    anchors = range(offset, offset + count)
    return np.array(
        [s + gamma / 2 * np.mean((ref_u[a] - b[a]) ** 2) for s, a in zip(similarity, anchors)]
    )


@pytest.mark.parametrize("rows", [12, 11])
def test_matches_slow_loop_with_references(rows):
    layer = BiHalfLoss(bits=6, num_classes=2, gamma=3.0)
    got, refs, feats = feature_loss_with_references(layer, rows)
    np.testing.assert_allclose(got, _reference(refs, feats, 4, 7, 3.0), rtol=1e-5, atol=1e-7)


def test_bi_half_matches_the_authors_function():
    np.testing.assert_array_equal(bi_half(H), TORCH_B)


@pytest.mark.parametrize("gamma", [6.0, 0.0])
def test_matches_the_authors_code(gamma):
    # The authors' loss value is the similarity term; their gamma lives in the backward,
    # ours in the quantization term: the gradient of the mean loss is theirs.
    layer = BiHalfLoss(bits=4, num_classes=3, gamma=gamma)
    check_torch_fixture(
        layer, H, LABELS, {"similarity": TORCH_VALUE}, TORCH_GRAD[gamma], features=tf.constant(X)
    )


def test_backward_is_the_authors_function():
    # hash.apply(U).backward(G) = G + gamma (U - B) / (N K): straight-through bi-half plus
    # the mean quantization term (gamma / 2 mean_k (u - b)^2 per row).
    h = tf.Variable(H)
    with tf.GradientTape() as tape:
        upstream = tf.reduce_sum(straight_through_bi_half(h) * tf.constant(TORCH_UPSTREAM))
        quantization = tf.reduce_mean(bihalf_terms(h, features=X)[1])
        total = upstream + 0.5 * 6.0 * quantization
    np.testing.assert_allclose(tape.gradient(total, h), TORCH_FUNCTION_GRAD, rtol=1e-5, atol=1e-7)


def test_labels_are_ignored():
    check_labels_ignored(BiHalfLoss)


def test_features_are_required():
    check_features_required(BiHalfLoss, "BiHalfLoss")
    with pytest.raises(ValueError, match="BiHalfLoss"):
        bihalf_terms(H)


@pytest.mark.parametrize("labels_kind", ["single", "multi"])
def test_loss_contract_and_reference_split(labels_kind):
    # run_loss_test passes random features (the layer's call takes `features`).
    run_loss_test(BiHalfLoss, labels_kind=labels_kind, keys={"loss", "similarity", "quantization"})


def test_config_round_trip():
    clone = BiHalfLoss.from_config(BiHalfLoss(bits=8, num_classes=3, gamma=2.5).get_config())
    assert clone.gamma == 2.5


def test_centered_features():
    check_centered_features(BiHalfLoss, "similarity", code_cosine=-1.0)
