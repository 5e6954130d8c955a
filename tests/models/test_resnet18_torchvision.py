"""ResNet-18: loading a torchvision state_dict, checked against a forward pass written
here with tf.nn ops in PyTorch's conventions (symmetric padding, -inf max-pool padding,
BN in inference form with eps 1e-5)."""

import numpy as np
import pytest
import tensorflow as tf

from wsdhash.models import build_backbone
from wsdhash.models.backbones import NoImageNetWeightsError

WIDTHS = (64, 128, 256, 512)


def _torchvision_resnet18_state_dict(rng):
    """Random arrays with the keys and shapes of torchvision resnet18().state_dict()."""
    state = {}

    def conv(name, out_channels, in_channels, size):
        fan_in = in_channels * size * size
        state[f"{name}.weight"] = (
            rng.standard_normal((out_channels, in_channels, size, size)) * np.sqrt(2 / fan_in)
        ).astype(np.float32)

    def bn(name, channels):
        state[f"{name}.weight"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(0, 0.1, channels).astype(np.float32)
        state[f"{name}.running_mean"] = rng.normal(0, 0.1, channels).astype(np.float32)
        state[f"{name}.running_var"] = rng.uniform(0.5, 2.0, channels).astype(np.float32)
        state[f"{name}.num_batches_tracked"] = np.array(7, np.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    in_channels = 64
    for stage, width in enumerate(WIDTHS, start=1):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            conv(f"{prefix}.conv1", width, in_channels, 3)
            bn(f"{prefix}.bn1", width)
            conv(f"{prefix}.conv2", width, width, 3)
            bn(f"{prefix}.bn2", width)
            if block == 0 and stage > 1:
                conv(f"{prefix}.downsample.0", width, in_channels, 1)
                bn(f"{prefix}.downsample.1", width)
            in_channels = width
    state["fc.weight"] = rng.standard_normal((1000, 512)).astype(np.float32)
    state["fc.bias"] = np.zeros(1000, np.float32)
    return state


def _reference(images, state):
    def conv(x, name, stride, pad):
        kernel = np.transpose(state[f"{name}.weight"], (2, 3, 1, 0))  # OIHW -> HWIO
        return tf.nn.conv2d(x, kernel, stride, [[0, 0], [pad, pad], [pad, pad], [0, 0]])

    def bn(x, name):
        scale = state[f"{name}.weight"] / np.sqrt(state[f"{name}.running_var"] + 1e-5)
        return (x - state[f"{name}.running_mean"]) * scale + state[f"{name}.bias"]

    x = tf.nn.relu(bn(conv(images, "conv1", 2, 3), "bn1"))
    x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=-np.inf)
    x = tf.nn.max_pool2d(x, 3, 2, "VALID")
    for stage in range(1, 5):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            y = tf.nn.relu(bn(conv(x, f"{prefix}.conv1", stride, 1), f"{prefix}.bn1"))
            y = bn(conv(y, f"{prefix}.conv2", 1, 1), f"{prefix}.bn2")
            if f"{prefix}.downsample.0.weight" in state:
                x = bn(conv(x, f"{prefix}.downsample.0", stride, 0), f"{prefix}.downsample.1")
            x = tf.nn.relu(y + x)
    return tf.reduce_mean(x, axis=(1, 2)).numpy()


@pytest.fixture(scope="module")
def torchvision_npz(tmp_path_factory):
    state = _torchvision_resnet18_state_dict(np.random.default_rng(0))
    path = tmp_path_factory.mktemp("resnet18") / "resnet18_torchvision.npz"
    np.savez(path, **state)
    return path, state


@pytest.mark.parametrize("size", [64, 57])
def test_torchvision_npz_matches_reference(torchvision_npz, size):
    path, state = torchvision_npz
    spec = build_backbone("resnet18", weights=str(path))
    images = np.random.default_rng(size).normal(0, 1, (2, size, size, 3)).astype(np.float32)
    got = spec.model(images, training=False).numpy()
    expected = _reference(images, state)
    assert got.shape == (2, 512)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_ignored_torchvision_entries_are_reported(torchvision_npz, caplog):
    path, _ = torchvision_npz
    with caplog.at_level("WARNING"):
        build_backbone("resnet18", weights=str(path))
    assert "fc.weight" in caplog.text and "fc.bias" in caplog.text
    assert "bn1.num_batches_tracked" in caplog.text


def test_bn_has_pytorch_statistics_settings():
    model = build_backbone("resnet18").model
    batch_norms = [
        layer for layer in model.layers if "bn" in layer.name or "downsample_1" in layer.name
    ]
    assert len(batch_norms) == 1 + 4 * 2 * 2 + 3
    for layer in batch_norms:
        assert layer.momentum == pytest.approx(0.9) and layer.epsilon == pytest.approx(1e-5)


def test_imagenet_explains_torchvision_conversion():
    with pytest.raises(NoImageNetWeightsError) as error:
        build_backbone("resnet18", weights="imagenet")
    message = str(error.value)
    for fragment in (
        "state_dict()",
        "np.savez",
        "OIHW -> HWIO",
        "running_var",
        "fc.*",
        "--weights=none",
    ):
        assert fragment in message
