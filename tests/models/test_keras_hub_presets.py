"""`--backbone=keras_hub:PRESET` on tiny random presets saved with `save_to_preset` and
loaded back by path (the same code path as a downloaded preset): features equal the
encoder on the preset's own rescaling, pretrained weights load, `none` is seeded."""

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

from wsdhash.models import build_backbone  # noqa: E402 (after the importorskip)
from wsdhash.models.keras_hub_presets import KerasHubUnavailableError  # noqa: E402

SCALE = np.array([1 / (255 * 0.229), 1 / (255 * 0.224), 1 / (255 * 0.225)], np.float32)
OFFSET = np.array([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], np.float32)


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    resnet = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
    )
    resnet.save_to_preset(str(root / "resnet"))
    keras_hub.layers.ResNetImageConverter(
        image_size=(32, 32), scale=SCALE.tolist(), offset=OFFSET.tolist()
    ).save_to_preset(str(root / "resnet"))
    vit = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
    )
    vit.save_to_preset(str(root / "vit"))  # no image converter in this preset
    return root, resnet, vit


def _images(size=32):
    return np.random.default_rng(0).uniform(0, 255, (3, size, size, 3)).astype(np.float32)


def test_feature_map_preset_pools_after_its_own_rescaling(presets):
    root, resnet, _ = presets
    spec = build_backbone(f"keras_hub:{root / 'resnet'}", weights="preset")
    assert (spec.normalization, spec.crop_size, spec.image_size) == ("raw_pixels", 32, 37)
    assert spec.feature_dim == 16
    images = _images()
    expected = np.asarray(resnet(images * SCALE + OFFSET)).mean(axis=(1, 2))
    np.testing.assert_allclose(spec.model(images).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_token_preset_gives_its_class_token(presets):
    root, _, vit = presets
    spec = build_backbone(f"keras_hub:{root / 'vit'}", weights="imagenet", crop_size=32)
    assert spec.normalization == "unit_range" and spec.feature_dim == 16
    images = _images() / 255.0  # unit_range, applied by the pipeline's normalisation
    expected = np.asarray(vit(images))[:, 0]
    np.testing.assert_allclose(spec.model(images).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_weights_none_is_a_seeded_random_initialisation(presets):
    root, _, _ = presets
    name = f"keras_hub:{root / 'resnet'}"
    pretrained = build_backbone(name, weights="preset").model(_images()).numpy()
    first = build_backbone(name, weights="none", seed=1).model(_images()).numpy()
    again = build_backbone(name, weights="none", seed=1).model(_images()).numpy()
    other = build_backbone(name, weights="none", seed=2).model(_images()).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other) and not np.allclose(first, pretrained)


def test_unknown_preset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot load the preset"):
        build_backbone(f"keras_hub:{tmp_path / 'nothing'}", weights="preset")
    assert issubclass(KerasHubUnavailableError, ImportError)
