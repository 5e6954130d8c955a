"""ResNet-18's layers since issue 15 (fused batch normalisation, "same" padding for the
stride-1 convolutions) against the layout before (Keras' BatchNormalization,
ZeroPadding2D + "valid" for every convolution), kept behind `resnet18._FORMER_LAYOUT`: the same
variables, initialisation, outputs, gradients and moving statistics up to float32
rounding, and weight files and training checkpoints that load either way."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wsdhash.models import resnet18
from wsdhash.models import weights as weights_lib


def _build(*, former, seed=3):
    previous, resnet18._FORMER_LAYOUT = resnet18._FORMER_LAYOUT, former
    try:
        return resnet18.resnet18(seed=seed)
    finally:
        resnet18._FORMER_LAYOUT = previous


@pytest.fixture(scope="module")
def pair():
    """(new, former) models holding the same non-default weights."""
    new, former = _build(former=False), _build(former=True)
    rng = np.random.default_rng(0)
    for a, b in zip(new.weights, former.weights):
        if "moving" in a.path or "gamma" in a.path or "beta" in a.path:
            values = rng.uniform(0.5, 1.5, a.shape).astype(np.float32)
            a.assign(values)
            b.assign(values)
    return new, former


def _step(model, images, training):
    """Outputs, gradients (of a loss that weighs every output differently) and the
    non-trainable variables after the call."""
    start = [v.numpy() for v in model.non_trainable_weights]
    images = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(images)
        features = model(images, training=training)
        loss = tf.reduce_sum(features * tf.sin(tf.range(512, dtype=tf.float32)))
    grads = tape.gradient(loss, [images, *model.trainable_weights])
    after = [v.numpy() for v in model.non_trainable_weights]
    for variable, value in zip(model.non_trainable_weights, start):
        variable.assign(value)  # Each call sees the same moving statistics.
    return features.numpy(), [g.numpy() for g in grads], after


def _assert_close(got, expected, tolerance):
    scale = max(float(np.abs(expected).max()), 1e-30)
    np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance * scale)


def test_same_variables_and_initialisation():
    new, former = _build(former=False), _build(former=True)
    assert [v.path for v in new.weights] == [v.path for v in former.weights]
    for a, b in zip(new.weights, former.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert sum(isinstance(x, resnet18.BatchNormalization) for x in new.layers) == 20
    # The strided convolutions and max pooling keep their ZeroPadding2D (stride-2 "same"
    # pads asymmetrically); the others are no-ops, so that layers keep their positions
    # (checkpoint keys).
    assert [x.name for x in new.layers] == [x.name for x in former.layers]
    padded = [x.name for x in new.layers if isinstance(x, keras.layers.ZeroPadding2D)]
    assert padded == ["conv1_pad", "maxpool_pad"] + [
        f"layer{stage}_0_conv1_pad" for stage in (2, 3, 4)
    ]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("size", [64, 49])  # Even and odd inputs to the strided convs.
def test_outputs_gradients_and_statistics_equal_former_layout(pair, training, size):
    new, former = pair
    images = np.random.default_rng(size).normal(0, 1, (3, size, size, 3)).astype(np.float32)
    got = _step(new, images, training)
    expected = _step(former, images, training)
    _assert_close(got[0], expected[0], 1e-5)
    for g, e in zip(got[1], expected[1]):
        # Backward through 20 batch normalisations in training mode: float32 rounding
        # of mean-subtracted sums, relative to the largest gradient entry.
        _assert_close(g, e, 1e-4 if training else 1e-5)
    for g, e in zip(got[2], expected[2]):
        _assert_close(g, e, 1e-5)


def test_biased_variance_in_moving_average():
    """Keras averages the biased batch variance (the fused kernel returns the unbiased)."""
    layer = resnet18.BatchNormalization(momentum=0.0, epsilon=1e-5)
    x = np.random.default_rng(0).normal(2, 3, (2, 3, 3, 4)).astype(np.float32)
    layer(x, training=True)
    np.testing.assert_allclose(layer.moving_mean.numpy(), x.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), x.var((0, 1, 2)), rtol=1e-5)


def test_batch_norm_falls_back_when_synchronized():
    layer = resnet18.BatchNormalization(synchronized=True)
    x = np.random.default_rng(0).normal(0, 1, (2, 3, 3, 4)).astype(np.float32)
    expected = keras.layers.BatchNormalization(synchronized=True)(x, training=True)
    np.testing.assert_allclose(layer(x, training=True), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("source_former", [True, False])
def test_weight_files_and_checkpoints_load_across_layouts(pair, tmp_path, source_former):
    new, former = pair
    source = former if source_former else new
    target = _build(former=not source_former, seed=7)
    images = np.random.default_rng(0).normal(0, 1, (2, 40, 40, 3)).astype(np.float32)
    expected = source(images, training=False).numpy()

    h5 = str(tmp_path / "backbone.weights.h5")
    source.save_weights(h5)
    weights_lib.load_weights_file(target, h5)
    _assert_close(target(images, training=False).numpy(), expected, 1e-5)

    npz = str(tmp_path / "backbone.npz")
    weights_lib.save_named_arrays(source, npz)
    for variable in target.weights:
        variable.assign(tf.zeros_like(variable))
    weights_lib.load_weights_file(target, npz)
    _assert_close(target(images, training=False).numpy(), expected, 1e-5)

    prefix = tf.train.Checkpoint(model=source).save(str(tmp_path / "ckpt"))
    for variable in target.weights:
        variable.assign(tf.zeros_like(variable))
    tf.train.Checkpoint(model=target).restore(prefix).assert_consumed()
    _assert_close(target(images, training=False).numpy(), expected, 1e-5)


def test_keras_file_round_trip(tmp_path):
    model = _build(former=False)
    path = str(tmp_path / "resnet18.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("bn1"), resnet18.BatchNormalization)
    images = np.random.default_rng(0).normal(0, 1, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded(images), model(images), rtol=1e-6, atol=1e-6)
