"""CSQ loss (wsdhash/losses/csq.py): values by hand, a numpy loop, gradients, the hash
centres (Hadamard distances, random centres, the multi-label rule), pointwise
references, fixtures from the reference PyTorch code, and one tiny training through the
CLI.

Fixtures, produced once by a scratch script outside the repository on Z, Y_SINGLE and
Y_MULTI below (K = 8, C = 3), with the reference centres set to ours (generate_centers(3,
8, seed=0): Hadamard rows 0-2, tie vector TIE8):

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy scipy
    .venv/bin/python /tmp/fixtures_csq_gh/make_ours.py  # our centres, tie, W8 -> ours.json
    /tmp/torchenv/bin/python /tmp/fixtures_csq_gh/make_fixtures.py csq

    * TORCH_*: the CSQLoss class of swuxyj/DeepHash-pytorch CSQ.py (class source executed
      unchanged on CPU; hash_targets = our centres, multi_label_random_center = (TIE8 + 1)/2,
      its {0, 1} form) on u = Z (it applies tanh itself), dataset "cifar10-1" (single-label
      rule, argmax) for Y_SINGLE and "coco" (multi-label rule) for Y_MULTI, config["lambda"]
      1e-4 and 0.5: loss.item() and Z's .grad.
    * AUTHORS_*: yuanli2333/Hadamard-Matrix-for-hashing train.py, the loss lines of
      train() (BCELoss on (y + 1)/2, Q_loss, lambda0 = 1, lambda2 = 0.05, lambda1 pair
      term off) with Hash_center_multilables executed unchanged (random_center = (TIE8 +
      1)/2) for Y_MULTI and the imagenet indexing for Y_SINGLE, on the network's tanh
      output y = tanh(Z) as the leaf: loss.item() and y's .grad.
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

from wsdhash.eval import read_codes_file
from wsdhash.losses.csq import (
    CSQLoss,
    csq_terms,
    example_centers,
    generate_centers,
    pairwise_hamming,
    random_centers,
    sylvester_hadamard,
)

CENTERS = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1]], np.float32)
TIE = np.array([1, -1, -1, -1], np.float32)

Z = np.array(
    [
        [0.5, -1.0, 0.25, 2.0, -0.75, 1.5, -0.25, 0.1],
        [-0.75, 0.5, 1.5, -0.25, 1.25, -2.0, 0.3, -0.6],
        [1.25, 0.75, -0.5, 0.5, -1.5, 0.2, 0.9, -1.1],
        [0.1, -0.3, -1.2, 0.8, 0.4, -0.9, 2.5, -0.05],
    ],
    np.float32,
)
Y_SINGLE = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]]
# Rows 1 and 2 have two labels: the sum of two Hadamard centres is 0 on half the bits,
# which then come from the tie vector.
Y_MULTI = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 1], [0, 1, 0]], np.float32)
LABELS = {"single": Y_SINGLE, "multi": Y_MULTI}
# generate_centers(3, 8, seed=0)[1], the tie vector the fixtures were made with.
TIE8 = np.array([1, -1, -1, -1, 1, 1, 1, 1], np.float32)

# DeepHash-pytorch CSQLoss(u=Z, y): keys (labels, config["lambda"]); loss.item(), Z.grad.
TORCH_VALUE = {
    ("single", 0.0001): 0.7687087059020996,
    ("single", 0.5): 0.9016860723495483,
    ("multi", 0.0001): 0.9999587535858154,
    ("multi", 0.5): 1.1329361200332642,
}
TORCH_GRAD = {
    ("single", 0.0001): [
        [
            -0.01681148260831833,
            -0.055049192160367966,
            -0.023600727319717407,
            -0.001124153845012188,
            -0.05109703913331032,
            -0.002964223735034466,
            -0.038899268954992294,
            -0.028140945360064507,
        ],
        [
            -0.05109703913331032,
            0.04568851739168167,
            -0.002964223735034466,
            0.023600729182362556,
            -0.004741401877254248,
            0.001124153845012188,
            -0.02215053327381611,
            0.014469258487224579,
        ],
        [
            -0.004741401877254248,
            -0.011402955278754234,
            0.01681148260831833,
            0.04568851739168167,
            -0.05953577533364296,
            -0.025086842477321625,
            0.053633444011211395,
            0.006234853062778711,
        ],
        [
            -0.028140945360064507,
            0.02215053327381611,
            -0.057301390916109085,
            0.05199997499585152,
            -0.019379911944270134,
            0.00886655505746603,
            -0.00041830577538348734,
            0.029694724828004837,
        ],
    ],
    ("single", 0.5): [
        [
            -0.03002810850739479,
            -0.05192093551158905,
            -0.045777153223752975,
            -0.0012035591062158346,
            -0.04429636895656586,
            -0.0034997521433979273,
            -0.016722841188311577,
            -0.05599126219749451,
        ],
        [
            -0.04429636895656586,
            0.03247188776731491,
            -0.0034997521433979273,
            0.045777156949043274,
            -0.006070620846003294,
            0.0012035591062158346,
            -0.04241354018449783,
            0.024761738255620003,
        ],
        [
            -0.006070620846003294,
            -0.018203625455498695,
            0.03002810850739479,
            0.03247188776731491,
            -0.059000249952077866,
            -0.04918692260980606,
            0.04931744933128357,
            0.00847381167113781,
        ],
        [
            -0.05599126219749451,
            0.04241354018449783,
            -0.055716127157211304,
            0.04613171145319939,
            -0.03595596179366112,
            0.01318255066871643,
            -0.0004294271639082581,
            0.05930350348353386,
        ],
    ],
    ("multi", 0.0001): [
        [
            -0.01681148260831833,
            -0.055049192160367966,
            -0.023600727319717407,
            -0.001124153845012188,
            -0.05109703913331032,
            -0.002964223735034466,
            -0.038899268954992294,
            -0.028140945360064507,
        ],
        [
            -0.05109703913331032,
            0.04568851739168167,
            0.05953577533364296,
            0.023600729182362556,
            -0.004741401877254248,
            -0.06137584149837494,
            -0.02215053327381611,
            0.014469258487224579,
        ],
        [
            -0.004741401877254248,
            -0.011402955278754234,
            0.01681148260831833,
            0.04568851739168167,
            -0.05953577533364296,
            -0.025086842477321625,
            -0.00886655505746603,
            -0.05626514181494713,
        ],
        [
            -0.028140945360064507,
            0.02215053327381611,
            -0.057301390916109085,
            0.05199997499585152,
            -0.019379911944270134,
            0.00886655505746603,
            -0.00041830577538348734,
            0.029694724828004837,
        ],
    ],
    ("multi", 0.5): [
        [
            -0.03002810850739479,
            -0.05192093551158905,
            -0.045777153223752975,
            -0.0012035591062158346,
            -0.04429636895656586,
            -0.0034997521433979273,
            -0.016722841188311577,
            -0.05599126219749451,
        ],
        [
            -0.04429636895656586,
            0.03247188776731491,
            0.059000249952077866,
            0.045777156949043274,
            -0.006070620846003294,
            -0.061296433210372925,
            -0.04241354018449783,
            0.024761738255620003,
        ],
        [
            -0.006070620846003294,
            -0.018203625455498695,
            0.03002810850739479,
            0.03247188776731491,
            -0.059000249952077866,
            -0.04918692260980606,
            -0.01318255066871643,
            -0.05402618274092674,
        ],
        [
            -0.05599126219749451,
            0.04241354018449783,
            -0.055716127157211304,
            0.04613171145319939,
            -0.03595596179366112,
            0.01318255066871643,
            -0.0004294271639082581,
            0.05930350348353386,
        ],
    ],
}
# Authors' train.py loss on y = tanh(Z) (lambda2 = 0.05): loss.item(), y.grad.
AUTHORS_VALUE = {
    "single": 0.7819825410842896,
    "multi": 1.0132325887680054,
}
AUTHORS_GRAD = {
    "single": [
        [
            -0.023053999990224838,
            -0.1303340047597885,
            -0.027461668476462364,
            -0.01602359488606453,
            -0.08451122045516968,
            -0.016699334606528282,
            -0.039026640355587006,
            -0.03123120404779911,
        ],
        [
            -0.08451122045516968,
            0.05641727149486542,
            -0.016699334606528282,
            0.027461670339107513,
            -0.017381692305207253,
            0.01602359488606453,
            -0.02641482837498188,
            0.02177787944674492,
        ],
        [
            -0.017381692305207253,
            -0.020251568406820297,
            0.023053999990224838,
            0.05641727149486542,
            -0.32916513085365295,
            -0.028606953099370003,
            0.10926417261362076,
            0.017979739233851433,
        ],
        [
            -0.03123120404779911,
            0.02641482837498188,
            -0.1873423457145691,
            0.09196624159812927,
            -0.024583423510193825,
            0.01909436285495758,
            -0.01577211171388626,
            0.03273196518421173,
        ],
    ],
    "multi": [
        [
            -0.023053999990224838,
            -0.1303340047597885,
            -0.027461668476462364,
            -0.01602359488606453,
            -0.08451122045516968,
            -0.016699334606528282,
            -0.039026640355587006,
            -0.03123120404779911,
        ],
        [
            -0.08451122045516968,
            0.05641727149486542,
            0.32916513085365295,
            0.027461670339107513,
            -0.017381692305207253,
            -0.8686087131500244,
            -0.02641482837498188,
            0.02177787944674492,
        ],
        [
            -0.017381692305207253,
            -0.020251568406820297,
            0.023053999990224838,
            0.05641727149486542,
            -0.32916513085365295,
            -0.028606953099370003,
            -0.01909436285495758,
            -0.15601739287376404,
        ],
        [
            -0.03123120404779911,
            0.02641482837498188,
            -0.1873423457145691,
            0.09196624159812927,
            -0.024583423510193825,
            0.01909436285495758,
            -0.01577211171388626,
            0.03273196518421173,
        ],
    ],
}


def test_values_by_hand_on_tanh_codes():
    # Example 0: class 0, centre (1, 1, 1, 1); p = (u + 1)/2 = (.75, .25, .5, 1).
    # Example 1: classes 1 and 2, sum (2, 0, 0, -2) -> (1, tie, tie, -1) = (1, -1, -1, -1);
    # u = 0 everywhere, so every bit costs ln 2 whatever the centre.
    u = tf.constant([[0.5, -0.5, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    labels = tf.constant([[1.0, 0, 0], [0, 1, 1]])
    center, quantization = csq_terms(u, labels, CENTERS, TIE, apply_tanh=False)
    np.testing.assert_allclose(center, [math.log(32 / 3) / 4, math.log(2)], rtol=1e-6)
    np.testing.assert_allclose(quantization, [0.375, 1.0], rtol=1e-6)
    signs, labelled = example_centers(labels, CENTERS, TIE)
    np.testing.assert_array_equal(signs, [[1, 1, 1, 1], [1, -1, -1, -1]])
    assert labelled.numpy().all()


def test_layer_combines_terms_with_lambda():
    layer = CSQLoss(bits=4, num_classes=3, seed=0, quantization_weight=0.5, apply_tanh=False)
    np.testing.assert_array_equal(layer.centers.numpy(), CENTERS)  # Hadamard rows 0-2
    u = tf.constant([[0.5, -0.5, 0.0, 1.0]])
    terms = layer(u, tf.constant([[1.0, 0, 0]]))
    assert set(terms) == {"loss", "center", "quantization"}
    np.testing.assert_allclose(terms["loss"], [math.log(32 / 3) / 4 + 0.5 * 0.375], rtol=1e-6)


def _reference(z, labels, centers, tie, apply_tanh):
    """Slow loop: torch-style BCELoss (log clamped at -100) on (u + 1)/2."""
    u = np.tanh(z) if apply_tanh else z
    center, quantization = [], []
    for i in range(len(z)):
        total = np.zeros(z.shape[1])
        for c in range(len(centers)):
            if labels[i, c] > 0:
                total += centers[c]
        target = np.where(total > 0, 1.0, np.where(total < 0, -1.0, tie))
        t, p = (target + 1) / 2, (u[i] + 1) / 2
        bce = [
            -(
                tk * max(math.log(pk) if pk > 0 else -100, -100)
                + (1 - tk) * max(math.log(1 - pk) if pk < 1 else -100, -100)
            )
            for tk, pk in zip(t, p)
        ]
        center.append(np.mean(bce) if labels[i].any() else 0.0)
        quantization.append(np.mean((np.abs(u[i]) - 1) ** 2))
    return np.array(center), np.array(quantization)


@pytest.mark.parametrize("apply_tanh", [True, False])
def test_matches_slow_loop(apply_tanh):
    rng = np.random.default_rng(1)
    bits, classes = 16, 40  # 40 > 2K: random centres
    z = rng.normal(scale=1.5, size=(12, bits)).astype(np.float32).astype(np.float64)
    if not apply_tanh:
        z = np.tanh(z).astype(np.float32).astype(np.float64)
    labels = (rng.random((12, classes)) < 0.08).astype(np.float32)
    labels[0] = 0  # an unlabelled row: no centre term
    labels[1, :3] = 1
    layer = CSQLoss(bits=bits, num_classes=classes, seed=5, apply_tanh=apply_tanh)
    terms = layer(tf.constant(z, tf.float32), tf.constant(labels))
    center, quantization = _reference(
        z, labels, layer.centers.numpy(), layer.tie_center.numpy(), apply_tanh
    )
    np.testing.assert_allclose(terms["center"], center, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(terms["quantization"], quantization, rtol=1e-4, atol=1e-6)
    assert terms["center"][0] == 0.0


def test_gradients_match_the_tanh_bce_form():
    rng = np.random.default_rng(2)
    z = tf.Variable(rng.normal(size=(5, 8)).astype(np.float32))
    labels = tf.constant(np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1]])
    centers, tie = generate_centers(3, 8)
    with tf.GradientTape(persistent=True) as tape:
        logits_form = csq_terms(z, labels, centers, tie, apply_tanh=True)
        u = tf.tanh(z)
        bce_form = csq_terms(u, labels, centers, tie, apply_tanh=False)
        a = tf.reduce_sum(logits_form[0] + 0.3 * logits_form[1])
        b = tf.reduce_sum(bce_form[0] + 0.3 * bce_form[1])
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(a, z), tape.gradient(b, z), rtol=1e-4, atol=1e-6)
    # Closed form of the centre term: d/dz mean_k softplus(-2 z c) = -2 c sigmoid(-2 z c) / K.
    c = tf.gather(centers, [0, 1, 2, 0, 1]).numpy()
    want = -2 * c / (1 + np.exp(2 * z.numpy() * c)) / 8
    with tf.GradientTape() as tape:
        center = tf.reduce_sum(csq_terms(z, labels, centers, tie)[0])
    np.testing.assert_allclose(tape.gradient(center, z), want, rtol=1e-5, atol=1e-7)


def _fixture_layer(**kwargs):
    layer = CSQLoss(bits=8, num_classes=3, seed=0, **kwargs)
    # The centres the fixtures were made with (their Hadamard rows, our tie vector).
    np.testing.assert_array_equal(layer.centers.numpy(), sylvester_hadamard(8)[:3])
    np.testing.assert_array_equal(layer.tie_center.numpy(), TIE8)
    return layer


@pytest.mark.parametrize("kind", ["single", "multi"])
@pytest.mark.parametrize("lam", [1e-4, 0.5])
def test_matches_deephash_pytorch(kind, lam):
    # Same value and gradient w.r.t. the pre-tanh output: our centre term is softplus(-2zc)
    # (a sigmoid cross-entropy on logits 2z), the same function as their BCELoss on
    # (tanh z + 1)/2, written so that it stays finite where tanh saturates (|z| > ~9, not
    # reached here). Their B x K means equal our mean over the batch of per-example means.
    z = tf.Variable(Z)
    layer = _fixture_layer(quantization_weight=lam)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(layer(z, tf.constant(LABELS[kind]))["loss"])
    np.testing.assert_allclose(loss.numpy(), TORCH_VALUE[kind, lam], rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, z), TORCH_GRAD[kind, lam], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_matches_authors_train_loss_on_tanh_outputs(kind):
    # The authors' network ends in tanh and their loss takes y = tanh output: our
    # apply_tanh=False form (BCE on (u + 1)/2, logs clamped at -100 as BCELoss) with
    # lambda = lambda2. The multi-label centre (mean of the label centres, sign, ties from
    # their random {-1, 1} vector) is our sign of the sum with ties from TIE8.
    u = tf.Variable(tf.tanh(tf.constant(Z)))
    layer = _fixture_layer(quantization_weight=0.05, apply_tanh=False)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(layer(u, tf.constant(LABELS[kind]))["loss"])
    np.testing.assert_allclose(loss.numpy(), AUTHORS_VALUE[kind], rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, u), AUTHORS_GRAD[kind], rtol=1e-5, atol=1e-7)


def test_saturated_codes_stay_finite():
    z = tf.Variable([[30.0, -30.0, 0.0, 12.0]])
    layer_z = CSQLoss(bits=4, num_classes=3, apply_tanh=True)
    layer_u = CSQLoss(bits=4, num_classes=3, apply_tanh=False)
    labels = tf.constant([[0.0, 1, 0]])  # centre (1, -1, 1, -1): bit 3 is wrong
    for layer, codes in ((layer_z, z), (layer_u, None)):
        with tf.GradientTape() as tape:
            inputs = tf.tanh(z) if codes is None else codes
            loss = tf.reduce_sum(layer(inputs, labels)["loss"])
        grad = tape.gradient(loss, z).numpy()
        assert np.isfinite(loss.numpy()) and np.all(np.isfinite(grad))
    # The torch clamp: a saturated wrong bit of a tanh output costs 100 / K.
    u = tf.constant([[1.0, -1.0, 1.0, 1.0]])
    np.testing.assert_allclose(layer_u(u, labels)["center"], [100 / 4], rtol=1e-6)


@pytest.mark.parametrize("bits", [4, 8, 16, 32, 64])
def test_hadamard_centres_are_half_the_bits_apart(bits):
    centers, tie = generate_centers(2 * bits, bits, "auto", seed=0)
    assert set(np.unique(centers)) == {-1.0, 1.0} and set(np.unique(tie)) <= {-1.0, 1.0}
    distances = (bits - centers @ centers.T) / 2
    for i in range(2 * bits):
        for j in range(2 * bits):
            if i == j:
                assert distances[i, j] == 0
            elif abs(i - j) == bits:  # a row and its negation
                assert distances[i, j] == bits
            else:
                assert distances[i, j] == bits / 2
    # Fewer classes take the first rows; no seed dependence.
    np.testing.assert_array_equal(generate_centers(3, bits, seed=7)[0], centers[:3])


def test_sylvester_matches_scipy():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    for order in (1, 2, 4, 16, 64):
        np.testing.assert_array_equal(sylvester_hadamard(order), scipy_linalg.hadamard(order))


def test_random_centres_when_hadamard_does_not_fit():
    for classes, bits, method in ((100, 16, "auto"), (5, 12, "auto"), (10, 16, "random")):
        centers, _ = generate_centers(classes, bits, method, seed=3)
        assert centers.shape == (classes, bits)
        # The authors' draw: exactly floor(K / 2) bits -1 per centre.
        np.testing.assert_array_equal((centers < 0).sum(1), bits // 2)
        np.testing.assert_array_equal(generate_centers(classes, bits, method, seed=3)[0], centers)
        assert not np.array_equal(generate_centers(classes, bits, method, seed=4)[0], centers)


@pytest.mark.parametrize("seed", range(4))
def test_random_centres_keep_the_first_accepted_or_best_draw(seed):
    # Reference of the selection: up to 20 draws from the same generator; the first with
    # min distance > K/4 and mean >= K/2 (the authors' test), else the largest (min, mean).
    classes, bits = 12, 16
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(20):
        centers = np.ones((classes, bits), np.float32)
        for row in centers:
            row[rng.permutation(bits)[: bits // 2]] = -1
        d = pairwise_hamming(centers)
        draws.append(((int(d.min()), float(d.mean())), centers))
    accepted = [c for (low, mean), c in draws if low > bits / 4 and mean >= bits / 2]
    want = accepted[0] if accepted else max(draws, key=lambda item: item[0])[1]
    np.testing.assert_array_equal(random_centers(classes, bits, np.random.default_rng(seed)), want)


def test_multi_label_centre_is_sign_of_sum_with_ties_from_the_tie_vector():
    rng = np.random.default_rng(4)
    centers, tie = generate_centers(40, 16, "random", seed=1)
    labels = (rng.random((20, 40)) < 0.1).astype(np.float32)
    labels[0, [3, 7]] = 1
    signs, labelled = example_centers(labels, centers, tie)
    for i in range(20):
        mean = centers[labels[i] > 0].mean(0) if labels[i].any() else np.zeros(16)
        want = np.where(mean > 0, 1, np.where(mean < 0, -1, tie))
        np.testing.assert_array_equal(signs[i], want)
        assert labelled[i] == labels[i].any()
    # One label: exactly that class's centre; class ids give the same as one-hot rows.
    ids = np.array([5, 0, 39])
    np.testing.assert_array_equal(example_centers(ids, centers, tie)[0], centers[ids])


@pytest.mark.parametrize("labels_kind", ["single", "multi"])
def test_loss_contract_and_pointwise_references(labels_kind):
    run_loss_test(CSQLoss, labels_kind=labels_kind, keys={"loss", "center", "quantization"})
    rng = np.random.default_rng(5)
    codes = tf.constant(rng.normal(size=(8, 16)).astype(np.float32))
    labels = tf.constant((rng.random((8, 6)) < 0.4).astype(np.float32))
    layer = CSQLoss(bits=16, num_classes=6, seed=2)
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


def test_config_round_trip_rebuilds_the_same_centres():
    layer = CSQLoss(
        bits=16,
        num_classes=50,
        seed=9,
        quantization_weight=0.05,
        center_method="auto",
        apply_tanh=False,
    )
    clone = CSQLoss.from_config(layer.get_config())
    np.testing.assert_array_equal(clone.centers.numpy(), layer.centers.numpy())
    np.testing.assert_array_equal(clone.tie_center.numpy(), layer.tie_center.numpy())
    assert clone.quantization_weight == 0.05 and clone.apply_tanh is False
    assert not layer.trainable_variables


def test_trains_through_the_cli(tmp_path):
    data_dir, workdir = tmp_path / "data", tmp_path / "run"
    run_train(
        str(data_dir),
        workdir,
        "--steps=6",
        "--method=csq",
        "--head=tanh",
        "--csq_apply_tanh=false",
        "--csq_quantization_weight=0.05",
    )
    metrics = read_json(workdir / "metrics.json")
    assert 0.0 <= metrics["map"] <= 1.0 and np.isfinite(metrics["map"])
    codes = read_codes_file(workdir / "codes.h5")
    assert codes.bits == 16 and codes.query.codes.shape == (30, 2)
    assert codes.query.codes.dtype == np.uint8
    features = codes.query.features
    assert np.all(np.abs(features) <= 1.0)  # tanh head
    unpacked = np.unpackbits(codes.query.codes, axis=1)[:, :16]
    np.testing.assert_array_equal(unpacked, (features >= 0).astype(np.uint8))
