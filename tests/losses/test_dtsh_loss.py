"""DTSH loss (wsdhash/losses/dtsh.py): a value by hand, a numpy loop over triplets, the
reference split, and fixtures from DeepHash-pytorch's DTSHLoss.

Fixtures: the DTSHLoss class of swuxyj/DeepHash-pytorch DTSH.py (fetched, class source
executed unchanged) on (Z, Y) and (Z2, Y2) of fixture_checks.py; produced by a scratch
script outside the repository:

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python /tmp/fixtures_dch_dtsh/make_fixtures.py dtsh

It prints loss.item() and u.grad for alpha = 5 with lambda = 1 and lambda = 0. Their
loss is wsdhash's with scale = 1, margin = alpha, include_self = True (the batch is its
own reference set, no bank), so value and gradient must be equal.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from contracts import run_loss_test
from fixture_checks import DEEPHASH_INPUTS, check_torch_fixture

from wsdhash.losses.dtsh import DTSHLoss, anchors_with_triplets, dtsh_terms

# DeepHash-pytorch DTSHLoss(u, y, ind, config), alpha = 5: (input, lambda) -> loss, u.grad.
TORCH = {
    ("Z", 1.0): (
        4.529521465301514,
        [
            [0.25445929169654846, 0.1355789750814438, -0.8221734762191772, 0.10603025555610657],
            [0.32780876755714417, 0.3637012243270874, -0.02963293343782425, -0.3240751028060913],
            [-0.6153228282928467, -0.4645938277244568, 0.4971134066581726, 0.17197948694229126],
            [0.3918546438217163, -0.02624686062335968, -0.08515883982181549, 0.4049285650253296],
        ],
    ),
    ("Z", 0.0): (
        4.220615386962891,
        [
            [0.31695929169654846, 0.1355789750814438, -0.7284234762191772, -0.018969744443893433],
            [0.29655876755714417, 0.4262012243270874, -0.09213293343782425, -0.4178251028060913],
            [-0.6465728282928467, -0.4333438277244568, 0.4346134066581726, 0.23447948694229126],
            [0.5043546557426453, -0.11374685913324356, -0.06015883386135101, 0.42992857098579407],
        ],
    ),
    ("Z2", 1.0): (
        4.876175880432129,
        [
            [-0.1062917560338974, 0.4079459309577942, 0.4881928563117981, -0.0428314208984375],
            [
                -0.15748637914657593,
                -0.19223880767822266,
                -0.13252584636211395,
                -0.22253799438476562,
            ],
            [0.43761926889419556, 0.14205163717269897, -0.23719948530197144, 0.11722049862146378],
            [-0.5498591661453247, -0.31211936473846436, 0.13094443082809448, 0.23492810130119324],
        ],
    ),
    ("Z2", 0.0): (
        4.5936760902404785,
        [
            [-0.09379175305366516, 0.5079458951950073, 0.41319286823272705, -0.03033141978085041],
            [
                -0.06998638808727264,
                -0.16723880171775818,
                -0.08252584934234619,
                -0.32253801822662354,
            ],
            [0.37511926889419556, 0.10455163568258286, -0.12469948828220367, 0.1922205090522766],
            [-0.5498591661453247, -0.3621193468570709, 0.11844442039728165, 0.3224281072616577],
        ],
    ),
}


def _softplus(x):
    return math.log1p(math.exp(x))


def test_value_by_hand():
    # Classes [0, 0, 1]; u0 = (1, 1), u1 = (1, 0), u2 = (0, 1); theta = u.u / 2, margin 1.
    # Anchor 0: p = 1, n = 2: theta 1/2 - 1/2 - 1 = -1 -> softplus(1).
    # Anchor 1: p = 0, n = 2: theta 1/2 - 0 - 1 = -1/2 -> softplus(1/2).
    # Anchor 2: no positive (itself excluded) -> 0. A = 2 anchors with triplets, R = 3.
    u = tf.constant([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    labels = tf.constant([0, 0, 1])
    triplet, quantization = dtsh_terms(u, labels, margin=1.0, num_classes=2)
    want = [1.5 * _softplus(1.0), 1.5 * _softplus(0.5), 0.0]
    np.testing.assert_allclose(triplet, want, rtol=1e-6)
    # sign(0) = +1: u1 -> (1, 1), u2 -> (1, 1): one bit off by 1, mean over 2 bits.
    np.testing.assert_allclose(quantization, [0.0, 0.5, 0.5], rtol=1e-6)
    terms = DTSHLoss(bits=2, num_classes=2, margin=1.0, quantization_weight=0.2)(u, labels)
    np.testing.assert_allclose(terms["loss"], np.array(want) + [0.0, 0.1, 0.1], rtol=1e-6)
    # The default margin is K / 2 = 1 here.
    default = DTSHLoss(bits=2, num_classes=2)(u, labels)["triplet"]
    np.testing.assert_allclose(default, want, rtol=1e-6)


def _reference(u, labels, ref_u, ref_labels, offset, margin, scale, lam, include_self):
    """Slow loop over the triplets (float64)."""
    refs = len(ref_u)

    def sets(row, label_row):
        pos = [
            j for j in range(refs) if ref_labels[j] @ label_row > 0 and (include_self or j != row)
        ]
        neg = [j for j in range(refs) if not ref_labels[j] @ label_row > 0]
        return pos, neg

    with_triplets = sum(all(sets(r, ref_labels[r])) for r in range(refs))
    out = []
    for a in range(len(u)):
        pos, neg = sets(a + offset, labels[a])
        total = 0.0
        for p in pos:
            for n in neg:
                t = scale * (u[a] @ ref_u[p]) - scale * (u[a] @ ref_u[n]) - margin
                total += _softplus(-t)
        mean = total / (len(pos) * len(neg)) if pos and neg else 0.0
        b = np.where(u[a] >= 0, 1.0, -1.0)
        out.append(refs * mean / with_triplets + lam * float(np.mean((u[a] - b) ** 2)))
    return np.array(out)


@pytest.mark.parametrize("include_self", [False, True])
def test_matches_slow_loop_with_references(include_self):
    rng = np.random.default_rng(0)
    refs = np.tanh(rng.normal(scale=1.5, size=(14, 6))).astype(np.float32)
    ref_labels = (rng.random((14, 5)) < 0.3).astype(np.float32)
    ref_labels[3] = 0  # an unlabelled row: no positive, a negative of every anchor
    layer = DTSHLoss(
        bits=6,
        num_classes=5,
        margin=2.0,
        scale=0.7,
        quantization_weight=0.3,
        include_self=include_self,
    )
    got = layer(refs[2:9], ref_labels[2:9], ref_codes=refs, ref_labels=ref_labels, anchor_offset=2)[
        "loss"
    ]
    want = _reference(
        refs[2:9].astype(np.float64),
        ref_labels[2:9],
        refs.astype(np.float64),
        ref_labels,
        2,
        2.0,
        0.7,
        0.3,
        include_self,
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_batch_without_triplets_gives_zero():
    # One class only: no negatives anywhere, A = 0; the triplet term is 0, not NaN.
    u = tf.constant([[0.5, -0.5], [0.2, 0.9]])
    triplet, _ = dtsh_terms(u, tf.constant([1, 1]), num_classes=2)
    np.testing.assert_array_equal(triplet.numpy(), [0.0, 0.0])
    assert anchors_with_triplets(tf.constant([[1.0], [1.0]])).numpy() == 0.0


@pytest.mark.parametrize("key", sorted(TORCH))
def test_matches_deephash_pytorch(key):
    name, lam = key
    codes, labels = DEEPHASH_INPUTS[name]
    value, grad = TORCH[key]
    layer = DTSHLoss(
        bits=4, num_classes=3, margin=5.0, scale=1.0, quantization_weight=lam, include_self=True
    )
    check_torch_fixture(layer, codes, labels, {"loss": value}, grad)


@pytest.mark.parametrize(
    ("labels_kind", "include_self"), [("single", False), ("multi", False), ("multi", True)]
)
def test_loss_contract_and_reference_split(labels_kind, include_self):
    run_loss_test(
        DTSHLoss,
        labels_kind=labels_kind,
        include_self=include_self,
        keys={"loss", "triplet", "quantization"},
    )


def test_config_round_trip():
    layer = DTSHLoss(
        bits=8, num_classes=3, margin=3.0, scale=1.0, quantization_weight=0.5, include_self=True
    )
    clone = DTSHLoss.from_config(layer.get_config())
    assert (clone.margin, clone.scale, clone.quantization_weight, clone.include_self) == (
        3.0,
        1.0,
        0.5,
        True,
    )
    assert not layer.weights
