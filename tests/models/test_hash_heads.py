"""Hash heads and the hashing model's backbone/head variable split."""

import keras
import numpy as np
import pytest

from wsdhash.models import HEADS, build_backbone, build_hashing_model, split_hashing_model

BITS = 12


def _features(batch=8, dim=32, seed=0):
    return np.random.default_rng(seed).normal(0, 3, (batch, dim)).astype(np.float32)


def test_registry_names():
    assert HEADS.names() == ["linear", "linear_bn", "tanh"]


@pytest.mark.parametrize("name", ["linear", "tanh", "linear_bn"])
def test_output_shape_and_seeding(name):
    features = _features()
    head = HEADS.get(name)(BITS, seed=3)
    assert tuple(head(features, training=False).shape) == (8, BITS)
    same = HEADS.get(name)(BITS, seed=3)
    other = HEADS.get(name)(BITS, seed=4)
    same(features)
    other(features)
    np.testing.assert_array_equal(head.layers[0].kernel.numpy(), same.layers[0].kernel.numpy())
    assert not np.array_equal(head.layers[0].kernel.numpy(), other.layers[0].kernel.numpy())


def test_tanh_range_and_initialisation():
    head = HEADS.get("tanh")(BITS, seed=0)
    codes = head(100.0 * _features(dim=4096)).numpy()
    assert np.all(np.abs(codes) <= 1.0) and np.abs(codes).max() > 0.9
    dense = head.get_layer("hash_fc")
    assert dense.kernel.numpy().std() == pytest.approx(0.01, rel=0.05)
    np.testing.assert_array_equal(dense.bias.numpy(), 0.0)


def test_linear_is_unbounded():
    head = HEADS.get("linear")(BITS, seed=0)
    assert np.abs(head(100.0 * _features()).numpy()).max() > 1.0


def test_linear_bn_matches_orthohash():
    head = HEADS.get("linear_bn")(BITS, seed=0)
    features = _features(batch=64, dim=4096)
    head(features)
    dense, batch_norm = head.get_layer("hash_fc"), head.get_layer("hash_bn")
    assert dense.use_bias is False and dense.bias is None
    assert dense.kernel.numpy().std() == pytest.approx(0.01, rel=0.05)
    assert batch_norm.momentum == pytest.approx(0.9)  # PyTorch momentum 0.1
    assert batch_norm.epsilon == pytest.approx(1e-5)
    # In training the batch statistics normalise each bit to mean 0, variance 1.
    codes = head(features, training=True).numpy()
    np.testing.assert_allclose(codes.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(codes.var(0), 1.0, rtol=1e-3)


@pytest.mark.parametrize("head", ["linear", "tanh", "linear_bn"])
def test_hashing_model_variable_split(head):
    spec = build_backbone("small_cnn")
    model = build_hashing_model(spec, head, BITS, seed=0)
    assert model.name == "hashing_model" and model.backbone is spec.model
    assert model.get_layer("hash_head") is model.head
    backbone_ids = {id(v) for v in model.backbone.trainable_variables}
    head_ids = {id(v) for v in model.head.trainable_variables}
    all_ids = {id(v) for v in model.trainable_variables}
    assert backbone_ids and head_ids and not backbone_ids & head_ids
    assert backbone_ids | head_ids == all_ids
    assert len(model.trainable_variables) == len(all_ids)
    images = np.random.default_rng(0).uniform(0, 1, (2, 40, 40, 3)).astype(np.float32)
    assert tuple(model(images, training=False).shape) == (2, BITS)


def test_hashing_model_weights_round_trip(tmp_path):
    model = build_hashing_model(build_backbone("small_cnn", seed=0), "linear_bn", BITS, seed=0)
    images = np.random.default_rng(1).uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    model(images, training=True)  # moves the BN statistics away from their initial values
    model.save_weights(tmp_path / "hashing.weights.h5")
    other = build_hashing_model(build_backbone("small_cnn", seed=1), "linear_bn", BITS, seed=1)
    before = other(images, training=False).numpy()
    other.load_weights(tmp_path / "hashing.weights.h5")
    expected = model(images, training=False).numpy()
    np.testing.assert_array_equal(other(images, training=False).numpy(), expected)
    assert np.abs(before - expected).max() > 1e-4


def test_split_after_keras_reload(tmp_path):
    model = build_hashing_model(build_backbone("small_cnn"), "tanh", BITS, seed=0)
    assert split_hashing_model(model) == (model.backbone, model.head)
    model.save(tmp_path / "hashing.keras")
    reloaded = keras.saving.load_model(tmp_path / "hashing.keras")
    backbone, head = split_hashing_model(reloaded)
    assert (backbone.name, head.name) == ("small_cnn", "hash_head")
    assert len(backbone.trainable_variables) + len(head.trainable_variables) == len(
        reloaded.trainable_variables
    )
    images = np.random.default_rng(2).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(reloaded(images).numpy(), model(images).numpy())


def test_with_backbone_features_shares_the_model():
    # The features model reuses the run model's layers: same codes, the backbone's own
    # output as features, and no variable of its own.
    from wsdhash.models.assembly import build_model, with_backbone_features
    from wsdhash.training.config import DataConfig, ModelConfig, TrainConfig

    config = TrainConfig(
        data=DataConfig(data_dir="", crop_size=28, normalization=""),
        model=ModelConfig(backbone="small_cnn", weights="none", head="linear_bn"),
        seed=0,
    )
    model, _, hashing = build_model(config, BITS)
    both = with_backbone_features(model, hashing)
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 3)).astype(np.uint8)
    codes, features = both(images, training=False)
    np.testing.assert_allclose(codes, model(images, training=False), rtol=1e-6, atol=1e-6)
    normalized = model.get_layer("normalization")(images)
    np.testing.assert_allclose(features, hashing.backbone(normalized), rtol=1e-6, atol=1e-6)
    assert {id(v) for v in both.weights} == {id(v) for v in model.weights}


def test_a_hidden_layer_goes_before_the_head_and_drops_out_only_in_training():
    spec = build_backbone("small_cnn")
    model = build_hashing_model(spec, "tanh", BITS, seed=0, hidden=16, dropout=0.5)
    head = model.head
    assert [layer.name for layer in head.layers] == [
        "hidden_fc",
        "hidden_dropout",
        "hash_fc",
        "hash_tanh",
    ]
    assert head.get_layer("hidden_fc").activation is keras.activations.relu
    assert head.get_layer("hidden_fc").units == 16
    # The head's variables are the hidden layer's and the hash layer's, apart from the
    # backbone's, and the whole model's are the two together.
    backbone_ids = {id(v) for v in model.backbone.trainable_variables}
    head_ids = {id(v) for v in model.head.trainable_variables}
    assert len(head_ids) == 4 and not backbone_ids & head_ids
    assert backbone_ids | head_ids == {id(v) for v in model.trainable_variables}
    images = np.random.default_rng(0).uniform(0, 1, (4, 40, 40, 3)).astype(np.float32)
    first, second = model(images, training=False), model(images, training=False)
    np.testing.assert_array_equal(first, second)  # no dropout at inference
    hidden = head.get_layer("hidden_fc")(model.backbone(images, training=False))
    expected = head.get_layer("hash_tanh")(head.get_layer("hash_fc")(hidden))
    np.testing.assert_allclose(first, expected, rtol=1e-5, atol=1e-6)
    trained = np.stack([model(images, training=True).numpy() for _ in range(3)])
    assert not np.allclose(trained[0], trained[1])  # a different dropout mask each call
    # hidden=0 builds the published head alone.
    plain = build_hashing_model(spec, "tanh", BITS, seed=0)
    assert [layer.name for layer in plain.head.layers] == ["hash_fc", "hash_tanh"]


def test_head_init_and_a_hidden_layer_are_refused_together():
    from wsdhash.training.config import ModelConfig

    with pytest.raises(ValueError, match="--head_init=itq .* --head_hidden=64"):
        ModelConfig(head_init="itq", head_hidden=64)
    assert ModelConfig(head_hidden=64).head_dropout == 0.5
