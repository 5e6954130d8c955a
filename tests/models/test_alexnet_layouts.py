"""CaffeNet and torchvision AlexNet: grouped convs, LRN, and loading published-format
weights, each checked against a forward pass written here with plain tf.nn/NumPy ops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wsdhash.models import alexnet, build_backbone
from wsdhash.models.weights import PickleNotAllowedError


def _he(rng, shape, fan_in):
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _lrn_numpy(x, radius=2, bias=1.0, alpha=2e-5, beta=0.75):
    """LRN written from its definition: sum of squares over channels d-r..d+r."""
    squares = np.pad(x**2, [(0, 0)] * 3 + [(radius, radius)])
    window = sum(squares[..., i : i + x.shape[-1]] for i in range(2 * radius + 1))
    return x / (bias + alpha * window) ** beta


def test_lrn_layer_matches_definition():
    x = np.random.default_rng(0).normal(0, 60, (2, 3, 3, 9)).astype(np.float32)
    got = alexnet.LocalResponseNormalization()(x).numpy()
    expected = _lrn_numpy(x.astype(np.float64))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The values are large enough for LRN to matter, so the test can fail.
    assert np.abs(expected - x).max() > 1.0


def test_lrn_layer_config_round_trip():
    layer = alexnet.LocalResponseNormalization(depth_radius=3, alpha=1e-4, name="lrn")
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, alexnet.LocalResponseNormalization)
    assert (restored.depth_radius, restored.alpha, restored.beta, restored.bias) == (
        3,
        1e-4,
        0.75,
        1.0,
    )


def test_keras_grouped_conv_is_split_concat():
    """Keras Conv2D(groups=2) == DeepHash's tf.split / conv / tf.concat with the same kernel."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 9, 6)).astype(np.float32)
    layer = keras.layers.Conv2D(8, 3, padding="same", groups=2)
    layer.build(x.shape)
    kernel = rng.standard_normal((3, 3, 3, 8)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    layer.set_weights([kernel, bias])
    groups = [
        tf.nn.conv2d(xg, kg, 1, "SAME")
        for xg, kg in zip(tf.split(x, 2, axis=3), tf.split(kernel, 2, axis=3))
    ]
    expected = tf.concat(groups, axis=3).numpy() + bias
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)


# -----------------------------------------------------------------------------
# CaffeNet with DeepHash's alexnet.npy format
# -----------------------------------------------------------------------------

CAFFENET_SHAPES = {  # {layer: (HWIO kernel shape, fan_in)}; grouped kernels hold C/2 inputs
    "conv1": ((11, 11, 3, 96), 363),
    "conv2": ((5, 5, 48, 256), 1200),
    "conv3": ((3, 3, 256, 384), 2304),
    "conv4": ((3, 3, 192, 384), 1728),
    "conv5": ((3, 3, 192, 256), 1728),
    "fc6": ((9216, 4096), 9216),
    "fc7": ((4096, 4096), 4096),
}


def _caffenet_reference(images, net):
    """WSDHQ's net.py forward pass (pool before LRN, explicit group split/concat)."""

    def conv(x, layer, stride, padding, group=1):
        kernel, bias = net[layer]
        outs = [
            tf.nn.conv2d(xg, kg, stride, padding)
            for xg, kg in zip(tf.split(x, group, 3), tf.split(kernel, group, 3))
        ]
        return tf.nn.relu(tf.concat(outs, 3) + bias)

    def pool(x):
        return tf.nn.max_pool2d(x, 3, 2, "VALID")

    x = conv(images, "conv1", 4, "VALID")
    x = tf.constant(_lrn_numpy(pool(x).numpy()))
    x = conv(x, "conv2", 1, "SAME", group=2)
    x = tf.constant(_lrn_numpy(pool(x).numpy()))
    x = conv(x, "conv3", 1, "SAME")
    x = conv(x, "conv4", 1, "SAME", group=2)
    x = pool(conv(x, "conv5", 1, "SAME", group=2))
    x = tf.reshape(x, [x.shape[0], -1])
    x = tf.nn.relu(x @ net["fc6"][0] + net["fc6"][1])
    return tf.nn.relu(x @ net["fc7"][0] + net["fc7"][1]).numpy()


@pytest.fixture(scope="module")
def deephash_npy(tmp_path_factory):
    rng = np.random.default_rng(2)
    net = {
        layer: [_he(rng, shape, fan_in), (0.1 * rng.standard_normal(shape[-1])).astype(np.float32)]
        for layer, (shape, fan_in) in CAFFENET_SHAPES.items()
    }
    # A DeepHash file also holds the 1000-way fc8, which the backbone ignores.
    net["fc8"] = [np.zeros((4096, 1000), np.float32), np.zeros(1000, np.float32)]
    path = tmp_path_factory.mktemp("caffenet") / "alexnet.npy"
    np.save(path, net)  # a pickled dict, as DeepHash's alexnet.npy
    return path, net


def test_caffenet_loads_deephash_npy_and_matches_reference(deephash_npy):
    path, net = deephash_npy
    spec = build_backbone("alexnet_caffe", weights=str(path), allow_pickle=True)
    images = np.random.default_rng(3).uniform(-128, 128, (2, 227, 227, 3)).astype(np.float32)
    got = spec.model(images, training=False).numpy()
    expected = _caffenet_reference(images, net)
    assert got.shape == (2, 4096)
    assert np.abs(expected).max() > 0 and (expected > 0).mean() > 0.05
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())


def test_caffenet_npy_needs_explicit_allow_pickle(deephash_npy):
    path, _ = deephash_npy
    with pytest.raises(PickleNotAllowedError, match="allow_pickle=True"):
        build_backbone("alexnet_caffe", weights=str(path))


def test_caffenet_dropout_only_in_training():
    spec = build_backbone("alexnet_caffe", seed=0)
    images = np.random.default_rng(4).uniform(-100, 100, (1, 227, 227, 3)).astype(np.float32)
    test_a = spec.model(images, training=False).numpy()
    test_b = spec.model(images, training=False).numpy()
    train = spec.model(images, training=True).numpy()
    np.testing.assert_array_equal(test_a, test_b)
    assert (train == 0).mean() > (test_a == 0).mean() + 0.1  # about half dropped


# -----------------------------------------------------------------------------
# torchvision AlexNet state_dict
# -----------------------------------------------------------------------------

TORCHVISION_CONVS = {  # module: (OIHW shape, stride, padding)
    "features.0": ((64, 3, 11, 11), 4, 2),
    "features.3": ((192, 64, 5, 5), 1, 2),
    "features.6": ((384, 192, 3, 3), 1, 1),
    "features.8": ((256, 384, 3, 3), 1, 1),
    "features.10": ((256, 256, 3, 3), 1, 1),
}
TORCHVISION_LINEARS = {  # module: (out, in)
    "classifier.1": (4096, 9216),
    "classifier.4": (4096, 4096),
    "classifier.6": (1000, 4096),
}


def _torchvision_state_dict(rng):
    state = {}
    for module, (shape, _, _) in TORCHVISION_CONVS.items():
        state[f"{module}.weight"] = _he(rng, shape, np.prod(shape[1:]))
        state[f"{module}.bias"] = (0.1 * rng.standard_normal(shape[0])).astype(np.float32)
    for module, shape in TORCHVISION_LINEARS.items():
        state[f"{module}.weight"] = _he(rng, shape, shape[1])
        state[f"{module}.bias"] = (0.1 * rng.standard_normal(shape[0])).astype(np.float32)
    return state


def _torchvision_reference(images, state, *, channel_major_flatten=True):
    """torchvision AlexNet (features, avgpool = identity at 224, classifier[:6]) on NHWC
    images, with PyTorch's symmetric padding and its NCHW flatten done explicitly."""
    x = images
    for index, (module, (_, stride, pad)) in enumerate(TORCHVISION_CONVS.items()):
        kernel = np.transpose(state[f"{module}.weight"], (2, 3, 1, 0))  # OIHW -> HWIO
        padding = [[0, 0], [pad, pad], [pad, pad], [0, 0]]
        x = tf.nn.relu(tf.nn.conv2d(x, kernel, stride, padding) + state[f"{module}.bias"])
        if index in (0, 1, 4):
            x = tf.nn.max_pool2d(x, 3, 2, "VALID")
    assert x.shape[1:] == (6, 6, 256)
    if channel_major_flatten:
        x = tf.transpose(x, (0, 3, 1, 2))  # NCHW, as torch.flatten sees it
    x = tf.reshape(x, [x.shape[0], -1])
    for module in ("classifier.1", "classifier.4"):
        x = tf.nn.relu(x @ state[f"{module}.weight"].T + state[f"{module}.bias"])
    return x.numpy()


def test_torchvision_alexnet_npz_matches_reference(tmp_path, caplog):
    state = _torchvision_state_dict(np.random.default_rng(5))
    path = tmp_path / "alexnet_torchvision.npz"
    np.savez(path, **state)
    with caplog.at_level("WARNING"):
        spec = build_backbone("alexnet", weights=str(path))
    assert "classifier.6.weight" in caplog.text  # the ignored ImageNet classifier is reported
    images = np.random.default_rng(6).normal(0, 1, (2, 224, 224, 3)).astype(np.float32)
    got = spec.model(images, training=False).numpy()
    expected = _torchvision_reference(images, state)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4 * scale)
    # Without the NCHW -> NHWC permutation of fc6 the features would differ: the test
    # can tell a missing permutation apart.
    unpermuted = _torchvision_reference(images, state, channel_major_flatten=False)
    assert np.abs(unpermuted - expected).max() > 0.1 * scale


def test_torchvision_alexnet_other_sizes_use_adaptive_pooling():
    spec = build_backbone("alexnet", crop_size=256)
    assert spec.model.get_layer("avgpool").output.shape[1:] == (6, 6, 256)
    assert spec.model(np.zeros((1, 256, 256, 3), np.float32)).shape == (1, 4096)


def test_dense_kernel_permutation_by_hand():
    """A 2x1x2 (H, W, C) map: torch input index c*2 + h, Keras index h*2 + c."""
    from wsdhash.models.weights import dense_kernel_after_torch_flatten

    torch_weight = np.array([[10.0, 11.0, 12.0, 13.0]])  # (out=1, in=4): c0h0 c0h1 c1h0 c1h1
    kernel = dense_kernel_after_torch_flatten(torch_weight, (2, 1, 2))
    np.testing.assert_array_equal(kernel[:, 0], [10.0, 12.0, 11.0, 13.0])  # h0c0 h0c1 h1c0 h1c1
