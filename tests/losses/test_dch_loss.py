"""DCH loss (wsdhash/losses/dch.py): a value by hand, a numpy loop, the clamps, the
reference split, and fixtures from DeepHash-pytorch's DCHLoss.

Fixtures: the DCHLoss class of swuxyj/DeepHash-pytorch DCH.py (fetched, class source
executed unchanged) on (Z, Y) and (Z2, Y2) of fixture_checks.py, config batch_size 4 on
the CPU; produced by a scratch script outside the repository:

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python /tmp/fixtures_dch_dtsh/make_fixtures.py dch

It prints loss.item() and u.grad for (gamma, lambda) = (20, 0.1), (20, 0), (2, 0.1).
DCHLoss compares the batch with itself (no memory bank), self pairs included, so
wsdhash with include_self=True must give the same value and the same gradient.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from contracts import run_loss_test
from fixture_checks import DEEPHASH_INPUTS, check_torch_fixture

from wsdhash.losses.dch import DCHLoss, dch_terms

# DeepHash-pytorch DCHLoss(u, y, ind, config): (input, gamma, lambda) -> loss.item(), u.grad.
TORCH = {
    ("Z", 20.0, 0.1): (
        2.6964714527130127,
        [
            [0.08722389489412308, 0.06902122497558594, -0.2236727774143219, 0.04066373407840729],
            [0.04801228642463684, 0.05328672006726265, 0.006990659981966019, 0.0044805509969592094],
            [-0.04371549189090729, -0.13614925742149353, -0.06944871693849564, 0.2440638542175293],
            [0.2526589035987854, 0.031977422535419464, 0.1538640856742859, 0.21120527386665344],
        ],
    ),
    ("Z", 20.0, 0.0): (
        2.6949851512908936,
        [
            [0.08756838738918304, 0.06886464357376099, -0.22323434054851532, 0.040444515645504],
            [0.04781724885106087, 0.0536489263176918, 0.006684174761176109, 0.003951168619096279],
            [-0.044043704867362976, -0.1360398530960083, -0.06977692991495132, 0.24439206719398499],
            [0.25339847803115845, 0.03142085298895836, 0.1541309356689453, 0.21130439639091492],
        ],
    ),
    ("Z", 2.0, 0.1): (
        1.322467565536499,
        [
            [0.064674973487854, 0.035315752029418945, -0.19121113419532776, 0.025390535593032837],
            [0.030210744589567184, 0.04064448922872543, -0.00839952751994133, -0.05974038690328598],
            [-0.025693202391266823, -0.09389478713274002, -0.05627416446805, 0.1488010287284851],
            [0.18006157875061035, 0.015684902667999268, 0.097007617354393, 0.12888553738594055],
        ],
    ),
    ("Z2", 20.0, 0.1): (
        2.3936688899993896,
        [
            [
                0.030569080263376236,
                0.21397238969802856,
                0.18603280186653137,
                -0.0037331394851207733,
            ],
            [0.14549687504768372, -0.0528150275349617, -0.07847990095615387, -0.22845453023910522],
            [0.17781159281730652, -0.08400444686412811, -0.06881266832351685, 0.09245985746383667],
            [-0.10864405333995819, -0.15491178631782532, 0.013703721575438976, 0.0934343934059143],
        ],
    ),
    ("Z2", 20.0, 0.0): (
        2.3926455974578857,
        [
            [0.030524302273988724, 0.21460674703121185, 0.18559248745441437, -0.003494326025247574],
            [0.14607349038124084, -0.0532165989279747, -0.07849019765853882, -0.22922678291797638],
            [0.1777261197566986, -0.08360560238361359, -0.06775858998298645, 0.0927874743938446],
            [-0.10884135961532593, -0.15512371063232422, 0.013798726722598076, 0.09395326673984528],
        ],
    ),
    ("Z2", 2.0, 0.1): (
        1.1601885557174683,
        [
            [-0.01099654845893383, 0.18628083169460297, 0.15969599783420563, -0.03319918364286423],
            [
                0.041529588401317596,
                -0.021521814167499542,
                -0.04194503277540207,
                -0.1496279537677765,
            ],
            [0.08506828546524048, -0.02550230361521244, -0.04610785096883774, 0.07323328405618668],
            [-0.11285462975502014, -0.1291767954826355, -0.0023909062147140503, 0.1106557846069336],
        ],
    ),
}


@pytest.mark.parametrize("similar", [True, False])
def test_value_by_hand(similar):
    # u1 = (1, 1, 1, 1), u2 = (1, 1, 1, -1): cos = 1/2, d = K/2 (1 - 1/2) = 1; gamma = 2.
    # Without self pairs both pairs have the same similarity, so all weights are 1:
    # similar log(1 + d / gamma) = log 1.5, dissimilar log(1 + gamma / d) = log 3.
    # |u| is all ones for both: cos = 1 clamped to 0.99, d = 2 * 0.01, q = log(1.01).
    u = tf.constant([[1.0, 1, 1, 1], [1, 1, 1, -1]])
    labels = tf.constant([[1.0, 0], [1, 0]] if similar else [[1.0, 0], [0, 1]])
    cauchy, quantization = dch_terms(u, labels, gamma=2.0)
    pair = math.log(1.5) if similar else math.log(3.0)
    np.testing.assert_allclose(cauchy, [pair, pair], rtol=1e-6)
    np.testing.assert_allclose(quantization, [math.log(1.01)] * 2, rtol=1e-5)
    terms = DCHLoss(bits=4, num_classes=2, gamma=2.0, quantization_weight=0.5)(u, labels)
    np.testing.assert_allclose(terms["loss"], [pair + 0.5 * math.log(1.01)] * 2, rtol=1e-6)
    # Self pairs (similar, d = 0.02 after the clamp) included: in the dissimilar case 2
    # similar and 2 dissimilar pairs, all weighted 4 / 2; mean over each row's 2 pairs.
    with_self = dch_terms(u, labels, gamma=2.0, include_self=True)[0]
    self_pair = math.log(1.01)
    want = (self_pair + pair) / 2 if similar else (2 * self_pair + 2 * pair) / 2
    np.testing.assert_allclose(with_self, [want, want], rtol=1e-5)


def _reference(u, labels, ref_u, ref_labels, offset, gamma, lam, include_self):
    """Slow loop over the pairs (float64)."""
    bits = u.shape[1]

    def distance(a, b):
        cos = float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-4)
        return bits / 2 * (1 - min(cos, 0.99))

    refs = len(ref_u)
    valid = [[include_self or i != j for j in range(refs)] for i in range(refs)]
    sim = [[float(ref_labels[i] @ ref_labels[j] > 0) for j in range(refs)] for i in range(refs)]
    n1 = sum(sim[i][j] for i in range(refs) for j in range(refs) if valid[i][j])
    n0 = sum(1 - sim[i][j] for i in range(refs) for j in range(refs) if valid[i][j])
    out = []
    for a in range(len(u)):
        row, total, count = a + offset, 0.0, 0
        for j in range(refs):
            if not valid[row][j]:
                continue
            s = float(labels[a] @ ref_labels[j] > 0)
            w = 1.0 if not (n1 and n0) else ((n1 + n0) / n1 if s else (n1 + n0) / n0)
            d = distance(u[a], ref_u[j])
            total += w * (s * math.log1p(d / gamma) + (1 - s) * math.log1p(gamma / d))
            count += 1
        q = math.log1p(distance(np.abs(u[a]), np.ones(bits)) / gamma)
        out.append(total / count + lam * q)
    return np.array(out)


@pytest.mark.parametrize("include_self", [False, True])
def test_matches_slow_loop_with_references(include_self):
    rng = np.random.default_rng(0)
    refs = rng.normal(scale=0.8, size=(14, 6)).astype(np.float32)
    refs[7] = refs[5]  # identical codes: the cosine clamp keeps the loss finite
    ref_labels = (rng.random((14, 5)) < 0.3).astype(np.float32)
    ref_labels[3] = 0  # an unlabelled row: similar to nothing, itself included
    layer = DCHLoss(
        bits=6, num_classes=5, gamma=3.0, quantization_weight=0.3, include_self=include_self
    )
    got = layer(refs[4:9], ref_labels[4:9], ref_codes=refs, ref_labels=ref_labels, anchor_offset=4)[
        "loss"
    ]
    want = _reference(
        refs[4:9].astype(np.float64),
        ref_labels[4:9],
        refs.astype(np.float64),
        ref_labels,
        4,
        3.0,
        0.3,
        include_self,
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_one_sided_batches_use_unit_weights():
    # Every pair similar: no dissimilar pair, so w = 1 (not a division by zero).
    u = tf.constant([[1.0, 1, 1, 1], [1, 1, 1, -1], [1, -1, 1, 1]])
    labels = tf.constant([[1.0], [1.0], [1.0]])
    cauchy = dch_terms(u, labels, gamma=2.0)[0]
    # Row 0 with rows 1 and 2: cos = 1/2, d = 1, pair log(1 + 1/2); rows 1 and 2: cos = 0,
    # d = 2, pair log(1 + 2/2).
    mixed = (math.log(1.5) + math.log(2.0)) / 2
    np.testing.assert_allclose(cauchy, [math.log(1.5), mixed, mixed], rtol=1e-6)


def test_identical_and_zero_codes_are_finite():
    u = tf.Variable([[0.3, -0.2, 0.9, 0.1], [0.3, -0.2, 0.9, 0.1], [0.0, 0.0, 0.0, 0.0]])
    labels = tf.constant([[1.0, 0], [0, 1], [1, 0]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(DCHLoss(bits=4, num_classes=2)(u, labels)["loss"])
    assert np.isfinite(loss.numpy())
    assert np.all(np.isfinite(tape.gradient(loss, u).numpy()))


@pytest.mark.parametrize("key", sorted(TORCH))
def test_matches_deephash_pytorch(key):
    name, gamma, lam = key
    codes, labels = DEEPHASH_INPUTS[name]
    value, grad = TORCH[key]
    layer = DCHLoss(bits=4, num_classes=3, gamma=gamma, quantization_weight=lam, include_self=True)
    check_torch_fixture(layer, codes, labels, {"loss": value}, grad)


@pytest.mark.parametrize(
    ("labels_kind", "include_self"), [("single", False), ("multi", False), ("multi", True)]
)
def test_loss_contract_and_reference_split(labels_kind, include_self):
    run_loss_test(
        DCHLoss,
        labels_kind=labels_kind,
        include_self=include_self,
        keys={"loss", "cauchy", "quantization"},
    )


def test_config_round_trip():
    layer = DCHLoss(bits=8, num_classes=3, gamma=5.0, quantization_weight=0.5, include_self=True)
    clone = DCHLoss.from_config(layer.get_config())
    assert (clone.gamma, clone.quantization_weight, clone.include_self) == (5.0, 0.5, True)
    assert not layer.weights
    with pytest.raises(ValueError, match="gamma"):
        DCHLoss(bits=8, num_classes=3, gamma=0.0)
