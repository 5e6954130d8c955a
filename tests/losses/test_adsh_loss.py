"""Tests for wsdhash.losses.adsh: hand-worked values, slow loop references for the loss
terms and the discrete cyclic coordinate descent (DCC), its descent invariant, fixtures
from the original code, the two-replica split and config round trips.

The fixtures come from a scratch script outside the repository that runs the authors'
ADSH_pytorch loss (jiangqy/ADSH-AAAI2018, utils/adsh_loss.py with .cuda() removed, and
calc_sim of ADSH_CIFAR_10.py), swuxyj/DeepHash-pytorch ADSH.py's calc_sim, training-loop
loss (num_train set to N) and DCC loop, and the authors' numpy DCC loop, on CPU with
torch 2.13.0, inputs as in `_fixture_inputs`:

    /tmp/torchenv/bin/python /tmp/fixtures_adsh/make_fixtures.py
"""

import numpy as np
import pytest
import tensorflow as tf

from wsdhash.losses import adsh
from wsdhash.losses.adsh import ADSHLoss


def _layer(db_codes, db_labels, **kwargs):
    layer = ADSHLoss(
        bits=db_codes.shape[1],
        num_classes=db_labels.shape[1],
        num_database_items=len(db_codes),
        **kwargs,
    )
    layer.set_database_codes(db_codes)
    layer.set_database_labels(db_labels)
    return layer


def _random_case(seed=0, n=11, k=6, c=4, b=5):
    rng = np.random.default_rng(seed)
    db_codes = np.where(rng.random((n, k)) < 0.5, -1.0, 1.0).astype(np.float32)
    db_labels = (rng.random((n, c)) < 0.35).astype(np.float32)
    db_labels[0, 0] = 1
    rows = rng.choice(n, size=b, replace=False)
    codes = np.tanh(rng.normal(size=(b, k))).astype(np.float32)
    return db_codes, db_labels, rows, codes


# ---------------------------------------------------------------------------------------
# Hand-worked values.


def test_two_by_two_by_hand():
    # V = [[1, 1], [1, -1]], labels {0} and {1}; K = N = 2, gamma = 2, S = +-1.
    # Anchor 0: u = (.5, .5), {0}, row 0: u.v = (1, 0), K S = (2, -2) -> 1 + 4 = 5, / 2;
    #   quantization ((1 - .5)^2 + (1 - .5)^2) / 2 = .25; loss 2.5 + 2 * .25 = 3.
    # Anchor 1: u = (1, 0), {0, 1}, row 1: u.v = (1, 1), K S = (2, 2) -> 2, / 2 = 1;
    #   quantization ((1 - 1)^2 + (-1 - 0)^2) / 2 = .5; loss 1 + 2 * .5 = 2.
    layer = _layer(
        np.array([[1, 1], [1, -1]], np.float32),
        np.eye(2, dtype=np.float32),
        gamma=2.0,
        soft_constraint="none",
    )
    codes = np.array([[0.5, 0.5], [1.0, 0.0]], np.float32)
    labels = np.array([[1, 0], [1, 1]], np.float32)
    out = layer(codes, labels, example_index=np.array([0, 1]))
    np.testing.assert_allclose(out["similarity"], [2.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(out["quantization"], [0.25, 0.5], atol=1e-6)
    np.testing.assert_allclose(out["loss"], [3.0, 2.0], atol=1e-6)


def test_dcc_two_by_two_by_hand():
    # U = [[.5, .5]] at row 0, S = [[1, -1]], gamma = 1, V = 0.
    # Q = -4 S^T U - 2 Ubar = [[-2, -2], [2, 2]] + [[-1, -1], [0, 0]] = [[-3, -3], [2, 2]].
    # Bit 0: V_{-0} = 0 -> -sign(-3, 2) = (1, -1). Bit 1: 2 (1, -1) (.5 * .5) + (-3, 2)
    # = (-2.5, 1.5) -> (1, -1).
    new = adsh.dcc_update(np.zeros((2, 2)), [[0.5, 0.5]], [0], [[1.0, -1.0]], 1.0)
    np.testing.assert_array_equal(new, [[1, 1], [-1, -1]])
    assert new.dtype == np.float32


def test_dcc_sign_zero_gives_plus_one():
    # U = 0 gives Q = 0 and every argument 0: the originals' sign(0) = 0, here +1.
    new = adsh.dcc_update(np.zeros((3, 2)), np.zeros((2, 2)), [0, 2], np.ones((2, 3)), 200.0)
    np.testing.assert_array_equal(new, np.ones((3, 2)))


def test_soft_ratio_and_similarity_matrix():
    sample = np.array([[1, 0], [0, 1]], np.float32)
    database = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    # similar pairs: (0,0), (0,1), (1,2) -> 3 of 6, r = 1.
    assert adsh.soft_ratio(sample, database) == 1.0
    assert adsh.soft_ratio(sample[:1], database) == 2.0
    np.testing.assert_array_equal(adsh.similarity_matrix(sample[:1], database), [[1.0, 1.0, -2.0]])
    np.testing.assert_array_equal(
        adsh.similarity_matrix(sample[:1], database, soft=False), [[1.0, 1.0, -1.0]]
    )
    assert adsh.soft_ratio(database[:2], database[:2]) == 0.0  # no dissimilar pair
    # Counted block by block (database rows 1 at a time): the same ratios.
    assert adsh.soft_ratio(sample, database, block_items=1) == 1.0
    assert adsh.soft_ratio(sample[:1], database, block_items=2) == 2.0


@pytest.mark.parametrize("soft", [True, False])
def test_similarity_products_blocks_equal_the_whole_matrix(soft):
    rng = np.random.default_rng(3)
    sample = (rng.random((9, 4)) < 0.4).astype(np.float32)
    database = (rng.random((23, 4)) < 0.4).astype(np.float32)
    u = np.tanh(rng.normal(size=(9, 6)))
    whole = adsh.similarity_matrix(sample, database, soft=soft).astype(np.float64).T @ u
    for block_items in (1, 5, 23, 100):
        got = adsh.similarity_products(sample, database, u, soft=soft, block_items=block_items)
        assert got.shape == (23, 6) and got.dtype == np.float64
        # The same sums; BLAS may order them differently for another shape.
        np.testing.assert_allclose(got, whole, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------
# Slow references.


def _slow_terms(codes, rows, db_codes, db_labels, labels, r, gamma):
    n, k = db_codes.shape
    similarity, quantization = [], []
    for i in range(len(codes)):
        total = 0.0
        for j in range(n):
            shared = any(labels[i, c] > 0 and db_labels[j, c] > 0 for c in range(len(labels[i])))
            s = 1.0 if shared else -r
            dot = sum(float(codes[i, b]) * float(db_codes[j, b]) for b in range(k))
            total += (dot - k * s) ** 2
        similarity.append(total / n)
        quantization.append(
            sum((float(db_codes[rows[i], b]) - float(codes[i, b])) ** 2 for b in range(k)) / n
        )
    similarity, quantization = np.array(similarity), np.array(quantization)
    return similarity, quantization, similarity + gamma * quantization


def _slow_ratio(a, b):
    similar = sum(1 for x in a for y in b if any(x[c] > 0 and y[c] > 0 for c in range(len(x))))
    dissimilar = len(a) * len(b) - similar
    return similar / dissimilar if dissimilar else 0.0


@pytest.mark.parametrize("soft_constraint", ["sample", "batch", "none"])
def test_terms_match_slow_loop(soft_constraint):
    db_codes, db_labels, rows, codes = _random_case()
    labels = db_labels[rows]
    layer = _layer(db_codes, db_labels, gamma=3.0, soft_constraint=soft_constraint)
    sample = np.array([1, 4, 7, 2, 9, 0])
    layer.set_sample(sample)
    r = {
        "sample": _slow_ratio(db_labels[sample], db_labels),
        "batch": _slow_ratio(labels, db_labels),
        "none": 1.0,
    }[soft_constraint]
    out = layer(codes, labels, example_index=rows)
    want = _slow_terms(codes, rows, db_codes, db_labels, labels, r, 3.0)
    for name, value in zip(("similarity", "quantization", "loss"), want):
        np.testing.assert_allclose(out[name].numpy(), value, rtol=1e-5, err_msg=name)
        assert out[name].shape == (len(codes),) and out[name].dtype == tf.float32


def test_apply_tanh():
    db_codes, db_labels, rows, codes = _random_case(1)
    raw = np.arctanh(codes)
    plain = _layer(db_codes, db_labels)(codes, db_labels[rows], example_index=rows)
    tanh = _layer(db_codes, db_labels, apply_tanh=True)(raw, db_labels[rows], example_index=rows)
    np.testing.assert_allclose(tanh["loss"], plain["loss"], rtol=1e-5)


def _slow_dcc(v, u, rows, s, gamma, objectives):
    v = np.array(v, np.float64)
    n, k = v.shape
    m = len(rows)
    u_bar = np.zeros((n, k))
    for a, row in enumerate(rows):
        u_bar[row] = u[a]
    for bit in range(k):
        for j in range(n):
            q = -2.0 * k * sum(s[a, j] * u[a, bit] for a in range(m)) - 2.0 * gamma * u_bar[j, bit]
            value = q
            for other in range(k):
                if other != bit:
                    value += 2.0 * v[j, other] * sum(u[a, other] * u[a, bit] for a in range(m))
            v[j, bit] = 1.0 if -value >= 0 else -1.0
        objectives.append(adsh.dcc_objective(v, u, rows, s, gamma))
    return v


@pytest.mark.parametrize("seed, gamma", [(0, 200.0), (1, 2.0), (2, 0.0)])
def test_dcc_matches_slow_loop_and_never_increases_the_objective(seed, gamma):
    rng = np.random.default_rng(seed)
    n, k, m, c = 13, 5, 6, 3
    v = np.where(rng.random((n, k)) < 0.5, -1.0, 1.0)
    u = np.tanh(rng.normal(size=(m, k)))
    rows = rng.choice(n, size=m, replace=False)
    labels = (rng.random((n, c)) < 0.4).astype(np.float32)
    s = adsh.similarity_matrix(labels[rows], labels)
    objectives = [adsh.dcc_objective(v, u, rows, s, gamma)]
    want = _slow_dcc(v, u, rows, s, gamma, objectives)
    np.testing.assert_array_equal(adsh.dcc_update(v, u, rows, s, gamma), want)
    # The bounded-memory path (S^T U over blocks of 4 database rows, S never whole).
    products = adsh.similarity_products(labels[rows], labels, u, block_items=4)
    np.testing.assert_allclose(products, s.astype(np.float64).T @ u, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(adsh.dcc_update_from_products(v, u, rows, products, gamma), want)
    # Each bit update minimises J over its column: J never goes up.
    assert all(b <= a + 1e-9 * abs(a) for a, b in zip(objectives, objectives[1:])), objectives
    # And a full pass from the result again does not increase it.
    again = adsh.dcc_update(want, u, rows, s, gamma)
    assert adsh.dcc_objective(again, u, rows, s, gamma) <= objectives[-1] + 1e-9


def test_dcc_rejects_bad_shapes():
    with pytest.raises(ValueError, match="sampled_codes"):
        adsh.dcc_update(np.zeros((3, 2)), np.zeros((2, 3)), [0, 1], np.zeros((2, 3)), 1.0)
    with pytest.raises(ValueError, match="distinct"):
        adsh.dcc_update(np.zeros((3, 2)), np.zeros((2, 2)), [0, 0], np.zeros((2, 3)), 1.0)


# ---------------------------------------------------------------------------------------
# Fixtures from the original code (module docstring).


def _fixture_inputs():
    n, k, b, m = 7, 4, 3, 4
    db_labels = np.array(
        [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 1], [1, 0, 0], [0, 0, 1]],
        np.float32,
    )
    db_codes = np.where(np.sin(np.arange(n * k) * 1.7 + 0.3) >= 0, 1.0, -1.0).reshape(n, k)
    raw = (1.3 * np.sin(np.arange(b * k) * 0.9 + 0.5)).reshape(b, k)
    batch_rows = np.array([5, 2, 3])
    sample_rows = np.array([5, 2, 3, 4])
    sampled = np.tanh(1.1 * np.cos(np.arange(m * k) * 1.3 + 0.1)).reshape(m, k)
    return db_codes.astype(np.float32), db_labels, raw, batch_rows, sample_rows, sampled


def _loss_and_gradient(layer, inputs, labels, rows):
    inputs = tf.Variable(inputs.astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(layer(inputs, labels, example_index=rows)["loss"])
    return float(loss), tape.gradient(loss, inputs).numpy()


def test_authors_loss_fixture():
    # ADSH_pytorch: S = rows of calc_sim(sample, database) (r over the m x N pairs), loss
    # (sum square + gamma sum quant) / (N B) on the tanh outputs; batch = first 3 sampled.
    db_codes, db_labels, raw, batch_rows, sample_rows, _ = _fixture_inputs()
    layer = _layer(db_codes, db_labels, gamma=200.0, soft_constraint="sample")
    layer.set_sample(sample_rows)
    assert float(layer.soft_ratio.numpy()) == pytest.approx(13 / 15)  # authors: 0.86666667
    loss, grad = _loss_and_gradient(layer, np.tanh(raw), db_labels[batch_rows], batch_rows)
    assert loss == pytest.approx(200.09112548828125, rel=1e-5)
    want = [
        [-8.902509689331055, 34.77195739746094, -5.087392807006836, -20.54543685913086],
        [-34.85920333862305, -37.00920104980469, 10.546634674072266, -7.314626216888428],
        [-1.1571576595306396, 35.96358108520508, 16.152524948120117, -36.080657958984375],
    ]
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-4)


def test_deephash_pytorch_loss_fixture():
    # DeepHash-pytorch: S = calc_sim(batch, database) (r over the batch's pairs), tanh of the
    # network's output in the loop, / (num_train B) with num_train = N; gradient wrt raw.
    db_codes, db_labels, raw, batch_rows, _, _ = _fixture_inputs()
    layer = _layer(db_codes, db_labels, gamma=200.0, soft_constraint="batch", apply_tanh=True)
    loss, grad = _loss_and_gradient(layer, raw, db_labels[batch_rows], batch_rows)
    assert loss == pytest.approx(198.14400764850376, rel=1e-5)
    want = [
        [-6.237877341136776, 9.270856682262378, -2.1984710103306786, -20.515953474345434],
        [-13.296892274785428, -10.412834544566188, 8.471599698971099, -5.027598514691757],
        [-0.35286696579298577, 16.128129872233828, 16.087379290016415, -13.461352548520065],
    ]
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-4)


DCC_FIXTURE = np.array(
    [
        [1, 1, -1, -1],
        [-1, -1, 1, 1],
        [1, 1, -1, -1],
        [-1, 1, 1, -1],
        [-1, -1, 1, 1],
        [1, 1, -1, -1],
        [-1, -1, 1, 1],
    ],
    np.float32,
)


@pytest.mark.parametrize(
    "start, gamma, want",
    [
        ("zeros", 200.0, DCC_FIXTURE),
        ("given", 200.0, DCC_FIXTURE),
        ("given", 2.0, np.where(np.arange(28).reshape(7, 4) == 15, 1.0, DCC_FIXTURE)),
    ],
)
def test_dcc_fixture(start, gamma, want):
    # Both originals' loops (DeepHash-pytorch in torch, the authors' in numpy) agree.
    db_codes, db_labels, _, _, sample_rows, sampled = _fixture_inputs()
    v = np.zeros_like(db_codes) if start == "zeros" else db_codes
    s = adsh.similarity_matrix(db_labels[sample_rows], db_labels)
    np.testing.assert_array_equal(adsh.dcc_update(v, sampled, sample_rows, s, gamma), want)
    # The layer's own update: stored V and labels, S soft over the sample.
    layer = _layer(v, db_labels, gamma=gamma)
    np.testing.assert_array_equal(layer.update_database_codes(sampled, sample_rows), want)
    np.testing.assert_array_equal(layer.database_codes.numpy(), want)
    blocked = _layer(v, db_labels, gamma=gamma)
    blocked.block_items = 3  # 7 database rows in blocks of 3, 3 and 1
    np.testing.assert_array_equal(blocked.update_database_codes(sampled, sample_rows), want)


# ---------------------------------------------------------------------------------------
# The layer: two replicas, references, graph mode, config.


@pytest.mark.parametrize("soft_constraint", ["sample", "batch", "none"])
def test_two_halves_match_the_whole_batch(soft_constraint):
    db_codes, db_labels, rows, codes = _random_case(3, n=14, b=8)
    labels = tf.constant(db_labels[rows])
    layer = _layer(db_codes, db_labels, soft_constraint=soft_constraint)
    layer.set_sample(np.arange(6))
    codes = tf.Variable(codes)
    with tf.GradientTape() as tape:
        whole = layer(codes, labels, example_index=rows)
        total = tf.reduce_sum(whole["loss"])
    want = tape.gradient(total, codes).numpy()
    with tf.GradientTape() as tape:
        parts = [
            layer(
                codes[s : s + 4],
                labels[s : s + 4],
                ref_codes=codes,
                ref_labels=labels,
                anchor_offset=s,
                example_index=rows[s : s + 4],
            )
            for s in (0, 4)
        ]
        split_total = tf.reduce_sum([tf.reduce_sum(p["loss"]) for p in parts])
    got = tape.gradient(split_total, codes).numpy()
    assert set(whole) == {"loss", "similarity", "quantization"}
    for name in whole:
        np.testing.assert_allclose(
            np.concatenate([p[name].numpy() for p in parts]), whole[name].numpy(), rtol=1e-6
        )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_call_checks_its_arguments():
    db_codes, db_labels, rows, codes = _random_case()
    layer = _layer(db_codes, db_labels)
    with pytest.raises(ValueError, match="both"):
        layer(codes, db_labels[rows], ref_codes=codes, example_index=rows)
    with pytest.raises(ValueError, match="example_index"):
        layer(codes, db_labels[rows])
    with pytest.raises(ValueError, match="database codes"):
        layer.set_database_codes(db_codes[:3])
    with pytest.raises(ValueError, match="soft_constraint"):
        ADSHLoss(bits=4, num_classes=2, num_database_items=3, soft_constraint="x")


def test_initial_state_and_class_id_labels():
    layer = ADSHLoss(bits=4, num_classes=3, num_database_items=5)
    np.testing.assert_array_equal(layer.database_codes.numpy(), np.zeros((5, 4)))
    assert float(layer.soft_ratio.numpy()) == 1.0
    assert not layer.trainable_weights
    layer.set_database_labels(np.array([0, 2, 1, 1, 0]))
    np.testing.assert_array_equal(layer.database_labels.numpy()[:, 2], [0, 1, 0, 0, 0])


def test_graph_mode_matches_eager():
    db_codes, db_labels, rows, codes = _random_case(4)
    layer = _layer(db_codes, db_labels, soft_constraint="batch")
    eager = layer(codes, db_labels[rows], example_index=rows)["loss"].numpy()
    graph = tf.function(lambda c, y, i: layer(c, y, example_index=i)["loss"])
    np.testing.assert_allclose(graph(codes, db_labels[rows], rows).numpy(), eager, rtol=1e-6)


def test_config_round_trip():
    db_codes, db_labels, rows, codes = _random_case(5)
    layer = _layer(db_codes, db_labels, gamma=7.0, soft_constraint="batch", apply_tanh=True)
    config = layer.get_config()
    assert config["num_database_items"] == len(db_codes) and config["gamma"] == 7.0
    clone = ADSHLoss.from_config(config)
    assert (clone.soft_constraint, clone.apply_tanh) == ("batch", True)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        clone(codes, db_labels[rows], example_index=rows)["loss"],
        layer(codes, db_labels[rows], example_index=rows)["loss"],
        rtol=1e-6,
    )
