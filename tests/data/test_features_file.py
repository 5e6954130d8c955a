"""Features files: extraction equals the backbone on the pipeline, resumes exactly,
and refuses foreign, truncated or mismatched files."""

import os

import h5py
import numpy as np
import pytest

from wsdhash.data import datasets, features_file, pipeline
from wsdhash.data.builtin import generate_builtin
from wsdhash.data.list_files import DataFormatError
from wsdhash.models import build_backbone
from wsdhash.training.trainer import Encoder, with_normalization

SETTINGS = {
    "backbone": "small_cnn", "weights": "none", "image_size": 32, "crop_size": 28,
    "normalization": "unit_range", "ten_crop": False, "dataset": "builtin",
    "data_dir": "x", "topk": 1000, "feature_dim": 128, "wsdhash_version": "test",
}  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    generate_builtin(root / "bi", image_size=32, num_train=70, num_query=10, num_database=30)
    dataset = datasets.get_dataset(
        "builtin", str(root / "bi"), image_size=32, num_train=70, num_query=10, num_database=30
    )
    spec = build_backbone("small_cnn", weights="none", crop_size=28, seed=0)
    model = with_normalization(spec.model, spec.normalization)
    config = pipeline.PipelineConfig(image_size=32, crop_size=28, normalization=None)
    return root, dataset, Encoder(model, config, 16)


def _extract(path, dataset, encoder, stop_after=None):
    writer = features_file.FeaturesWriter(str(path), SETTINGS)
    try:
        complete = True
        for name in ("train", "query", "database"):
            complete &= features_file.extract_split(
                writer, dataset.split(name), encoder.batches, 128, stop_after=stop_after
            )
            if stop_after is not None and not complete:
                return None
        return writer.finish()
    finally:
        writer.close()


def test_features_equal_the_backbone_and_resume_exactly(setup):
    root, dataset, encoder = setup
    full = root / "full.h5"
    _extract(full, dataset, encoder)
    attrs, splits = features_file.read_features_file(str(full))
    assert attrs["feature_dim"] == 128 and attrs["backbone"] == "small_cnn"
    for name in ("train", "query", "database"):
        split = dataset.split(name)
        np.testing.assert_allclose(splits[name].features, encoder(split), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(splits[name].paths, split.paths)
        np.testing.assert_array_equal(splits[name].labels, split.labels)
        np.testing.assert_array_equal(splits[name].tags, split.tags)
    # Interrupted after one batch of the train split: only the .partial file exists.
    resumed = root / "resumed.h5"
    assert _extract(resumed, dataset, encoder, stop_after=1) is None
    assert not resumed.exists() and os.path.exists(f"{resumed}.partial")
    with h5py.File(f"{resumed}.partial", "r") as f:
        assert f["train"].attrs["done"] == 16
    with pytest.raises(FileNotFoundError, match="unfinished extraction"):
        features_file.read_features_file(str(resumed))
    _extract(resumed, dataset, encoder)
    _, again = features_file.read_features_file(str(resumed))
    for name in splits:
        np.testing.assert_array_equal(again[name].features, splits[name].features)
    # The dataset registry reads the file; its splits carry the features.
    data = datasets.get_dataset("features", str(full))
    assert data.topk == 1000 and data.split("query").features.shape == (10, 128)


def test_mismatched_resume_foreign_and_truncated_files(tmp_path):
    writer = features_file.FeaturesWriter(str(tmp_path / "a.h5"), SETTINGS)
    writer.close()
    with pytest.raises(ValueError, match="other settings \\(backbone\\)"):
        features_file.FeaturesWriter(str(tmp_path / "a.h5"), {**SETTINGS, "backbone": "resnet50"})
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f.attrs["format"] = "something else"
    with pytest.raises(DataFormatError, match="foreign.h5: not a wsdhash features file"):
        features_file.read_features_file(str(tmp_path / "foreign.h5"))
    with h5py.File(tmp_path / "whole.h5", "w") as f:
        f.attrs.update({"format": "wsdhash-features", "version": 1})
        f.create_dataset("x", data=np.zeros((200, 50)))
    data = (tmp_path / "whole.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataFormatError, match="cut.h5: not a readable HDF5 file"):
        features_file.read_features_file(str(tmp_path / "cut.h5"))
