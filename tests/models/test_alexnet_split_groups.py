"""CaffeNet's grouped convolutions as two plain convolutions (`alexnet.Conv2D`):
the same outputs, gradients and variables as Keras' `Conv2D(groups=2)`, which the
CaffeNet layout used before, so old weight files and checkpoints still load."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wsdhash.models import alexnet
from wsdhash.models import weights as weights_lib


def _grouped_pair(filters, size, channels, *, seed, groups=2):
    """An alexnet.Conv2D and a Keras grouped Conv2D holding the same random weights."""
    rng = np.random.default_rng(seed)
    kwargs = {"padding": "same", "groups": groups, "activation": "relu"}
    split = alexnet.Conv2D(filters, size, **kwargs)
    grouped = keras.layers.Conv2D(filters, size, **kwargs)
    shape = (None, 9, 9, channels)
    split.build(shape)
    grouped.build(shape)
    kernel = rng.standard_normal((size, size, channels // groups, filters)).astype(np.float32)
    bias = rng.standard_normal(filters).astype(np.float32)
    for layer in (split, grouped):
        layer.set_weights([kernel * 0.1, bias * 0.1])
    return split, grouped


def _forward_and_gradients(layer, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        # A loss that weights every output differently, so each gradient entry matters.
        loss = tf.reduce_sum(
            y * tf.reshape(tf.sin(tf.range(tf.size(y), dtype=tf.float32)), y.shape)
        )
    grads = tape.gradient(loss, [x, layer.kernel, layer.bias])
    return [y.numpy()] + [g.numpy() for g in grads]


@pytest.mark.parametrize(
    "filters,size,channels,groups",
    [(16, 5, 8, 2), (12, 3, 12, 2), (8, 3, 12, 4)],  # conv2-, conv4/conv5-like; 4 groups
)
def test_split_groups_equal_keras_grouped_conv(filters, size, channels, groups):
    split, grouped = _grouped_pair(filters, size, channels, seed=filters, groups=groups)
    x = np.random.default_rng(1).standard_normal((2, 9, 9, channels)).astype(np.float32)
    got = _forward_and_gradients(split, x)
    expected = _forward_and_gradients(grouped, x)
    for name, a, b in zip(["output", "d input", "d kernel", "d bias"], got, expected):
        assert a.shape == b.shape, name
        assert np.abs(b).max() > 0, name
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max(), err_msg=name)


def test_split_groups_same_variables_and_config():
    split, grouped = _grouped_pair(8, 3, 6, seed=0)
    assert [v.path.split("/")[-1] for v in split.weights] == ["kernel", "bias"]
    assert [tuple(v.shape) for v in split.weights] == [tuple(v.shape) for v in grouped.weights]
    config = split.get_config()
    assert config["groups"] == 2
    restored = keras.layers.deserialize(keras.layers.serialize(split))
    assert isinstance(restored, alexnet.Conv2D) and restored.groups == 2


def _grouped_caffenet(monkeypatch, seed):
    """CaffeNet as it was built before: Keras' own grouped Conv2D."""
    with monkeypatch.context() as patch:
        patch.setattr(alexnet, "Conv2D", keras.layers.Conv2D)
        return alexnet.caffenet(seed=seed)


@pytest.fixture(scope="module")
def caffenets():
    with pytest.MonkeyPatch.context() as monkeypatch:
        old = _grouped_caffenet(monkeypatch, seed=5)
    new = alexnet.caffenet(seed=6)
    assert all(type(layer) is not alexnet.Conv2D for layer in old.layers)
    assert type(new.get_layer("conv2")) is alexnet.Conv2D
    return old, new


def _images(n=2, seed=3):
    return np.random.default_rng(seed).uniform(-100, 100, (n, 227, 227, 3)).astype(np.float32)


def _caffenet_forward_backward(model, images):
    with tf.GradientTape() as tape:
        features = model(images, training=False)
        loss = tf.reduce_sum(features * tf.cos(tf.range(features.shape[1], dtype=tf.float32)))
    grads = tape.gradient(loss, model.trainable_variables)
    return features.numpy(), {v.path: g.numpy() for v, g in zip(model.trainable_variables, grads)}


def test_caffenet_outputs_and_gradients_equal_grouped_layout(caffenets):
    old, new = caffenets
    new.set_weights(old.get_weights())
    images = _images()
    old_features, old_grads = _caffenet_forward_backward(old, images)
    new_features, new_grads = _caffenet_forward_backward(new, images)
    assert (old_features > 0).mean() > 0.05
    scale = np.abs(old_features).max()
    np.testing.assert_allclose(new_features, old_features, rtol=1e-4, atol=1e-5 * scale)
    assert sorted(new_grads) == sorted(old_grads)
    for name, expected in old_grads.items():
        assert np.abs(expected).max() > 0, name
        np.testing.assert_allclose(
            new_grads[name], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max(), err_msg=name
        )


def test_old_weight_files_and_checkpoints_load(caffenets, tmp_path):
    old, new = caffenets
    images = _images(1, seed=4)
    expected = old(images, training=False).numpy()

    # A .weights.h5 of the grouped layout (same datasets, checked by the loader).
    old.save_weights(tmp_path / "old.weights.h5")
    weights_lib.load_weights_file(new, str(tmp_path / "old.weights.h5"))
    np.testing.assert_allclose(new(images, training=False).numpy(), expected, rtol=1e-4, atol=1e-3)

    # Named arrays (.npz of variable paths).
    weights_lib.save_named_arrays(old, tmp_path / "old.npz")
    fresh = alexnet.caffenet(seed=7)
    weights_lib.load_weights_file(fresh, tmp_path / "old.npz")
    np.testing.assert_array_equal(fresh.get_weights()[2], old.get_weights()[2])  # conv2 kernel

    # A training checkpoint of the grouped layout restores every variable.
    path = tf.train.Checkpoint(model=old).write(str(tmp_path / "ckpt" / "old"))
    fresh = alexnet.caffenet(seed=8)
    tf.train.Checkpoint(model=fresh).read(path).assert_existing_objects_matched()
    for a, b in zip(fresh.get_weights(), old.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_keras_model_files_round_trip(caffenets, tmp_path):
    old, new = caffenets
    images = _images(1, seed=5)
    for model, name in ((old, "old.keras"), (new, "new.keras")):
        model.save(tmp_path / name)
        restored = keras.models.load_model(tmp_path / name)
        assert type(restored.get_layer("conv2")) is type(model.get_layer("conv2"))
        np.testing.assert_array_equal(
            restored(images, training=False).numpy(), model(images, training=False).numpy()
        )
