"""Features files: extraction equals the backbone on the pipeline's batches, an
interrupted extraction resumes to the same file, the registered `features` dataset
feeds the pipeline, and foreign, truncated, damaged or mismatched files are refused."""

import errno
import os

import h5py
import numpy as np
import pytest
import tensorflow as tf
from contracts import run_dataset_test

from wsdhash import file_lock
from wsdhash.data import datasets, features_file, pipeline
from wsdhash.data.builtin import generate_builtin
from wsdhash.data.preprocessing import NORMALIZATIONS
from wsdhash.data.types import DataFormatError, RetrievalDataset, SplitData
from wsdhash.models import build_backbone
from wsdhash.models.assembly import with_normalization
from wsdhash.models.encoder import Encoder

SIZES = {"num_train": 70, "num_query": 10, "num_database": 30}
SETTINGS = {
    "backbone": "small_cnn",
    "weights": "none",
    "image_size": 32,
    "crop_size": 28,
    "normalization": "unit_range",
    "ten_crop": False,
    "dataset": "builtin",
    "data_dir": "x",
    "topk": 1000,
    "feature_dim": 128,
    "wsdhash_version": "test",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    generate_builtin(root / "bi", image_size=32, **SIZES)
    dataset = datasets.get_dataset("builtin", str(root / "bi"), image_size=32, **SIZES)
    spec = build_backbone("small_cnn", weights="none", crop_size=28, seed=0)
    model = with_normalization(spec.model, spec.normalization)
    config = pipeline.PipelineConfig(image_size=32, crop_size=28, normalization=None)
    full = root / "full.h5"
    _extract(full, dataset, Encoder(model, config, 16))
    return root, dataset, spec, model, config, full


def _extract(path, dataset, encoder, max_batches=None):
    return features_file.extract_dataset(
        str(path),
        dataset,
        ("train", "query", "database"),
        encoder.batches,
        SETTINGS,
        max_batches=max_batches,
    )


def _contents(path):
    with h5py.File(path, "r") as f:
        arrays = {}
        f.visititems(
            lambda name, item: (
                arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None
            )
        )
        return dict(f.attrs), arrays


def test_features_equal_the_backbone_on_the_pipeline_batches(setup):
    _, dataset, spec, _, config, full = setup
    attrs, splits = features_file.read_features_file(str(full))
    assert attrs["feature_dim"] == 128 and attrs["backbone"] == "small_cnn"
    normalize = NORMALIZATIONS.get(spec.normalization)
    for name in ("train", "query", "database"):
        split = dataset.split(name)
        batches = pipeline.make_dataset(split, config, training=False, batch_size=16)
        expected = np.concatenate(
            [spec.model(normalize(tf.cast(b["image"], tf.float32))).numpy() for b in batches]
        )
        np.testing.assert_allclose(splits[name].features, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(splits[name].paths, split.paths)
        np.testing.assert_array_equal(splits[name].labels, split.labels)
        np.testing.assert_array_equal(splits[name].tags, split.tags)
    with h5py.File(full, "r") as f:
        np.testing.assert_array_equal(f["database/index"][:], np.arange(30))
        assert f["train/features"].chunks == (70, 128)  # chunked by rows


def test_ten_crop_features_are_the_mean_over_the_ten_crops(setup):
    _, dataset, spec, model, config, _ = setup
    query = dataset.split("query")
    ten_crop = pipeline.PipelineConfig(
        image_size=32, crop_size=28, normalization=None, ten_crop=True
    )
    features = Encoder(model, ten_crop, 4)(query)
    normalize = NORMALIZATIONS.get(spec.normalization)
    batch = next(iter(pipeline.make_dataset(query, ten_crop, training=False, batch_size=10)))
    crops = tf.reshape(batch["image"], (100, 28, 28, 3))  # (B, 10, S, S, 3) -> (10B, S, S, 3)
    per_crop = spec.model(normalize(tf.cast(crops, tf.float32))).numpy().reshape(10, 10, 128)
    np.testing.assert_allclose(features, per_crop.mean(axis=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stops", [(1,), (6, 1)])  # in train; across train -> query -> db
def test_an_interrupted_extraction_resumes_to_the_same_file(setup, tmp_path, stops):
    _, dataset, _, model, config, full = setup
    encoder = Encoder(model, config, 16)
    path = tmp_path / "resumed.h5"
    for max_batches in stops:
        assert _extract(path, dataset, encoder, max_batches=max_batches) is None
        assert not path.exists() and os.path.exists(f"{path}.partial")
    with h5py.File(f"{path}.partial", "r") as f:
        written = 16 * sum(stops)
        assert f["train"].attrs["done"] == min(written, 70)
    with pytest.raises(FileNotFoundError, match="an unfinished extraction is in .partial"):
        features_file.read_features_file(str(path))
    _extract(path, dataset, encoder)
    assert not os.path.exists(f"{path}.partial")
    attrs, arrays = _contents(path)
    expected_attrs, expected = _contents(full)
    assert attrs == expected_attrs and arrays.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(arrays[key], value, err_msg=key)


def test_registered_dataset_feeds_the_features_to_the_pipeline(setup):
    *_, full = setup
    data = datasets.get_dataset("features", str(full))
    assert data.topk == 1000 and data.splits == ("train", "query", "database")
    train = data.split("train")
    assert train.features.shape == (70, 128) and data.split("train") is train  # read once
    config = pipeline.PipelineConfig(image_size=1, crop_size=1, normalization=None)
    batch = next(iter(pipeline.make_dataset(train, config, training=True, batch_size=8)))
    assert batch["image"].dtype == tf.float32 and batch["image"].shape == (8, 128)
    np.testing.assert_array_equal(batch["image"].numpy(), train.features[batch["index"].numpy()])
    np.testing.assert_array_equal(batch["labels"].numpy(), train.labels[batch["index"].numpy()])
    run_dataset_test(data)


def test_mismatched_foreign_truncated_and_damaged_files_are_refused(setup, tmp_path):
    *_, full = setup
    writer = features_file.FeaturesWriter(str(tmp_path / "a.h5"), SETTINGS)
    writer.close()
    with pytest.raises(
        features_file.PartialFileError,
        match=r"a.h5.partial: .*other settings \(backbone: small_cnn",
    ):
        features_file.FeaturesWriter(str(tmp_path / "a.h5"), {**SETTINGS, "backbone": "resnet50"})
    train = setup[1].split("train")
    writer = features_file.FeaturesWriter(str(tmp_path / "b.h5"), SETTINGS)
    writer.start_split(train, 128)
    writer.close()
    writer = features_file.FeaturesWriter(str(tmp_path / "b.h5"), SETTINGS)
    with pytest.raises(features_file.PartialFileError, match="'train' lists other items"):
        writer.start_split(train.take(np.arange(5)), 128)
    writer.close()
    (tmp_path / "c.h5.partial").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(features_file.PartialFileError, match="c.h5.partial: not a readable"):
        features_file.FeaturesWriter(str(tmp_path / "c.h5"), SETTINGS)
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f.attrs["format"] = "something else"
    with pytest.raises(DataFormatError, match="foreign.h5: not a wsdhash features file"):
        features_file.read_features_file(str(tmp_path / "foreign.h5"))
    data = full.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataFormatError, match="cut.h5: not a readable HDF5 file"):
        datasets.get_dataset("features", str(tmp_path / "cut.h5"))
    (tmp_path / "damaged.h5").write_bytes(data)
    with h5py.File(tmp_path / "damaged.h5", "a") as f:
        del f["query/features"]
        f.create_dataset("query/features", data=np.zeros((10, 5), np.float32))
    with pytest.raises(DataFormatError, match=r"damaged.h5: split 'query' features have shape"):
        features_file.read_split(str(tmp_path / "damaged.h5"), "query")
    with pytest.raises(DataFormatError, match=r"no 'validation' split"):
        features_file.read_split(str(full), "validation")


def test_flipped_byte_and_nan_rows_are_errors_naming_file_dataset_and_rows(setup, tmp_path):
    *_, full = setup
    flipped = tmp_path / "flipped.h5"
    flipped.write_bytes(full.read_bytes())
    with h5py.File(flipped, "r") as f:
        assert f["query/features"].fletcher32 and f["train/labels"].fletcher32
        offset = f["query/features"].id.get_chunk_info(0).byte_offset
    data = bytearray(flipped.read_bytes())
    data[offset + 10] ^= 0x01
    flipped.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match="flipped.h5: dataset '/query/features' is corrupt"):
        features_file.read_split(str(flipped), "query")
    features_file.read_split(str(flipped), "database")  # the other splits still read

    nan = tmp_path / "nan.h5"
    nan.write_bytes(full.read_bytes())
    with h5py.File(nan, "a") as f:
        f["query/features"][3, 0] = np.nan
        f["query/features"][7, 5] = np.inf
        query_paths = f["query/paths"].asstr()[:]
    with pytest.raises(
        DataFormatError,
        match=r"nan.h5: split 'query' has NaN or infinite "
        r"features in 2 of 10 rows: 3 \(.*\), 7 \(.*\);",
    ) as caught:
        features_file.read_split(str(nan), "query")
    assert query_paths[3] in str(caught.value)


def test_full_disk_stops_with_a_resumable_partial_file(setup, tmp_path, monkeypatch):
    _, dataset, _, model, config, full = setup
    encoder = Encoder(model, config, 16)
    path = tmp_path / "f.h5"
    usage = features_file.shutil.disk_usage
    free = {"bytes": None}

    def disk_usage(folder):
        real = usage(folder)
        return real if free["bytes"] is None else real._replace(free=free["bytes"])

    monkeypatch.setattr(features_file.shutil, "disk_usage", disk_usage)
    # Too little space for the whole extraction: refused before any batch is encoded.
    free["bytes"] = features_file.DISK_MARGIN_BYTES + 1000
    message = r"f.h5.partial: 0.1 MiB still to write \(plus a 16.0 MiB margin\) but 16.0 MiB free"
    with pytest.raises(features_file.DiskFullError, match=message):
        _extract(path, dataset, encoder)
    # A write that fails with ENOSPC after two batches (the disk filled up meanwhile).
    free["bytes"] = None
    store, calls = features_file.FeaturesWriter._store, []

    def failing_store(group, start, rows):
        calls.append(start)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        store(group, start, rows)

    monkeypatch.setattr(features_file.FeaturesWriter, "_store", staticmethod(failing_store))
    with pytest.raises(features_file.DiskFullError, match="f.h5.partial: the disk is full"):
        _extract(path, dataset, encoder)
    with h5py.File(f"{path}.partial", "r") as f:
        assert f["train"].attrs["done"] == 32  # the failed third batch is not counted
    monkeypatch.setattr(features_file.FeaturesWriter, "_store", staticmethod(store))
    _extract(path, dataset, encoder)  # resumes to the uninterrupted file
    _, arrays = _contents(path)
    _, expected = _contents(full)
    for key, value in expected.items():
        np.testing.assert_array_equal(arrays[key], value, err_msg=key)


def test_resume_with_another_seed_and_a_concurrent_writer_are_refused(tmp_path):
    settings = {**SETTINGS, "seed": 0, "dataset_options": '{"seed": 0}'}
    features_file.FeaturesWriter(str(tmp_path / "a.h5"), settings).close()
    other = {**settings, "seed": 1, "dataset_options": '{"seed": 1}'}
    with pytest.raises(
        features_file.PartialFileError,
        match=r"other settings \(seed: 0 there, 1 now, dataset_options: \{\"seed\": 0\} there",
    ):
        features_file.FeaturesWriter(str(tmp_path / "a.h5"), other)
    writer = features_file.FeaturesWriter(str(tmp_path / "a.h5"), settings)
    try:
        with pytest.raises(file_lock.LockedError, match="features file .*a.h5 is in use"):
            features_file.FeaturesWriter(str(tmp_path / "a.h5"), settings)
    finally:
        writer.close()
    features_file.FeaturesWriter(str(tmp_path / "a.h5"), settings).close()  # released


def _path_features(paths):
    """A feature row that depends only on the image path (a stand-in backbone)."""
    return np.stack(
        [np.random.default_rng(sum(map(ord, str(p)))).normal(size=4) for p in paths]
    ).astype(np.float32)


@pytest.mark.parametrize("batch_size, stops", [(3, ()), (1, (5, 6, 2))])
def test_each_distinct_image_is_encoded_once_and_its_rows_copied(tmp_path, batch_size, stops):
    """The database holds the training images (and one image twice), a query repeats:
    each path goes through the backbone once over the whole extraction, also when it is
    stopped and resumed (with batches of 1: in the query split, then after the
    database's first block), and every row holds its image's features."""
    train = [f"/img/{c}{i}.jpg" for c in "ab" for i in range(5)]
    query = ["/img/q0.jpg", "/img/q1.jpg", "/img/q0.jpg"]
    database = train[:3] + ["/img/d0.jpg", "/img/d1.jpg"] + train[3:] + ["/img/d0.jpg"]
    lists = {"train": train, "query": query, "database": database}

    def load_split(name):
        paths = np.asarray(lists[name])
        labels = np.eye(len(paths), 2, dtype=np.uint8)
        return SplitData(name, paths, labels, np.zeros((len(paths), 0), np.uint8))

    dataset = RetrievalDataset("toy", load_split)
    encoded = []

    def encode_batches(split):
        for start in range(0, len(split), batch_size):
            encoded.extend(split.paths[start : start + batch_size])
            yield _path_features(split.paths[start : start + batch_size])

    settings = {**SETTINGS, "feature_dim": 4}
    output = str(tmp_path / "f.h5")
    for stop in stops:
        assert (
            features_file.extract_dataset(
                output,
                dataset,
                ("train", "query", "database"),
                encode_batches,
                settings,
                max_batches=stop,
            )
            is None
        )
    path = features_file.extract_dataset(
        output, dataset, ("train", "query", "database"), encode_batches, settings
    )
    assert sorted(encoded) == sorted(set(train + query + database))
    for name, split in features_file.read_features_file(path)[1].items():
        np.testing.assert_array_equal(split.paths, lists[name])
        np.testing.assert_array_equal(split.features, _path_features(lists[name]))
    assert os.listdir(tmp_path) == ["f.h5"]  # no partial file, no lock file
    # The collapse check's sample: each image once, whichever splits hold it.
    distinct = sorted(set(train + query + database))
    sample = features_file.sample_distinct_rows(path)
    expected = np.unique(_path_features(distinct), axis=0)
    np.testing.assert_array_equal(np.unique(sample, axis=0), expected)
    assert len(sample) == len(distinct)
    assert len(features_file.sample_distinct_rows(path, max_rows=5)) == 5
