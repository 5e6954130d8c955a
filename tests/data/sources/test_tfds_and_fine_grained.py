"""VOC, CIFAR-10, CUB-200 and Stanford Dogs: TFDS sources (mocked, nothing downloads)
and the official CUB / Dogs layouts."""

import os

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
import tensorflow_datasets as tfds
from fixtures import write_jpeg, write_png_bytes, write_text

from wsdhash.data import preparation, protocols
from wsdhash.data.datasets import get_dataset
from wsdhash.data.sources import cifar10, cub200, stanford_dogs, voc
from wsdhash.data.types import DataFormatError

# split -> number of mocked examples; example n of a split has label n % classes.
SIZES = {"train": 6, "validation": 4, "test": 5, "train+validation": 10, "train+test": 11}


def _mock(records):
    """as_dataset_fn serving `records[split]` (lists of dicts) with encoded image bytes."""

    def as_dataset(self, split, *args, **kwargs):
        examples = records(self.name, str(split))

        def generate():
            yield from examples

        signature = {"image": tf.TensorSpec((), tf.string)}
        if "label" in examples[0]:
            signature["label"] = tf.TensorSpec((), tf.int64)
        if "objects" in examples[0]:
            signature["objects"] = {
                "label": tf.TensorSpec([None], tf.int64),
                "is_difficult": tf.TensorSpec([None], tf.bool),
            }
        return tf.data.Dataset.from_generator(generate, output_signature=signature)

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def _voc_records(name, split):
    out = []
    for n in range(SIZES[split]):
        # Object classes n % 20 (not difficult) and (n + 1) % 20 (difficult).
        out.append(
            {
                "image": write_png_bytes(seed=n) if n % 2 else _jpeg(n),
                "objects": {
                    "label": np.array([n % 20, (n + 1) % 20], np.int64),
                    "is_difficult": np.array([False, True]),
                },
            }
        )
    return out


def _jpeg(seed):
    import cv2

    ok, data = cv2.imencode(".jpg", np.full((8, 8, 3), seed, np.uint8))
    return data.tobytes()


def _labelled_records(classes):
    def records(name, split):
        return [
            {"image": write_png_bytes(seed=n), "label": np.int64(n % classes)}
            for n in range(SIZES[split])
        ]

    return records


def test_voc_labels_include_difficult_objects_and_use_the_hyp2_splits(tmp_path):
    out = tmp_path / "voc2007"
    with _mock(_voc_records):
        prepared = voc.prepare(None, str(out), year="2007")
    data = get_dataset("voc2007", str(out))
    assert data.topk is None
    train, query, database = (data.split(s) for s in ("train", "query", "database"))
    assert len(train) == 10 and len(query) == 5  # trainval = train + validation
    np.testing.assert_array_equal(train.paths, database.paths)
    for n, row in enumerate(query.labels):
        assert np.flatnonzero(row).tolist() == sorted({n % 20, (n + 1) % 20})
    assert query.label_names[0] == "aeroplane" and query.paths[1].endswith(".png")
    assert query.paths[0].endswith(".jpg")
    problems = preparation.check_prepared(prepared, str(out))
    assert problems and all("protocol says" in p for p in problems)
    # Idempotent: running again rewrites no image.
    before = {p: os.stat(p).st_mtime_ns for p in train.paths}
    with _mock(_voc_records):
        voc.prepare(None, str(out), year="2007")
    assert before == {p: os.stat(p).st_mtime_ns for p in train.paths}


@pytest.mark.parametrize("protocol", [1, 2])
def test_cifar10_protocols_are_seeded_per_class_splits(tmp_path, protocol):
    SIZES["train+test"] = 60
    records = _labelled_records(10)
    with _mock(records):
        prepared = cifar10.prepare(
            None,
            str(tmp_path / "a"),
            protocol=protocol,
            query_per_class=1,
            train_per_class=2,
            seed=5,
        )
        cifar10.prepare(
            None,
            str(tmp_path / "b"),
            protocol=protocol,
            query_per_class=1,
            train_per_class=2,
            seed=5,
        )
    assert preparation.check_prepared(prepared, str(tmp_path / "a")) == []
    data = get_dataset("cifar10", str(tmp_path / "a"))
    query, train, database = (data.split(s) for s in ("query", "train", "database"))
    np.testing.assert_array_equal(query.labels.sum(0), np.ones(10))
    assert len(database) == 50 and not set(query.paths) & set(database.paths)
    if protocol == 1:
        np.testing.assert_array_equal(train.labels.sum(0), np.full(10, 2))
        assert set(train.paths) < set(database.paths)
    else:
        np.testing.assert_array_equal(train.paths, database.paths)
    same = [(tmp_path / d / "test.txt").read_text() for d in ("a", "b")]
    assert same[0] == same[1]


def test_tfds_not_prepared_says_how_to_get_it(tmp_path):
    with pytest.raises(protocols.MissingDownloadError, match="--download"):
        cifar10.prepare(str(tmp_path / "empty_tfds"), str(tmp_path / "out"))


def test_cub_and_dogs_through_tfds(tmp_path):
    SIZES["train"], SIZES["test"] = 6, 5
    for module, name, classes in ((cub200, "cub200", 200), (stanford_dogs, "stanford_dogs", 120)):
        with _mock(_labelled_records(classes)):
            module.prepare(None, str(tmp_path / name), source="tfds")
        data = get_dataset(name, str(tmp_path / name))
        query, train = data.split("query"), data.split("train")
        assert len(query) == 5 and len(train) == 6 and query.num_classes == classes
        np.testing.assert_array_equal(query.labels.argmax(1), np.arange(5) % classes)


def _cub_tree(root):
    base = root / "CUB_200_2011"
    rows, labels, split = [], [], []
    for i in range(1, 9):
        cls = 1 + (i - 1) % 4
        rel = f"{cls:03d}.Bird{cls}/Bird{cls}_{i}.jpg"
        write_jpeg(base / "images" / rel, seed=i)
        rows.append(f"{i} {rel}")
        labels.append(f"{i} {cls}")
        split.append(f"{i} {1 if i <= 5 else 0}")
    write_text(base / "images.txt", rows)
    write_text(base / "image_class_labels.txt", labels)
    write_text(base / "train_test_split.txt", split)
    write_text(base / "classes.txt", [f"{c} {c:03d}.Bird{c}" for c in range(1, 201)])


def test_cub_official_layout(tmp_path):
    _cub_tree(tmp_path)
    prepared = cub200.prepare(str(tmp_path), str(tmp_path / "out"))
    data = get_dataset("cub200", str(tmp_path / "out"))
    train, query = data.split("train"), data.split("query")
    assert len(train) == 5 and len(query) == 3
    # Image 6 (first test image) has class 2 -> column 1.
    assert query.paths[0].endswith("Bird2_6.jpg") and query.labels[0].argmax() == 1
    assert query.label_names[1] == "002.Bird2"
    problems = preparation.check_prepared(prepared, str(tmp_path / "out"))
    assert "split 'query' has 3 items, protocol says 5794" in problems
    write_text(tmp_path / "CUB_200_2011" / "train_test_split.txt", ["1 1", "2"])
    with pytest.raises(DataFormatError, match=r"train_test_split.txt:2"):
        cub200.prepare(str(tmp_path), str(tmp_path / "bad"))


def test_dogs_official_layout(tmp_path):
    names = [f"n0{c}-Breed{c}/n0{c}_{i}.jpg" for c in range(3) for i in range(2)]
    for i, name in enumerate(names):
        write_jpeg(tmp_path / "Images" / name, seed=i)
    cells = lambda items: np.array([[np.array([n])] for n in items], dtype=object)  # noqa: E731
    scipy.io.savemat(
        tmp_path / "train_list.mat",
        {"file_list": cells(names[:4]), "labels": np.array([[1], [1], [2], [2]])},
    )
    scipy.io.savemat(
        tmp_path / "test_list.mat", {"file_list": cells(names[4:]), "labels": np.array([[3], [3]])}
    )
    stanford_dogs.prepare(str(tmp_path), str(tmp_path / "out"))
    data = get_dataset("stanford_dogs", str(tmp_path / "out"))
    query = data.split("query")
    assert len(query) == 2 and query.labels.argmax(1).tolist() == [2, 2]
    assert os.path.isfile(query.paths[0])
    scipy.io.savemat(tmp_path / "test_list.mat", {"files": cells(names[4:])})
    with pytest.raises(DataFormatError, match="test_list.mat: expected variables file_list"):
        stanford_dogs.prepare(str(tmp_path), str(tmp_path / "bad"))
