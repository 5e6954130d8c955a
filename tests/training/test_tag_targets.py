"""--supervision=tags with a --tag_dir: any method trains on the processed (merged,
filtered) tags of `python -m wsdhash.tags`, applied once by the trainer."""

import dataclasses

import numpy as np
import pytest

from wsdhash.data import features_file
from wsdhash.data.types import SplitData
from wsdhash.tagging import files as tag_files
from wsdhash.training import trainer
from wsdhash.training.config import OptimizerConfig, config_from_dict

_TAG_NAMES = ("car", "sea", "auto", "2008", "boat")
# car|auto merged, sea and boat alone, "2008" dropped (e.g. a rare tag).
_MERGE_MAP = {0: [0, 2], 1: [1], 2: [4]}
_SIZES = {"train": 300, "query": 20, "database": 60}


def _write_features(path, rng):
    settings = {
        "backbone": "precomputed",
        "weights": "test",
        "seed": 0,
        "image_size": 0,
        "crop_size": 0,
        "normalization": "",
        "ten_crop": False,
        "dataset": "test",
        "data_dir": "test",
        "dataset_options": "{}",
        "feature_dim": 8,
        "topk": -1,
        "wsdhash_version": "test",
    }
    writer = features_file.FeaturesWriter(str(path), settings)
    try:
        for name, n in _SIZES.items():
            tags = (rng.random((n, len(_TAG_NAMES))) < 0.3).astype(np.uint8)
            tags[:, 0] = 1 - tags[:, 2]  # car or auto on every item: never both
            split = SplitData(
                name=name,
                paths=np.array([f"{name}/{i}" for i in range(n)]),
                labels=np.eye(2, dtype=np.uint8)[rng.integers(0, 2, n)],
                tags=tags if name == "train" else np.zeros((n, 0), np.uint8),
                label_names=("x", "y"),
                tag_names=_TAG_NAMES if name == "train" else (),
            )
            writer.start_split(split, 8)
            writer.write_rows(name, 0, rng.normal(size=(n, 8)).astype(np.float32))
        return writer.finish()
    finally:
        writer.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tag_targets")
    path = _write_features(root / "features.h5", np.random.default_rng(0))
    tag_dir = root / "tags"
    tag_dir.mkdir()
    tag_files.write_merge_map(tag_dir / tag_files.MERGE_MAP_FILE, _MERGE_MAP)
    return root, path, tag_dir


def _config(path, workdir, **overrides):
    values = dict(
        dataset="features",
        data_dir=str(path),
        backbone="features",
        method="idhn",
        supervision="tags",
        bits=16,
        batch_size=32,
        steps=3,
        validation_size=30,
        optimizer=OptimizerConfig(name="adam", learning_rate=1e-3),
        workdir=str(workdir),
        log_every=1,
    )
    return config_from_dict({**values, **overrides})  # flat settings


@pytest.mark.parametrize("method", ["idhn", "csq"])
def test_every_method_gets_the_merged_tags(data, tmp_path, method):
    _, path, tag_dir = data
    raw = features_file.read_split(str(path), "train")
    merged = trainer._RunData.load(_config(path, tmp_path, method=method, tag_dir=str(tag_dir)))
    plain = trainer._RunData.load(_config(path, tmp_path, method=method))
    # The same carve, the raw columns in one run and their OR per group in the other.
    np.testing.assert_array_equal(merged.train.paths, plain.train.paths)
    row_of = {path: row for row, path in enumerate(raw.paths.tolist())}
    rows = np.array([row_of[path] for path in plain.train.paths.tolist()])
    expected = np.stack(
        [raw.tags[rows][:, [0, 2]].max(axis=1), raw.tags[rows][:, 1], raw.tags[rows][:, 4]],
        axis=1,
    )
    np.testing.assert_array_equal(merged.train.tags, expected)
    assert merged.train.tags[:, 0].all()  # car or auto: every item has the merged tag
    assert merged.train.tag_names == ("car|auto", "sea", "boat")
    assert merged.validation.tags.shape == (30, 3) and merged.num_targets == 3
    assert plain.num_targets == 5 and plain.train.tag_names == _TAG_NAMES


def test_training_on_merged_tags_runs_and_evaluates_on_labels(data, tmp_path):
    _, path, tag_dir = data
    metrics = trainer.train(_config(path, tmp_path / "run", tag_dir=str(tag_dir)))
    assert 0 <= metrics["map"] <= 1 and metrics["steps"] == 3


def test_a_tag_dir_for_another_vocabulary_is_refused(data, tmp_path):
    _, path, _ = data
    other = tmp_path / "other_tags"
    other.mkdir()
    tag_files.write_merge_map(other / tag_files.MERGE_MAP_FILE, {0: [0], 1: [7]})
    with pytest.raises(ValueError, match=r"--tag_dir=.*made for at least 8 raw tags.* has 5"):
        trainer._RunData.load(_config(path, tmp_path, tag_dir=str(other)))
    # The settings file written by `python -m wsdhash.tags` names the raw tag count.
    tag_files.write_merge_map(other / tag_files.MERGE_MAP_FILE, {0: [0]})
    (other / tag_files.SETTINGS_FILE).write_text('{"num_raw_tags": 6}')
    with pytest.raises(ValueError, match="made for 6 raw tags but the dataset has 5"):
        trainer._RunData.load(_config(path, tmp_path, tag_dir=str(other)))


def test_a_tag_dir_needs_tag_supervision(data, tmp_path):
    _, path, tag_dir = data
    with pytest.raises(ValueError, match="--tag_dir=.*only with --supervision=tags"):
        _config(path, tmp_path, tag_dir=str(tag_dir), supervision="labels")


def test_merged_split_keeps_none_and_unnamed_tags():
    assert tag_files.merged_split(None, _MERGE_MAP) is None
    split = SplitData(
        name="train",
        paths=np.array(["a", "b"]),
        labels=np.zeros((2, 0), np.uint8),
        tags=np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 1]], np.uint8),
        label_names=(),
        tag_names=(),
    )
    merged = tag_files.merged_split(split, _MERGE_MAP)
    np.testing.assert_array_equal(merged.tags, [[1, 0, 0], [1, 0, 1]])
    assert merged.tag_names == () and dataclasses.replace(merged, tags=split.tags) is not None
