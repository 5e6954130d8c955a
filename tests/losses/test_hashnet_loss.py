"""HashNet loss (wsdhash/losses/hashnet.py): a value by hand, a numpy loop, gradients,
the reference split, the beta schedule through `HashNet.after_step` and a checkpoint,
and fixtures from the authors' and DeepHash-pytorch's PyTorch losses.

Fixtures, on Z and Y below, by a scratch script outside the repository:

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python /tmp/fixtures/make_fixtures.py hashnet

It runs (1) the HashNetLoss class of swuxyj/DeepHash-pytorch HashNet.py (class source
executed unchanged) with config["alpha"] = 0.1 and criterion.scale = 1.5 on z = Z, and
(2) thuml/HashNet pytorch/src/loss.py `pairwise_loss(u, u, y, y, sigmoid_param=2.5,
l_threshold=15, class_num=c)` with u = tanh(Z) (their network's tanh at scale 1), for
c = 1 and 5; it prints loss.item() and the gradient with respect to Z. Both compare the
batch with itself, self pairs included: `include_self=True` here.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from contracts import run_loss_test

from wsdhash.losses.hashnet import HashNetLoss, hashnet_terms, scale_at
from wsdhash.methods.hashnet import HashNet

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

# (layer arguments, beta) -> (their loss.item(), their d loss / d Z).
FIXTURES = [
    (
        {"alpha": 0.1},
        1.5,
        1.3845651149749756,  # DeepHash-pytorch HashNetLoss
        [
            [
                0.015837185084819794,
                0.001721391687169671,
                -0.0487750880420208,
                0.00018808519234880805,
            ],
            [
                0.005133046302944422,
                0.017984023317694664,
                -0.0006752778426744044,
                -0.016834037378430367,
            ],
            [
                -0.0013573946198448539,
                -0.009529265575110912,
                0.009581802412867546,
                0.01099148765206337,
            ],
            [
                0.04405979439616203,
                -0.006226071156561375,
                -0.0009389553451910615,
                0.0076398663222789764,
            ],
        ],
    ),
    (
        {"alpha": 2.5, "class_num": 1.0},
        1.0,
        1.187331199645996,  # thuml pairwise_loss
        [
            [0.28521519899368286, -0.028499996289610863, -0.5204952359199524, 0.023391321301460266],
            [-0.06718944758176804, 0.2414013147354126, 0.028286563232541084, -0.40260782837867737],
            [0.024779818952083588, -0.1275540292263031, -0.09776503592729568, 0.2761053442955017],
            [0.5194953083992004, -0.15871059894561768, -0.09372935444116592, 0.2446388304233551],
        ],
    ),
    (
        {"alpha": 2.5, "class_num": 5.0},
        1.0,
        1.1829948425292969,  # thuml pairwise_loss
        [
            [0.2679259479045868, -0.07580668479204178, -0.4719887673854828, 0.013519865460693836],
            [-0.1384342908859253, 0.3762267231941223, 0.05150911584496498, -0.6937185525894165],
            [
                0.0062452564015984535,
                -0.045727334916591644,
                -0.029510224238038063,
                0.08895699679851532,
            ],
            [0.4181766211986542, -0.21399900317192078, -0.13493989408016205, 0.12847203016281128],
        ],
    ),
]


def sp(x):
    return math.log1p(math.exp(x))


def test_value_by_hand():
    # u = tanh(z) = .5 * (1, 1, 1, 1), .5 * (1, 1, -1, 1), .5 * (-1, -1, -1, -1); alpha = 2:
    # theta_12 = 1, theta_13 = -2, theta_23 = -1. Rows 1, 2 share class 0; row 3 is class 1.
    # Ordered non-self pairs: |P1| = 2 (similar), |P0| = 4; per anchor R = 3 times
    # (sum of its similar pair losses / 2 + sum of its dissimilar ones / 4).
    a = math.atanh(0.5)
    z = tf.constant([[a, a, a, a], [a, a, -a, a], [-a, -a, -a, -a]])
    labels = tf.constant([[1.0, 0], [1, 0], [0, 1]])
    got = hashnet_terms(z, labels, alpha=2.0)
    want = [
        3 * ((sp(1) - 1) / 2 + sp(-2) / 4),
        3 * ((sp(1) - 1) / 2 + sp(-1) / 4),
        3 * (sp(-2) + sp(-1)) / 4,
    ]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Fixed positive weight c = 3: R * (c * similar + dissimilar) / (c |P1| + |P0|).
    got = hashnet_terms(z, labels, alpha=2.0, class_num=3.0)
    want = [
        3 * (3 * (sp(1) - 1) + sp(-2)) / 10,
        3 * (3 * (sp(1) - 1) + sp(-1)) / 10,
        3 * (sp(-2) + sp(-1)) / 10,
    ]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # beta = 2 doubles z inside tanh; default alpha = 10 / K.
    layer = HashNetLoss(bits=4, num_classes=2)
    layer.scale.assign(2.0)
    np.testing.assert_allclose(
        layer(z / 2, labels)["loss"], hashnet_terms(z, labels, alpha=2.5), rtol=1e-6
    )


def _reference(z, labels, ref_z, ref_labels, offset, alpha, beta, class_num, include_self):
    u, ref_u = np.tanh(beta * z), np.tanh(beta * ref_z)
    r = len(ref_z)

    def pairs(i_rows, i_off):
        for a, _row in enumerate(i_rows):
            for j in range(r):
                if include_self or a + i_off != j:
                    yield a, j

    ref_s = ref_labels @ ref_labels.T > 0
    counted = list(pairs(ref_u, 0))
    p1 = sum(1 for a, j in counted if ref_s[a, j])
    p0 = len(counted) - p1
    out = np.zeros(len(z))
    for a, j in pairs(u, offset):
        theta = alpha * float(u[a] @ ref_u[j])
        s = float(labels[a] @ ref_labels[j] > 0)
        loss = sp(theta) - s * theta
        if class_num > 0:
            out[a] += r * (class_num if s else 1.0) * loss / (class_num * p1 + p0)
        else:
            out[a] += r * loss / (p1 if s else p0)
    return out


@pytest.mark.parametrize("class_num,include_self", [(0.0, False), (0.0, True), (4.0, False)])
def test_matches_slow_loop_with_references(class_num, include_self):
    rng = np.random.default_rng(0)
    refs = rng.normal(size=(12, 8)).astype(np.float32)
    ref_labels = (rng.random((12, 4)) < 0.35).astype(np.float32)
    layer = HashNetLoss(
        bits=8, num_classes=4, alpha=0.7, class_num=class_num, include_self=include_self
    )
    layer.scale.assign(1.3)
    got = layer(refs[3:8], ref_labels[3:8], ref_codes=refs, ref_labels=ref_labels, anchor_offset=3)[
        "loss"
    ]
    want = _reference(
        refs[3:8].astype(np.float64),
        ref_labels[3:8],
        refs.astype(np.float64),
        ref_labels,
        3,
        0.7,
        1.3,
        class_num,
        include_self,
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("arguments,beta,value,grad", FIXTURES)
def test_matches_the_authors_and_deephash_pytorch(arguments, beta, value, grad):
    z = tf.Variable(Z)
    layer = HashNetLoss(bits=4, num_classes=3, include_self=True, **arguments)
    layer.scale.assign(beta)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(layer(z, tf.constant(Y))["loss"])
    np.testing.assert_allclose(loss.numpy(), value, rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss, z), grad, rtol=1e-5, atol=1e-7)


def test_large_inner_products_stay_finite():
    z = tf.Variable(np.full((3, 4), 20.0, np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(hashnet_terms(z, tf.constant([[1.0, 0], [0, 1], [0, 1]]), alpha=10.0))
    assert np.isfinite(loss.numpy()) and np.all(np.isfinite(tape.gradient(loss, z)))


def test_beta_schedule_and_resume(tmp_path):
    # The authors' layer: forward pass t uses (1 + 0.005 T)^0.5, T = t rounded down to 200.
    assert scale_at(1) == scale_at(199) == 1.0
    assert scale_at(200) == scale_at(399) == math.sqrt(2.0)
    assert scale_at(400) == pytest.approx(math.sqrt(3.0))

    from wsdhash.training.config import MethodConfig, ModelConfig, TrainConfig

    config = TrainConfig(
        model=ModelConfig(bits=4),
        method=MethodConfig(name="hashnet", options={"step_size": 3}),
    )
    method = HashNet(config)
    layer = method.build_loss(2)
    seen = []
    for step in range(1, 8):  # forward pass `step` reads beta, then after_step(step)
        seen.append(float(layer.scale.numpy()))
        method.after_step(step, None, layer)
    want = [scale_at(t, step_size=3) for t in range(1, 8)]
    np.testing.assert_allclose(seen, want, rtol=1e-6)
    # The checkpoint after step 4 holds the beta of step 5; a restored layer goes on.
    layer.scale.assign(scale_at(5, step_size=3))
    path = tf.train.Checkpoint(loss=layer).write(str(tmp_path / "ckpt"))
    fresh = method.build_loss(2)
    tf.train.Checkpoint(loss=fresh).read(path).assert_consumed()
    assert float(fresh.scale.numpy()) == pytest.approx(scale_at(5, step_size=3))
    assert not fresh.trainable_weights


@pytest.mark.parametrize("labels_kind", ["single", "multi"])
@pytest.mark.parametrize("include_self", [False, True])
def test_loss_contract_and_reference_split(labels_kind, include_self):
    run_loss_test(
        HashNetLoss, labels_kind=labels_kind, keys={"loss", "scale"}, include_self=include_self
    )


def test_config_round_trip():
    layer = HashNetLoss(
        bits=8,
        num_classes=3,
        alpha=0.4,
        class_num=5.0,
        include_self=True,
        step_size=10,
        gamma=0.01,
        power=0.75,
    )
    clone = HashNetLoss.from_config(layer.get_config())
    assert (clone.alpha, clone.class_num, clone.include_self) == (0.4, 5.0, True)
    assert (clone.step_size, clone.gamma, clone.power) == (10, 0.01, 0.75)
