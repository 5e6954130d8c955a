"""VGG16 (torchvision layout, up to fc7): loading a torchvision state_dict `.npz`, checked
against a forward pass written here in NumPy from PyTorch's definitions (3x3 convs with
padding 1, 2x2 max-pools, AdaptiveAvgPool2d((7, 7)), channel-major flatten, classifier[:6]
with dropout off). The reference's adaptive pooling is checked against numbers printed by
torch 2.13's nn.AdaptiveAvgPool2d."""

import inspect
import logging
import math

import numpy as np
import pytest

from wsdhash.models import BACKBONES, build_backbone, vgg16
from wsdhash.models import weights as weights_lib
from wsdhash.models.weights import WeightsMismatchError

CONV_MODULES = [  # torchvision's features.N holding the 13 convolutions
    f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
]
WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
POOL_AFTER = {1, 3, 6, 9, 12}  # indices (in CONV_MODULES) of the last conv of each block
# 64 px: pool5 is 2x2, which AdaptiveAvgPool2d((7, 7)) spreads over bins of input rows
# [0], [0], [0], [0, 1], [1], [1], [1]: repeated cells and averaged ones.
SIZE = 64


def _he_uniform(rng, shape, fan_in):
    """Uniform with He variance 2 / fan_in. The largest arrays (fc6: 102.8 M values) are
    cycled from a prime-length random base, 10x faster than drawing every value; within a
    row of an (out, in) weight no value repeats, so any input permutation shows."""
    size = math.prod(shape)
    base = rng.random(min(size, 999_983), dtype=np.float32)
    values = np.resize(base, shape) if size > base.size else base.reshape(shape)
    values -= np.float32(0.5)  # in place: fc6 alone is 411 MB
    values *= np.float32(2 * math.sqrt(6.0 / fan_in))
    return values


def _torchvision_vgg16_state_dict(rng):
    """Random arrays with the keys and shapes of torchvision vgg16().state_dict()."""
    state, in_channels = {}, 3
    for module, width in zip(CONV_MODULES, WIDTHS):
        state[f"{module}.weight"] = _he_uniform(rng, (width, in_channels, 3, 3), in_channels * 9)
        state[f"{module}.bias"] = rng.normal(0, 0.1, width).astype(np.float32)
        in_channels = width
    for module, (out, n_in) in {
        "classifier.0": (4096, 7 * 7 * 512),
        "classifier.3": (4096, 4096),
        "classifier.6": (1000, 4096),
    }.items():
        state[f"{module}.weight"] = _he_uniform(rng, (out, n_in), n_in)
        state[f"{module}.bias"] = rng.normal(0, 0.1, out).astype(np.float32)
    return state


def _conv3x3_relu(x, weight, bias):
    """PyTorch Conv2d(kernel 3, stride 1, padding 1) + ReLU, on NHWC float64 maps: every
    output pixel is the dot product of its zero-padded 3x3 neighbourhood with the OIHW
    weight (one im2col matrix product)."""
    batch, height, width, channels = x.shape
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    patches = np.stack(
        [padded[:, dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)],
        axis=3,
    )  # (B, H, W, 9, C), neighbour (dy, dx) at index 3 dy + dx
    kernel = weight.transpose(2, 3, 1, 0).reshape(9 * channels, -1)  # rows (dy, dx, c)
    out = patches.reshape(-1, 9 * channels) @ kernel + bias
    return np.maximum(out, 0.0).reshape(batch, height, width, -1)


def _max_pool2x2(x):
    """MaxPool2d(2, 2), floor mode: an odd last row/column is dropped."""
    batch, height, width, channels = x.shape
    x = x[:, : height // 2 * 2, : width // 2 * 2]
    return x.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


def _adaptive_avg_pool(x, size=7):
    """AdaptiveAvgPool2d(size) on NHWC: output bin i averages input rows
    floor(i n / size) .. ceil((i + 1) n / size) - 1 (and the same for columns)."""

    def bins(n):
        return [(i * n // size, -(-(i + 1) * n // size)) for i in range(size)]

    rows = [
        np.stack([x[:, h0:h1, w0:w1].mean(axis=(1, 2)) for w0, w1 in bins(x.shape[2])], axis=1)
        for h0, h1 in bins(x.shape[1])
    ]
    return np.stack(rows, axis=1)


def _reference_pooled(images, state):
    """torchvision VGG16 features -> avgpool, as an NHWC (B, 7, 7, 512) float64 map."""
    x = images.astype(np.float64)
    for index, module in enumerate(CONV_MODULES):
        x = _conv3x3_relu(x, state[f"{module}.weight"], state[f"{module}.bias"])
        if index in POOL_AFTER:
            x = _max_pool2x2(x)
    return _adaptive_avg_pool(x)


def _reference_classifier(pooled, state, *, channel_major_flatten=True):
    """flatten -> classifier[:6] in eval mode (fc6, ReLU, fc7, ReLU; dropout off)."""
    if channel_major_flatten:
        pooled = np.transpose(pooled, (0, 3, 1, 2))  # NCHW, as torch.flatten sees it
    x = pooled.reshape(pooled.shape[0], -1).astype(np.float32)
    for module in ("classifier.0", "classifier.3"):
        x = np.maximum(x @ state[f"{module}.weight"].T + state[f"{module}.bias"], 0.0)
    return x


def test_adaptive_avg_pool_reference_matches_torch():
    """Numbers printed by torch 2.13, nn.AdaptiveAvgPool2d((7, 7))(arange(n * n) as n x n)."""
    torch_3x3_first_rows = [
        [0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.0],
        [0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.0],
        [1.5, 1.5, 2.0, 2.5, 3.0, 3.5, 3.5],
    ]
    torch_2x2_column_0 = [0.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0]
    torch_8x8_row_0 = [4.5, 5.5, 6.5, 7.5, 8.5, 9.5, 10.5]

    def pool(n):
        return _adaptive_avg_pool(np.arange(n * n, dtype=np.float64).reshape(1, n, n, 1))[0, ..., 0]

    np.testing.assert_allclose(pool(3)[:3], torch_3x3_first_rows)
    np.testing.assert_allclose(pool(2)[:, 0], torch_2x2_column_0)
    np.testing.assert_allclose(pool(8)[0], torch_8x8_row_0)
    np.testing.assert_array_equal(pool(7), np.arange(49.0).reshape(7, 7))  # 224 px: identity


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """(path, state, spec, warnings): a fake torchvision `.npz` loaded into vgg16 at SIZE
    px, and the messages the weights loader logged."""
    state = _torchvision_vgg16_state_dict(np.random.default_rng(0))
    path = tmp_path_factory.mktemp("vgg16") / "vgg16_torchvision.npz"
    np.savez(path, **state)
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger(weights_lib.__name__)
    logger.addHandler(handler)
    try:
        spec = build_backbone("vgg16", weights=str(path), crop_size=SIZE)
    finally:
        logger.removeHandler(handler)
    return path, state, spec, [record.getMessage() for record in records]


def test_torchvision_npz_matches_reference(loaded):
    _, state, spec, _ = loaded
    images = np.random.default_rng(1).normal(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    got = spec.model(images, training=False).numpy()
    pooled = _reference_pooled(images, state)
    expected = _reference_classifier(pooled, state)
    assert got.shape == (2, 4096)
    scale = np.abs(expected).max()
    assert scale > 0 and (expected > 0).mean() > 0.2  # live features: the test can fail
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)
    # Without the (C, H, W) -> (H, W, C) permutation of fc6 the features would differ.
    unpermuted = _reference_classifier(pooled, state, channel_major_flatten=False)
    assert np.abs(unpermuted - expected).max() > 0.1 * scale


def test_ignored_classifier_is_reported(loaded):
    *_, warnings = loaded
    assert len(warnings) == 1
    assert "ignored 2 entries: classifier.6.bias, classifier.6.weight" in warnings[0]


def test_wrong_shape_is_named_with_its_torchvision_key(loaded):
    _, state, _, _ = loaded
    arrays = {
        "features.0.weight": state["features.0.weight"],
        "features.2.weight": np.zeros((64, 64, 5, 5), np.float32),
        "classifier.0.weight": np.zeros((4096, 6 * 6 * 256), np.float32),  # AlexNet's fc6
    }
    with pytest.raises(WeightsMismatchError) as error:
        vgg16.convert_torchvision_vgg16(arrays)
    message = str(error.value)
    assert "2 shape mismatches" in message
    assert "classifier.0.weight: file (4096, 9216) vs torchvision vgg16 (4096, 25088)" in message
    assert "features.2.weight: file (64, 64, 5, 5) vs torchvision vgg16 (64, 64, 3, 3)" in message
    assert "features.0.weight" not in message


def test_wrong_key_is_named(loaded, tmp_path):
    """A misnumbered conv (features.1 is a ReLU in torchvision): the loader reports it as
    unexpected and the conv it should have filled as missing, and assigns nothing."""
    _, state, spec, _ = loaded
    path = tmp_path / "renamed.npz"
    np.savez(
        path,
        **{"features.0.weight": state["features.0.weight"]},
        **{"features.1.weight": state["features.2.weight"]},
    )
    before = spec.model.get_layer("conv1_1").kernel.numpy()
    with pytest.raises(WeightsMismatchError) as error:
        weights_lib.load_weights_file(spec.model, path, converter=vgg16.convert_torchvision_vgg16)
    message = str(error.value)
    assert "unexpected" in message and "    features.1.weight" in message
    assert "missing" in message and "    conv1_2/kernel" in message
    np.testing.assert_array_equal(spec.model.get_layer("conv1_1").kernel.numpy(), before)


def test_torchvision_key_mapping():
    names = vgg16.TORCHVISION_VGG16_NAMES
    assert list(names)[: len(CONV_MODULES)] == CONV_MODULES
    assert [names[m] for m in ("features.0", "features.28", "classifier.0", "classifier.3")] == [
        "conv1_1",
        "conv5_3",
        "fc6",
        "fc7",
    ]


def test_layers_parameters_and_defaults(loaded):
    """torchvision vgg16() has 138,357,544 parameters; without classifier.6: 134,260,544."""
    _, _, spec, _ = loaded
    assert "vgg16" in BACKBONES.names()
    convs = sum(9 * c_in * c_out + c_out for c_in, c_out in zip([3, *WIDTHS[:-1]], WIDTHS))
    total = convs + (25088 * 4096 + 4096) + (4096 * 4096 + 4096)
    assert total == 134_260_544 == 138_357_544 - (4096 * 1000 + 1000)
    assert spec.model.count_params() == total
    assert (spec.normalization, spec.image_size, spec.crop_size, spec.feature_dim) == (
        "torch_imagenet",
        256,
        SIZE,
        4096,
    )
    assert spec.model.get_layer("pool5").output.shape[1:] == (2, 2, 512)
    assert spec.model.get_layer("avgpool").output.shape[1:] == (7, 7, 512)
    assert [layer.name for layer in spec.model.layers[-6:]] == [
        "avgpool",
        "flatten",
        "fc6",
        "drop6",
        "fc7",
        "drop7",
    ]
    with pytest.raises(ValueError, match="crop_size >= 32"):
        vgg16.vgg16(crop_size=31)


def test_registration_is_alexnets_with_vgg16_parts():
    """The factory's settings, read from its closure rather than by building another
    134 M-parameter model at 224 px (where pool5 is 224 / 2**5 = 7 px: the adaptive
    pooling is the identity)."""
    settings = inspect.getclosurevars(BACKBONES.get("vgg16")).nonlocals
    alexnet_settings = inspect.getclosurevars(BACKBONES.get("alexnet")).nonlocals
    for key in ("normalization", "image_size", "default_crop_size", "default_dropout"):
        assert settings[key] == alexnet_settings[key]
    assert (settings["normalization"], settings["image_size"]) == ("torch_imagenet", 256)
    assert (settings["default_crop_size"], settings["default_dropout"]) == (224, 0.5)
    assert settings["fixed_input"] is True and settings["feature_dim"] == 4096
    assert settings["build_model"] is vgg16.vgg16
    assert settings["converter"] is vgg16.convert_torchvision_vgg16
    assert settings["imagenet_help"] is vgg16.TORCHVISION_VGG16_IMAGENET_HELP
    assert inspect.signature(vgg16.vgg16).parameters["crop_size"].default == 224


def test_dropout_after_fc6_and_fc7_only_in_training(loaded):
    _, _, spec, _ = loaded
    images = np.random.default_rng(4).normal(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    test_a = spec.model(images, training=False).numpy()
    test_b = spec.model(images, training=False).numpy()
    train = spec.model(images, training=True).numpy()
    np.testing.assert_array_equal(test_a, test_b)
    assert (train == 0).mean() > (test_a == 0).mean() + 0.2  # about half dropped after fc7


def test_imagenet_help_explains_torchvision_conversion():
    message = vgg16.TORCHVISION_VGG16_IMAGENET_HELP
    for fragment in (
        "torchvision.models.vgg16(weights='IMAGENET1K_V1')",
        "state_dict()",
        "np.savez",
        "OIHW -> HWIO",
        "(C, H, W)",
        "classifier.6",
        "--weights=none",
    ):
        assert fragment in message
