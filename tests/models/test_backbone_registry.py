"""The backbone registry: golden parameter counts, output shapes, specs, seeding and the
"imagenet" paths (conversion advice, Keras download failures)."""

import random
import socket

import keras
import numpy as np
import pytest

from wsdhash.data.preprocessing import NORMALIZATIONS
from wsdhash.models import BACKBONES, build_backbone, keras_applications
from wsdhash.models.backbones import NoImageNetWeightsError
from wsdhash.models.keras_applications import ImageNetWeightsUnavailableError


def _conv(size, c_in, c_out, *, bias=True, groups=1):
    return size * size * (c_in // groups) * c_out + (c_out if bias else 0)


def _dense(n_in, n_out):
    return n_in * n_out + n_out


def _caffenet_params():
    """Krizhevsky 2012 / bvlc_reference_caffenet without fc8 (with fc8: 60,965,224)."""
    return (
        _conv(11, 3, 96)
        + _conv(5, 96, 256, groups=2)
        + _conv(3, 256, 384)
        + _conv(3, 384, 384, groups=2)
        + _conv(3, 384, 256, groups=2)
        + _dense(6 * 6 * 256, 4096)
        + _dense(4096, 4096)
    )


def _torchvision_alexnet_params():
    """torchvision alexnet() without classifier.6 (with it: 61,100,840)."""
    return (
        _conv(11, 3, 64)
        + _conv(5, 64, 192)
        + _conv(3, 192, 384)
        + _conv(3, 384, 256)
        + _conv(3, 256, 256)
        + _dense(9216, 4096)
        + _dense(4096, 4096)
    )


def _torchvision_vgg16_params():
    """torchvision vgg16() up to fc7 (without classifier.6)."""
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    convs = sum(_conv(3, a, b) for a, b in zip([3, *widths[:-1]], widths))
    return convs + _dense(7 * 7 * 512, 4096) + _dense(4096, 4096)


def _resnet18_params():
    """(trainable, BN moving statistics) of torchvision resnet18() without fc (with fc:
    11,689,512 parameters)."""
    convs = _conv(7, 3, 64, bias=False)
    bn_channels = 64
    c_in = 64
    for width in (64, 128, 256, 512):
        for _block in range(2):
            convs += _conv(3, c_in, width, bias=False) + _conv(3, width, width, bias=False)
            bn_channels += 2 * width
            if c_in != width:
                convs += _conv(1, c_in, width, bias=False)
                bn_channels += width
            c_in = width
    # gamma and beta are trained; the moving mean and variance are not.
    return convs + 4 * bn_channels, 2 * bn_channels


def _keras_resnet50_params():
    """(all, BN moving statistics) of keras.applications.ResNet50 without top: biased
    convs, BN with 4 values per channel (Keras' with-top count: 25,636,712)."""
    total = _conv(7, 3, 64)
    bn_channels = 64
    c_in = 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        for block in range(blocks):
            total += _conv(1, c_in, width) + _conv(3, width, width) + _conv(1, width, 4 * width)
            bn_channels += 2 * width + 4 * width
            if block == 0:
                total += _conv(1, c_in, 4 * width)
                bn_channels += 4 * width
            c_in = 4 * width
    return total + 4 * bn_channels, 2 * bn_channels


# Keras' published with-top totals minus the 1000-way classifier Dense(F -> 1000).
INCEPTION_V3 = 23_851_784 - _dense(2048, 1000)
MOBILENET_V2 = 3_538_984 - _dense(1280, 1000)
EFFICIENTNET_B0 = 5_330_571 - _dense(1280, 1000)

GOLDEN = {  # name: (total parameters incl. BN statistics, crop size, feature dim)
    "alexnet_caffe": (_caffenet_params(), 227, 4096),
    "alexnet": (_torchvision_alexnet_params(), 224, 4096),
    "vgg16": (_torchvision_vgg16_params(), 224, 4096),
    "resnet18": (_resnet18_params()[0], 224, 512),
    "resnet50": (_keras_resnet50_params()[0], 224, 2048),
    "inception_v3": (INCEPTION_V3, 299, 2048),
    "mobilenet_v2": (MOBILENET_V2, 224, 1280),
    "efficientnet_b0": (EFFICIENTNET_B0, 224, 1280),
    "small_cnn": (
        _conv(3, 3, 32, bias=False)
        + _conv(3, 32, 64, bias=False)
        + _conv(3, 64, 128, bias=False)
        + 4 * (32 + 64 + 128),
        56,
        128,
    ),
}


def test_golden_formulas_match_published_totals():
    """The hand formulas agree with the published whole-network totals."""
    assert _caffenet_params() == 56_868_224 == 60_965_224 - _dense(4096, 1000)
    assert _torchvision_alexnet_params() == 57_003_840 == 61_100_840 - _dense(4096, 1000)
    assert _torchvision_vgg16_params() == 134_260_544 == 138_357_544 - _dense(4096, 1000)
    total, statistics = _resnet18_params()
    assert total - statistics == 11_176_512 == 11_689_512 - _dense(512, 1000)
    assert _keras_resnet50_params()[0] == 23_587_712 == 25_636_712 - _dense(2048, 1000)
    assert INCEPTION_V3 == 21_802_784
    assert MOBILENET_V2 == 2_257_984
    assert EFFICIENTNET_B0 == 4_049_571


def test_registry_names():
    assert BACKBONES.names() == sorted([*GOLDEN, "features"])


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_parameter_count_and_output_shape(name):
    total, crop, features = GOLDEN[name]
    spec = build_backbone(name)
    assert spec.model.count_params() == total
    assert (spec.crop_size, spec.feature_dim) == (crop, features)
    assert spec.normalization in NORMALIZATIONS
    assert spec.image_size >= spec.crop_size
    out = spec.model(np.zeros((1, crop, crop, 3), np.float32), training=False)
    assert tuple(out.shape) == (1, features)


def test_trainable_counts():
    resnet18 = build_backbone("resnet18").model
    total, statistics = _resnet18_params()
    assert sum(int(np.prod(v.shape)) for v in resnet18.trainable_weights) == total - statistics
    resnet50 = build_backbone("resnet50").model
    total, statistics = _keras_resnet50_params()
    assert sum(int(np.prod(v.shape)) for v in resnet50.trainable_weights) == total - statistics


def test_published_preprocessing_defaults():
    expected = {
        "alexnet_caffe": ("caffe_mean_on_rgb", 256, 227),
        "alexnet": ("torch_imagenet", 256, 224),
        "resnet18": ("torch_imagenet", 256, 224),
        "resnet50": ("caffe_bgr", 256, 224),
        "inception_v3": ("minus_one_to_one", 342, 299),
        "mobilenet_v2": ("minus_one_to_one", 256, 224),
        "efficientnet_b0": ("raw_pixels", 256, 224),
        "small_cnn": ("unit_range", 64, 56),
    }
    for name in ("alexnet_caffe", "small_cnn", "resnet18"):
        spec = build_backbone(name)
        assert (spec.normalization, spec.image_size, spec.crop_size) == expected[name]
    from wsdhash.models.keras_applications import KERAS_APPLICATIONS

    for name, app in KERAS_APPLICATIONS.items():
        assert (app.normalization, app.image_size, app.crop_size) == expected[name]


def test_crop_size_override():
    spec = build_backbone("small_cnn", crop_size=32)
    assert spec.crop_size == 32 and spec.image_size == 64
    assert spec.model(np.zeros((3, 32, 32, 3), np.float32)).shape == (3, 128)


@pytest.mark.parametrize("name", ["small_cnn", "mobilenet_v2"])
def test_random_initialisation_is_seeded(name):
    python_state = random.getstate()
    first = [v.numpy() for v in build_backbone(name, seed=4).model.weights]
    again = [v.numpy() for v in build_backbone(name, seed=4).model.weights]
    other = [v.numpy() for v in build_backbone(name, seed=5).model.weights]
    assert random.getstate() == python_state  # the caller's random state is untouched
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first, other))


def test_feature_dropout_option():
    spec = build_backbone("small_cnn", dropout=0.5)
    images = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    test = spec.model(images, training=False).numpy()
    train = spec.model(images, training=True).numpy()
    assert (train == 0).mean() > (test == 0).mean() + 0.2


@pytest.mark.parametrize(
    "name, fragments",
    [
        ("alexnet", ["state_dict()", "np.savez", "OIHW -> HWIO", "(C, H, W)", "classifier.6"]),
        ("alexnet_caffe", ["alexnet.npy", "allow_pickle=True", "[W (HWIO), b]"]),
        ("small_cnn", ["--weights=none"]),
    ],
)
def test_imagenet_without_keras_weights_explains(name, fragments):
    with pytest.raises(NoImageNetWeightsError) as error:
        build_backbone(name, weights="imagenet")
    for fragment in fragments:
        assert fragment in str(error.value)


def test_imagenet_download_failure_is_explained(monkeypatch):
    def failing_constructor(**kwargs):
        assert kwargs["weights"] == "imagenet" and kwargs["include_top"] is False
        # Keras' get_file raises a bare Exception with this text when offline.
        raise Exception(  # noqa: TRY002
            "URL fetch failure on https://storage.googleapis.com/x.h5: None -- "
            "[Errno -3] Temporary failure in name resolution"
        )

    monkeypatch.setattr(keras.applications, "MobileNetV2", failing_constructor)
    monkeypatch.setattr(keras_applications, "_reachable", lambda address: True)
    with pytest.raises(ImageNetWeightsUnavailableError) as error:
        build_backbone("mobilenet_v2", weights="imagenet")
    message = str(error.value)
    assert "download failed" in message and "--weights=none" in message
    assert "URL fetch failure" in message  # Keras' own reason is kept


def test_unreachable_download_host_fails_before_trying(monkeypatch, tmp_path):
    calls = []

    def constructor(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("stand-in for the Keras constructor")

    monkeypatch.setattr(keras.applications, "ResNet50", constructor)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty cache
    reached = []
    monkeypatch.setattr(
        keras_applications, "_reachable", lambda address: reached.append(address) or False
    )
    with pytest.raises(ImageNetWeightsUnavailableError, match="unreachable.*--weights=none"):
        build_backbone("resnet50", weights="imagenet")
    assert reached == [keras_applications.WEIGHTS_HOST] and not calls  # no download tried
    # With a cached weights file Keras is asked (and reads its cache) without a probe.
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5").touch()
    with pytest.raises(ImageNetWeightsUnavailableError, match="stand-in"):
        build_backbone("resnet50", weights="imagenet")
    assert len(calls) == 1 and len(reached) == 1


def test_imagenet_download_failure_without_network(monkeypatch):
    """The real Keras download path with name resolution blocked: fails fast, clearly."""

    def no_network(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution (blocked by test)")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    try:
        build_backbone("mobilenet_v2", weights="imagenet")
    except ImageNetWeightsUnavailableError as error:
        assert "--weights=none" in str(error)
    else:
        pytest.skip("the Keras ImageNet weights are already cached on this machine")


def test_each_backbone_registers_in_its_own_module():
    """backbones.py registers nothing: each backbone module registers its own, and the
    registration order is the one the registry always had."""
    import ast
    import inspect
    import pathlib

    from wsdhash.models import backbones

    def registers(source: str) -> bool:  # a BACKBONES.register(...) call in the code
        return any(
            isinstance(node, ast.Attribute)
            and node.attr == "register"
            and isinstance(node.value, ast.Name)
            and node.value.id == "BACKBONES"
            for node in ast.walk(ast.parse(source))
        )

    assert not registers(inspect.getsource(backbones))
    folder = pathlib.Path(backbones.__file__).parent
    registering = {
        path.stem for path in folder.glob("*.py") if registers(path.read_text(encoding="utf-8"))
    }
    assert registering == {
        "alexnet",
        "vgg16",
        "resnet18",
        "small_cnn",
        "features",
        "keras_applications",
    }
    assert BACKBONES.in_registration_order() == [
        "alexnet_caffe",
        "alexnet",
        "vgg16",
        "resnet18",
        "small_cnn",
        "features",
        "resnet50",
        "inception_v3",
        "mobilenet_v2",
        "efficientnet_b0",
    ]
