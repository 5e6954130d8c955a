"""IDHN loss (wsdhash/losses/idhn.py): a value by hand, a numpy loop, the reference
split, and fixtures from the authors' hashing_loss and DeepHash-pytorch's IDHN loss.

Fixtures, produced by scratch scripts outside the repository on the outputs 2 Z and the
labels Y below (row pairs 0-1 and 1-3 are soft: cosine 1/sqrt 2):
    * the authors' TensorFlow hashing_loss (pectinid16/IDHN train.py, function source
      unchanged, run with tf.compat.v1 names in TF2 eager; softsign applied before it as
      their network does; alpha 0.1, belta 5, gama 0.1, m = K = 4); it compares the batch
      with itself and differentiates both codes of a pair:
          .venv/bin/python /tmp/fixtures_dpn_dfh_idhn/authors_idhn.py
    * DeepHash-pytorch IDHN.py's loss class (named DPSHLoss there; class source executed
      unchanged) with num_train = 4, ind = arange(4), so its memory bank is this batch
      (detached); alpha 0.5, gamma 0.1, lambda 0.1:
          python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
          /tmp/torchenv/bin/python /tmp/fixtures_dpn_dfh_idhn/make.py idhn
Each prints the loss value and the gradient with respect to the pre-softsign outputs.
"""

import math

import numpy as np
import tensorflow as tf
from contracts import run_loss_test

from wsdhash.losses.idhn import IDHNLoss, cosine_similarity, idhn_terms

Z = 2.0 * np.array(
    [
        [0.5, -1.0, 0.25, 2.0],
        [-0.75, 0.5, 1.5, -0.25],
        [1.25, 0.75, -0.5, 0.5],
        [0.1, -0.3, -1.2, 0.8],
    ],
    np.float32,
)
Y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]], np.float32)

AUTHORS_VALUE = 0.5276992917060852
AUTHORS_GRAD = [
    [0.016232604160904884, 0.0035471096634864807, -0.05982544273138046, 0.0034427493810653687],
    [0.008503134362399578, 0.0032401690259575844, -0.002981375902891159, 0.014711319468915462],
    [0.0007703292649239302, -0.01508827693760395, 0.002292847726494074, 0.02502383105456829],
    [0.08192946761846542, 0.0033869966864585876, 0.000844049034640193, 0.01646682806313038],
]
DEEPHASH_VALUE = 0.6312853693962097
DEEPHASH_GRAD = [
    [0.0026883785612881184, 0.0011075271759182215, -0.017677050083875656, 0.0003567204112187028],
    [0.0021715585608035326, 0.0023797661997377872, -0.0009632750879973173, -0.0008396984776481986],
    [-0.0008491140324622393, -0.0037754997611045837, 0.0035416274331510067, 0.00205130223184824],
    [0.014997578226029873, 0.0010004718787968159, 0.00011949855252169073, 0.0021196561865508556],
]


def sp(x):
    return math.log1p(math.exp(x))


def test_value_by_hand():
    # Codes given directly (no softsign), K = 4, beta = 4: theta = u_i . u_j.
    # u1 = (1, 1, 1, 1), u2 = (.5, -.5, .5, -.5): u1.u1 = 4, u1.u2 = 0, u2.u2 = 1.
    # Labels (1, 1, 0) and (1, 0, 0): cosine 1/sqrt 2, a soft pair:
    # K ((0 + 4) / 8 - 1/sqrt 2)^2. Self pairs: s = 1, likelihood sp(theta) - theta.
    u = tf.constant([[1.0, 1, 1, 1], [0.5, -0.5, 0.5, -0.5]])
    labels = tf.constant([[1.0, 1, 0], [1, 0, 0]])
    likelihood, soft, quantization = idhn_terms(u, labels, beta=4.0, apply_softsign=False)
    c = 1 / math.sqrt(2)
    np.testing.assert_allclose(likelihood, [(sp(4) - 4) / 2, (sp(1) - 1) / 2], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(soft, [4 * (0.5 - c) ** 2 / 2] * 2, rtol=1e-5)
    np.testing.assert_allclose(quantization, [0.0, 0.5], rtol=1e-6)
    terms = IDHNLoss(
        bits=4,
        num_classes=3,
        beta=4.0,
        soft_weight=0.3,
        quantization_weight=0.2,
        apply_softsign=False,
    )(u, labels)
    want = np.array(likelihood) + 0.3 * np.array(soft) + 0.2 * np.array(quantization)
    np.testing.assert_allclose(terms["loss"], want, rtol=1e-6)
    # Dissimilar labels: a hard pair with s = 0, sp(0) = log 2.
    likelihood, soft, _ = idhn_terms(
        u, tf.constant([[1.0, 0, 0], [0, 1, 0]]), beta=4.0, apply_softsign=False
    )
    np.testing.assert_allclose(
        likelihood, [(sp(4) - 4 + sp(0)) / 2, (sp(1) - 1 + sp(0)) / 2], rtol=1e-6
    )
    np.testing.assert_array_equal(soft, [0.0, 0.0])


def test_cosine_of_an_unlabelled_row_is_zero():
    s = cosine_similarity(tf.constant([[1.0, 1, 0], [0, 0, 0]]), tf.constant([[1.0, 0, 0]]))
    np.testing.assert_allclose(s, [[1 / math.sqrt(2)], [0.0]], rtol=1e-6)


def _reference(z, labels, ref_z, ref_labels, beta, gamma, lam, scaled):
    """Slow loop over the pairs."""
    u, ref_u = z / (1 + np.abs(z)), ref_z / (1 + np.abs(ref_z))
    k = u.shape[1]
    out = []
    for i in range(len(u)):
        total = 0.0
        for j in range(len(ref_u)):
            norm = np.linalg.norm(labels[i]) * np.linalg.norm(ref_labels[j])
            s = float(labels[i] @ ref_labels[j] / norm) if norm > 0 else 0.0
            inner = float(u[i] @ ref_u[j])
            theta = beta / k * inner
            if s > 0.99 or s < 0.01:
                total += sp(theta) - s * theta
            else:
                t = theta if scaled else inner
                total += gamma * k * ((t + k) / (2 * k) - s) ** 2
        out.append(total / len(ref_u) + lam * float(np.mean(np.abs(np.abs(u[i]) - 1))))
    return np.array(out)


def test_matches_slow_loop_with_references():
    rng = np.random.default_rng(0)
    refs = rng.normal(scale=2.0, size=(14, 12)).astype(np.float32)
    ref_labels = (rng.random((14, 5)) < 0.4).astype(np.float32)
    ref_labels[3] = 0  # an unlabelled row: s = 0 with everything, itself included
    r64 = refs.astype(np.float64)
    for scaled in (False, True):
        layer = IDHNLoss(
            bits=12,
            num_classes=5,
            beta=3.0,
            soft_weight=0.2,
            quantization_weight=0.3,
            soft_scaled=scaled,
        )
        got = layer(
            refs[2:9], ref_labels[2:9], ref_codes=refs, ref_labels=ref_labels, anchor_offset=2
        )["loss"]
        want = _reference(r64[2:9], ref_labels[2:9], r64, ref_labels, 3.0, 0.2, 0.3, scaled)
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_matches_the_authors_tensorflow_code():
    # Defaults are the authors'; both codes of each pair are differentiated, as here.
    z = tf.Variable(Z)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(IDHNLoss(bits=4, num_classes=3)(z, Y)["loss"])
    np.testing.assert_allclose(loss.numpy(), AUTHORS_VALUE, rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss, z), AUTHORS_GRAD, rtol=1e-5, atol=1e-7)


def test_matches_deephash_pytorch():
    # Their alpha = 0.5 is beta = 0.5 K = 2, their soft term on theta with gamma_dh = 0.1
    # is soft_scaled and gamma = 4 K gamma_dh = 1.6. Their bank is detached: their
    # gradient is ours with the references held fixed. Their cosine adds 1e-5 to the
    # norm product (s of identical rows 0.99999): values agree to ~1e-5.
    layer = IDHNLoss(bits=4, num_classes=3, beta=2.0, soft_weight=1.6, soft_scaled=True)
    z = tf.Variable(Z)
    with tf.GradientTape() as tape:
        refs = tf.stop_gradient(tf.convert_to_tensor(z))
        loss = tf.reduce_mean(layer(z, Y, ref_codes=refs, ref_labels=Y)["loss"])
    np.testing.assert_allclose(loss.numpy(), DEEPHASH_VALUE, rtol=2e-5)
    np.testing.assert_allclose(tape.gradient(loss, z), DEEPHASH_GRAD, rtol=1e-3, atol=2e-6)


def test_loss_contract_and_reference_split():
    for labels_kind in ("single", "multi"):
        run_loss_test(
            IDHNLoss, labels_kind=labels_kind, keys={"loss", "likelihood", "soft", "quantization"}
        )


def test_config_round_trip():
    layer = IDHNLoss(
        bits=8, num_classes=3, beta=2.0, soft_weight=0.5, soft_scaled=True, apply_softsign=False
    )
    clone = IDHNLoss.from_config(layer.get_config())
    assert (clone.beta, clone.soft_weight, clone.soft_scaled, clone.apply_softsign) == (
        2.0,
        0.5,
        True,
        False,
    )
