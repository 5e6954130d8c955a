"""Tests for wsdhash.losses.wsdhq: hand-worked angles, slow references, reference sets,
the quantization term, XLA agreement and config round trips."""

import math

import numpy as np
import pytest
import tensorflow as tf

from wsdhash.losses import wsdhq
from wsdhash.losses.wsdhq import WSDHQLoss

BITS, TAGS, DIM, BATCH, TRAIN = 16, 7, 5, 9, 20

# Tags at 0, 90 and 180 degrees in the plane.
PLANE_TAGS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)


def _at(*degrees):
    return np.array(
        [[math.cos(math.radians(d)), math.sin(math.radians(d))] for d in degrees], np.float32
    )


def _layer(tags=PLANE_TAGS, bits=8, train=4, **kwargs):
    return WSDHQLoss(
        bits=bits, num_classes=len(tags), tag_embeddings=tags, num_train_examples=train, **kwargs
    )


# ---------------------------------------------------------------------------------------
# Hand-worked values.


@pytest.mark.parametrize("gamma, expected", [(1.0, [0.0, 2.0, 1.0]), (2.0, [0.0, 1.5, 0.5])])
def test_two_tags_by_hand(gamma, expected):
    # delta_01 = 2^(1-g) (1 - 0)^g: 1 (g = 1), 0.5 (g = 2). Z = 3 * 1 * 1 = 3 = R.
    # 0 deg, {0}: c = (1, 0) -> relu(d - 1) = 0; 90 deg, {0}: c = (0, 1) -> d + 1;
    # 45 deg, {1}: c_p = c_n -> d. Per anchor R * h / Z = h.
    layer = _layer(PLANE_TAGS[:2], gamma=gamma)
    codes = 0.5 * _at(0, 90, 45)  # the norm must not matter
    labels = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    out = layer(codes, labels)
    np.testing.assert_allclose(out["embedding"], expected, atol=1e-6)
    np.testing.assert_allclose(out["loss"], expected, atol=1e-6)
    np.testing.assert_array_equal(out["quantization"], np.zeros(3))
    fixed = _layer(PLANE_TAGS[:2], margin="fixed", gamma=gamma)(codes, labels)["embedding"]
    np.testing.assert_allclose(fixed, [0.0, 1.7, 0.7], atol=1e-6)


@pytest.mark.parametrize("gamma, expected", [(1.0, [0.0, 1.0, 1.0]), (2.0, [0.0, 1.0, 0.75])])
def test_three_tags_by_hand(gamma, expected):
    # g = 1: delta_01 = delta_12 = 1, delta_02 = 2; g = 2: 0.5, 0.5 and 2.
    # 0 deg {0}: c = (1, 0, -1): relu(d01 - 1) = relu(d02 - 2) = 0.
    # 90 deg {0, 1}: c = (0, 1, 0): (0, 2) -> 2, (1, 2) -> relu(d12 - 1) = 0.
    # 180 deg {1}: c = (-1, 0, 1): (1, 0) -> relu(d10 - 1) = 0, (1, 2) -> d12 + 1.
    # Z = 1*2 + 2*1 + 1*2 = 6, R = 3.
    layer = _layer(gamma=gamma)
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
    values = layer(2.0 * _at(0, 90, 180), labels)["embedding"].numpy()
    np.testing.assert_allclose(values, expected, atol=1e-6)
    assert values.mean() == pytest.approx((2.0 + (1 + (1.0 if gamma == 1 else 0.5))) / 6, abs=1e-6)


def test_adaptive_margins_formula():
    tags = np.random.default_rng(0).normal(size=(5, 4))
    w = tags / np.linalg.norm(tags, axis=1, keepdims=True)
    for gamma in (0.5, 1.0, 2.0):
        expected = 2 * ((1 - np.clip(w @ w.T, -1, 1)) / 2) ** gamma
        np.testing.assert_allclose(wsdhq.adaptive_margins(tags, gamma), expected, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Slow references.


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _slow_margin(w, gamma, margin):
    def delta(p, n):
        if margin == "fixed":
            return 0.7
        return 2 ** (1 - gamma) * max(0.0, 1 - float(w[p] @ w[n])) ** gamma

    return delta


def slow_wsdhq(codes, labels, tags, gamma=1.0, margin="adaptive", hardest=False):
    """The published batch loss with loops over (i, p, n)."""
    z, w = _unit(codes), _unit(tags)
    y = np.asarray(labels) > 0
    t = len(w)
    delta = _slow_margin(w, gamma, margin)
    max_count = int(y.sum(1).max()) if len(y) else 0
    k = min(t - max_count, max_count)
    total, normaliser = 0.0, 0.0
    for i in range(len(z)):
        c = [float(z[i] @ w[j]) for j in range(t)]
        positives = [j for j in range(t) if y[i, j]]
        negatives = [j for j in range(t) if not y[i, j]]
        if hardest:
            negatives = sorted(negatives, key=lambda n: (-c[n], n))[:k]
            normaliser += len(positives) * k
        else:
            normaliser += len(positives) * len(negatives)
        for p in positives:
            for n in negatives:
                total += max(0.0, delta(p, n) - (c[p] - c[n]))
    return total / normaliser if normaliser else 0.0


def slow_wdht(codes, labels, tags, margin=0.7):
    """The original's WDHT batch loss, over the tagged images only."""
    y = np.asarray(labels) > 0
    keep = y.any(1)
    z, w, y = _unit(codes)[keep], _unit(tags), y[keep]
    if len(z) < 2:
        return 0.0
    a = [w[y[i]].mean(0) for i in range(len(z))]
    total = 0.0
    for i in range(len(z)):
        row = sum(max(0.0, margin + z[i] @ a[j] - z[i] @ a[i]) for j in range(len(z)))
        total += row - margin
    return total / len(z) / (len(z) - 1)


def _random(seed, batch=BATCH, tags=TAGS, dim=DIM):
    rng = np.random.default_rng(seed)
    codes = np.tanh(rng.normal(size=(batch, dim))).astype(np.float32)
    labels = (rng.random((batch, tags)) < 0.35).astype(np.float32)
    labels[0] = 0  # untagged
    labels[1] = 1  # every tag
    labels[2] = 0
    labels[2, 3] = 1  # one tag
    tag_embs = rng.normal(size=(tags, dim)).astype(np.float32)
    return codes, labels, tag_embs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma, margin", [(1.0, "adaptive"), (2.0, "adaptive"), (1.0, "fixed")])
def test_matches_slow_reference(seed, gamma, margin):
    codes, labels, tags = _random(seed)
    values = wsdhq.wsdhq_embedding_loss(
        codes,
        labels,
        tags,
        wsdhq.adaptive_margins(tags, gamma) if margin == "adaptive" else 0.7,
    ).numpy()
    assert values.shape == (BATCH,) and values[0] == 0.0
    assert values.mean() == pytest.approx(slow_wsdhq(codes, labels, tags, gamma, margin), rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_hardest_negatives_match_slow_reference(seed):
    codes, labels, tags = _random(seed, tags=9)
    labels[1] = 0
    labels[1, :3] = 1  # max |P| = 3 -> k = 3 of 9 unless a random row has more
    layer = _layer(tags, hardest_negatives=True)
    values = layer(codes, labels)["embedding"].numpy()
    expected = slow_wsdhq(codes, labels, tags, hardest=True)
    assert values.mean() == pytest.approx(expected, rel=1e-5)
    # Fewer negatives than the full loss sees, so a different value.
    assert values.mean() != pytest.approx(slow_wsdhq(codes, labels, tags), rel=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wdht_matches_slow_reference(seed):
    codes, labels, tags = _random(seed)
    values = _layer(tags, variant="wdht")(codes, labels)["embedding"].numpy()
    assert values[0] == 0.0  # untagged anchor
    assert values.mean() == pytest.approx(slow_wdht(codes, labels, tags), rel=1e-5)
    tagged = labels.any(1)
    values = _layer(tags, variant="wdht")(codes[tagged], labels[tagged])["embedding"].numpy()
    assert values.mean() == pytest.approx(slow_wdht(codes, labels, tags), rel=1e-5)


# ---------------------------------------------------------------------------------------
# Reference sets, edge cases, XLA.

CONFIGS = {
    "adaptive": {},
    "adaptive_gamma2_hypersphere": {"gamma": 2.0, "quantization_form": "hypersphere"},
    "fixed": {"margin": "fixed"},
    "hardest": {"hardest_negatives": True},
    "wdht": {"variant": "wdht"},
}


def _quantized_layer(tags, config, seed=0, quantization_weight=0.5):
    layer = WSDHQLoss(
        bits=BITS,
        num_classes=len(tags),
        tag_embeddings=tags,
        num_train_examples=TRAIN,
        num_codewords=4,
        quantization_weight=quantization_weight,
        **CONFIGS[config],
    )
    rng = np.random.default_rng(seed)
    layer.set_quantizer(
        rng.normal(size=(2, 4, tags.shape[1])) * 0.3, rng.integers(0, 4, (TRAIN, 2))
    )
    return layer


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("split", [3, 5])
def test_two_halves_against_the_full_batch_equal_the_full_batch(config, split):
    codes, labels, tags = _random(split)
    layer = _quantized_layer(tags, config)
    codes = tf.Variable(codes)
    index = tf.constant(np.random.default_rng(1).integers(0, TRAIN, BATCH))
    with tf.GradientTape() as tape:
        full = layer(codes, labels, example_index=index)
        full_sum = tf.reduce_sum(full["loss"])
    full_grad = tape.gradient(full_sum, codes)
    with tf.GradientTape() as tape:
        first = layer(
            codes[:split],
            labels[:split],
            codes,
            labels,
            anchor_offset=0,
            example_index=index[:split],
        )
        second = layer(
            codes[split:],
            labels[split:],
            codes,
            labels,
            anchor_offset=split,
            example_index=index[split:],
        )
        halves_sum = tf.reduce_sum(first["loss"]) + tf.reduce_sum(second["loss"])
    halves_grad = tape.gradient(halves_sum, codes)
    for key in full:
        np.testing.assert_allclose(
            tf.concat([first[key], second[key]], 0).numpy(), full[key].numpy(), rtol=1e-5, atol=1e-6
        )
    assert np.all(full["quantization"].numpy() > 0)
    assert np.all(np.isfinite(full_grad.numpy())) and np.any(full_grad.numpy() != 0)
    np.testing.assert_allclose(halves_grad.numpy(), full_grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_no_nan_without_tags_and_with_empty_batches(config):
    codes, _, tags = _random(4)
    layer = _quantized_layer(tags, config)
    codes = tf.Variable(codes)
    index = tf.range(BATCH)
    untagged = np.zeros((BATCH, TAGS), np.float32)
    with tf.GradientTape() as tape:
        out = layer(codes, untagged, example_index=index)
        total = tf.reduce_sum(out["loss"])
    np.testing.assert_array_equal(out["embedding"], np.zeros(BATCH))
    grad = tape.gradient(total, codes).numpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)  # the quantization term is live
    everything = np.ones((BATCH, TAGS), np.float32)  # no negative tags anywhere
    if config != "wdht":  # (WDHT compares images, not tags: equal a_j cost the margin)
        np.testing.assert_array_equal(
            layer(codes, everything, example_index=index)["embedding"], np.zeros(BATCH)
        )
    empty = layer(codes[:0], untagged[:0], example_index=index[:0])
    for value in empty.values():
        assert value.shape == (0,)
    one = layer(codes[:1], _random(4)[1][1:2], example_index=index[:1])
    assert all(np.all(np.isfinite(v.numpy())) for v in one.values())


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_xla_agrees_with_eager(config):
    codes, labels, tags = _random(7)
    layer = _quantized_layer(tags, config)
    index = tf.constant(np.arange(BATCH) * 2)

    @tf.function(jit_compile=True)
    def compiled(anchors, anchor_labels, refs, ref_labels, offset, rows):
        return layer(
            anchors, anchor_labels, refs, ref_labels, anchor_offset=offset, example_index=rows
        )

    codes, labels = tf.constant(codes), tf.constant(labels)
    eager = layer(codes[4:], labels[4:], codes, labels, anchor_offset=4, example_index=index[4:])
    xla = compiled(codes[4:], labels[4:], codes, labels, tf.constant(4), index[4:])
    for key in eager:
        np.testing.assert_allclose(xla[key].numpy(), eager[key].numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Quantization term.


def numpy_quantization(codes, books, stored, tags, form):
    x = np.asarray(codes, np.float64)
    if form == "hypersphere":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    reconstruction = sum(books[m][stored[:, m]] for m in range(stored.shape[1]))
    return np.sum(((x - reconstruction) @ np.asarray(tags, np.float64).T) ** 2, axis=1)


@pytest.mark.parametrize("form", ["faithful", "hypersphere"])
def test_quantization_matches_numpy_and_is_off_until_set(form):
    codes, labels, tags = _random(8)
    tags = 3.0 * tags  # raw, un-normalised E enters the term
    layer = WSDHQLoss(
        bits=24,
        num_classes=TAGS,
        tag_embeddings=tags,
        num_train_examples=TRAIN,
        num_codewords=5,
        quantization_weight=1e-2,
        quantization_form=form,
    )
    assert layer.codebooks.shape == (15, DIM) and layer.train_codes.shape == (TRAIN, 3)
    assert layer.train_codes.dtype == "int32" and float(layer.quantization_active) == 0.0
    index = np.array([3, 0, 19, 3, 7, 7, 1, 2, 11])
    before = layer(codes, labels, example_index=index)
    np.testing.assert_array_equal(before["quantization"], np.zeros(BATCH))
    np.testing.assert_array_equal(before["loss"], before["embedding"])
    np.testing.assert_array_equal(layer(codes, labels)["loss"], before["loss"])

    rng = np.random.default_rng(2)
    books = rng.normal(size=(3, 5, DIM)).astype(np.float32)
    stored = rng.integers(0, 5, (TRAIN, 3)).astype(np.uint8)
    layer.set_quantizer(books, stored)
    after = layer(codes, labels, example_index=index)
    expected = numpy_quantization(codes, books, stored[index].astype(int), tags, form)
    np.testing.assert_allclose(after["quantization"], expected, rtol=1e-5)
    np.testing.assert_allclose(after["embedding"], before["embedding"], rtol=1e-6)
    np.testing.assert_allclose(
        after["loss"], after["embedding"] + 1e-2 * after["quantization"], rtol=1e-6
    )
    with pytest.raises(ValueError, match="needs example_index"):
        layer(codes, labels)
    # The flat (M * K, D) layout is accepted as well.
    layer.set_quantizer(books.reshape(15, DIM), stored)
    np.testing.assert_allclose(
        layer(codes, labels, example_index=index)["quantization"], expected, rtol=1e-5
    )


@pytest.mark.parametrize("form", ["faithful", "hypersphere"])
def test_encoding_a_codeword_exactly_costs_nothing(form):
    rng = np.random.default_rng(3)
    tags = rng.normal(size=(TAGS, DIM)).astype(np.float32)
    books = rng.normal(size=(2, 4, DIM)).astype(np.float32)
    books[0, 2] = _unit(books[0, 2])  # unit norm, so x / ||x|| is the codeword too
    books[1, 1] = 0.0
    stored = np.array([[2, 1], [0, 3]])
    layer = WSDHQLoss(
        bits=16,
        num_classes=TAGS,
        tag_embeddings=tags,
        num_train_examples=2,
        num_codewords=4,
        quantization_form=form,
    )
    layer.set_quantizer(books, stored)
    codes = np.stack([books[0, 2] + books[1, 1], books[0, 0] + books[1, 3]])
    quantization = layer(codes, np.ones((2, TAGS)), example_index=[0, 1])["quantization"].numpy()
    assert quantization[0] == pytest.approx(0.0, abs=1e-8)
    if form == "faithful":
        assert quantization[1] == pytest.approx(0.0, abs=1e-8)
    else:
        assert quantization[1] > 1e-3  # not unit norm: the hypersphere form differs
    layer.set_quantizer(books, stored[::-1].copy())  # wrong codes
    assert layer(codes, np.ones((2, TAGS)), example_index=[0, 1])["quantization"][0] > 1e-3


def test_gradient_reaches_the_codes_only():
    codes, labels, tags = _random(9)
    layer = _quantized_layer(tags, "adaptive")
    codes = tf.Variable(codes)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([layer.codebooks.value, layer.quantization_active.value])
        quantization = tf.reduce_sum(
            layer(codes, labels, example_index=tf.range(BATCH))["quantization"]
        )
    assert layer.trainable_weights == []
    grad = tape.gradient(quantization, codes).numpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    assert tape.gradient(quantization, layer.codebooks.value) is None
    # A numerical check of d/dx ||E (x - c)||^2 = 2 E^T E (x - c) for one row.
    row_grad = grad[0]
    books = layer.codebooks.numpy().reshape(2, 4, DIM)
    stored = layer.train_codes.numpy()[0]
    residual = codes.numpy()[0] - books[0, stored[0]] - books[1, stored[1]]
    np.testing.assert_allclose(row_grad, 2 * tags.T @ (tags @ residual), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Configuration and errors.


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_config_round_trip(config):
    codes, labels, tags = _random(11)
    layer = WSDHQLoss(
        bits=BITS,
        num_classes=TAGS,
        seed=5,
        tag_embeddings=tags,
        num_train_examples=TRAIN,
        **CONFIGS[config],
    )
    config_dict = layer.get_config()
    for key in ("bits", "num_classes", "seed", "tag_embeddings", "num_train_examples"):
        assert key in config_dict
    clone = WSDHQLoss.from_config(config_dict)
    assert clone.get_config() == config_dict
    np.testing.assert_array_equal(clone.tag_embeddings, layer.tag_embeddings)
    for mine, theirs in zip(layer.weights, clone.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    np.testing.assert_allclose(
        clone(codes, labels)["loss"], layer(codes, labels)["loss"], rtol=1e-6
    )


def test_argument_errors():
    tags = np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match="multiple of 8"):
        _layer(tags, bits=12)
    with pytest.raises(ValueError, match="T == num_classes=4"):
        WSDHQLoss(bits=8, num_classes=4, tag_embeddings=tags, num_train_examples=2)
    with pytest.raises(ValueError, match="variant"):
        _layer(tags, variant="dvsq")
    with pytest.raises(ValueError, match="quantization_form"):
        _layer(tags, quantization_form="cosine")
    layer = _layer(tags)
    with pytest.raises(ValueError, match="codebooks must be"):
        layer.set_quantizer(np.zeros((2, 256, 2)), np.zeros((4, 1), int))
    with pytest.raises(ValueError, match="train_codes must be integer"):
        layer.set_quantizer(np.zeros((1, 256, 2)), np.zeros((4, 1), np.float32))
    with pytest.raises(ValueError, match=r"0\.\.255"):
        layer.set_quantizer(np.zeros((1, 256, 2)), np.full((4, 1), 256))
    with pytest.raises(ValueError, match="both ref_codes and ref_labels"):
        layer(np.ones((2, 2)), np.ones((2, 3)), ref_codes=np.ones((2, 2)))


def test_product_form_pairs_with_the_product_quantizer():
    from wsdhash.quantization.product import ProductQuantizer

    rng = np.random.default_rng(4)
    dim, books_m = 6, 2
    tags = rng.normal(size=(TAGS, dim)).astype(np.float32)
    train = rng.normal(size=(40, dim))
    quantizer = ProductQuantizer(books_m, 8, seed=0).fit(train)
    stored = quantizer.encode(train)
    layer = WSDHQLoss(
        bits=8 * books_m,
        num_classes=TAGS,
        tag_embeddings=tags,
        num_train_examples=40,
        num_codewords=8,
        quantization_form="product",
    )
    layer.set_quantizer(quantizer.full_codebooks(), stored)
    index = np.array([0, 5, 39])
    codes = train[index].astype(np.float32)
    got = layer(codes, np.ones((3, TAGS)), example_index=index)["quantization"].numpy()
    sub = codes.reshape(3, books_m, -1).astype(np.float64)
    normalised = (sub / np.linalg.norm(sub, axis=2, keepdims=True)).reshape(3, dim)
    expected = np.sum(((normalised - quantizer.reconstruct(stored[index])) @ tags.T) ** 2, axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Any positive scale of each sub-vector of a codeword concatenation costs nothing.
    chosen = quantizer.reconstruct(stored[:1]).reshape(books_m, -1)
    scaled = np.concatenate([2.0 * chosen[0], 0.3 * chosen[1]])[None].astype(np.float32)
    zero = layer(scaled, np.ones((1, TAGS)), example_index=[0])["quantization"].numpy()
    assert zero[0] == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="M must divide D"):
        WSDHQLoss(
            bits=24,
            num_classes=TAGS,
            tag_embeddings=tags[:, :4],
            num_train_examples=4,
            quantization_form="product",
        )
