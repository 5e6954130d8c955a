"""Weight files: named-array and Keras round trips, pickle policy, mismatch reports."""

import h5py
import numpy as np
import pytest

from wsdhash.models import build_backbone
from wsdhash.models.weights import (
    PickleNotAllowedError,
    WeightsMismatchError,
    load_weights_file,
    model_variables_by_name,
    read_named_arrays,
    save_named_arrays,
)


def _randomise(model, seed):
    """Non-default values everywhere, BN moving statistics included."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        values = rng.uniform(0.5, 1.5, variable.shape).astype(np.float32)
        variable.assign(values)


def _images(size, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (2, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("suffix", [".npz", ".weights.h5"])
@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_round_trip_gives_identical_outputs(tmp_path, name, suffix):
    source = build_backbone(name, seed=1).model
    _randomise(source, seed=2)
    path = str(tmp_path / f"weights{suffix}")
    if suffix == ".npz":
        save_named_arrays(source, path)
    else:
        source.save_weights(path)
    loaded = build_backbone(name, weights=path, seed=3)
    fresh = build_backbone(name, seed=3)
    images = _images(40)
    expected = source(images, training=False).numpy()
    np.testing.assert_array_equal(loaded.model(images, training=False).numpy(), expected)
    # The fresh model differs, so the comparison above can fail.
    assert np.abs(fresh.model(images, training=False).numpy() - expected).max() > 1e-3


def test_npz_names_are_variable_paths(tmp_path):
    model = build_backbone("small_cnn").model
    save_named_arrays(model, tmp_path / "w.npz")
    names = set(read_named_arrays(tmp_path / "w.npz"))
    assert names == set(model_variables_by_name(model))
    assert {"conv1/kernel", "bn1/gamma", "bn1/moving_variance"} <= names


def test_named_array_mismatches_are_all_listed(tmp_path):
    model = build_backbone("small_cnn").model
    arrays = {name: v.numpy() for name, v in model_variables_by_name(model).items()}
    del arrays["bn2/beta"]
    del arrays["conv3/kernel"]
    arrays["fc9/kernel"] = np.zeros((3, 3))
    arrays["conv1/kernel"] = np.zeros((5, 5, 3, 32), np.float32)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(WeightsMismatchError) as error:
        build_backbone("small_cnn", weights=str(tmp_path / "bad.npz"))
    message = str(error.value)
    assert "2 missing" in message and "bn2/beta" in message and "conv3/kernel" in message
    assert "1 unexpected" in message and "fc9/kernel" in message
    assert "1 shape mismatches" in message
    assert "conv1/kernel: model (3, 3, 3, 32) vs file (5, 5, 3, 32)" in message
    assert "bad.npz" in message


def test_nothing_is_assigned_when_a_load_fails(tmp_path):
    model = build_backbone("small_cnn").model
    before = [v.numpy().copy() for v in model.weights]
    arrays = {
        name: np.ones(v.shape, np.float32) for name, v in model_variables_by_name(model).items()
    }
    arrays["extra"] = np.zeros(1)
    np.savez(tmp_path / "extra.npz", **arrays)
    with pytest.raises(WeightsMismatchError):
        load_weights_file(model, tmp_path / "extra.npz")
    for old, variable in zip(before, model.weights):
        np.testing.assert_array_equal(variable.numpy(), old)


def test_keras_weights_file_mismatches_are_all_listed(tmp_path):
    model = build_backbone("small_cnn").model
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    with h5py.File(path, "r+") as f:
        datasets = []
        f.visititems(
            lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None
        )
        removed, reshaped = datasets[0], datasets[1]
        del f[removed]
        del f[reshaped]
        f.create_dataset(reshaped, data=np.zeros((2, 2), np.float32))
        f.create_dataset("layers/extra/vars/0", data=np.zeros(3, np.float32))
    with pytest.raises(WeightsMismatchError) as error:
        build_backbone("small_cnn", weights=path)
    message = str(error.value)
    assert removed in message and "layers/extra/vars/0" in message
    assert f"{reshaped}: model" in message and "vs file (2, 2)" in message


def test_weights_file_of_another_backbone_is_rejected(tmp_path):
    path = str(tmp_path / "small.weights.h5")
    build_backbone("small_cnn").model.save_weights(path)
    with pytest.raises(WeightsMismatchError, match="missing"):
        build_backbone("resnet18", weights=path)


def test_pickled_npy_requires_allow_pickle(tmp_path):
    path = tmp_path / "net.npy"
    np.save(path, {"conv1": [np.zeros((3, 3, 3, 32), np.float32), np.zeros(32, np.float32)]})
    with pytest.raises(PickleNotAllowedError, match="allow_pickle=True"):
        read_named_arrays(path)
    arrays = read_named_arrays(path, allow_pickle=True)
    assert sorted(arrays) == ["conv1/bias", "conv1/kernel"]


def test_unusable_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_backbone("small_cnn", weights=str(tmp_path / "absent.npz"))
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="Unknown weights file type"):
        build_backbone("small_cnn", weights=str(tmp_path / "weights.pt"))
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        build_backbone("small_cnn", weights=str(tmp_path / "single.npy"))
