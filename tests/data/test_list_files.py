"""Tests for the list-file readers: formats, and an error naming file and line for
every kind of bad input."""

import os

import numpy as np
import pytest

from wsdhash.data import datasets, list_files
from wsdhash.data.types import DataFormatError


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def _touch_images(root, names):
    for name in names:
        _write(os.path.join(root, name), "x")


def _matrix_text(matrix):
    return "".join(" ".join(str(v) for v in row) + "\n" for row in matrix)


@pytest.fixture
def wsdhq_tree(tmp_path):
    """A tiny WSDHQ-layout dataset: lists in `lists/`, images under `images/`."""
    rng = np.random.default_rng(0)
    lists, images = tmp_path / "lists", tmp_path / "images"
    split_names = {"train": 6, "test": 3, "database": 5}
    content = {}
    for prefix, n in split_names.items():
        names = [f"{prefix}/im{i}.jpg" for i in range(n)]
        _touch_images(images, names)
        _write(lists / f"{prefix}_img.txt", "".join(f"{name}\n" for name in names))
        labels = (rng.random((n, 4)) < 0.5).astype(int)
        labels[0] = 0  # An unlabeled item must be read as zeros, not dropped.
        if prefix != "train":
            _write(lists / f"{prefix}_label.txt", _matrix_text(labels))
        content[prefix] = (names, labels)
    tags = (rng.random((6, 7)) < 0.3).astype(int)
    tags[2] = 0  # An untagged training image.
    _write(lists / "train_tag.txt", _matrix_text(tags))
    _write(lists / "vocab.txt", "".join(f"tag{j}\n" for j in range(7)))
    return lists, images, content, tags


def test_wsdhq_splits_read_in_file_order(wsdhq_tree):
    lists, images, content, tags = wsdhq_tree
    query = list_files.read_wsdhq_split(str(lists), str(images), split="query")
    names, labels = content["test"]
    assert list(query.paths) == [os.path.join(str(images), n) for n in names]
    np.testing.assert_array_equal(query.labels, labels)
    assert query.labels.dtype == np.uint8 and query.num_tags == 0
    train = list_files.read_wsdhq_split(
        str(lists), str(images), split="train", tag_vocab="vocab.txt"
    )
    np.testing.assert_array_equal(train.tags, tags)
    assert train.tag_names == tuple(f"tag{j}" for j in range(7))
    assert train.num_classes == 0  # WSDHQ trains from tags only.


def test_wsdhq_float_formatted_matrix_is_accepted(wsdhq_tree):
    # np.savetxt without fmt writes 1.000000000000000000e+00; np.loadtxt reads it back.
    lists, images, content, _ = wsdhq_tree
    _, labels = content["database"]
    np.savetxt(lists / "database_label.txt", labels)
    database = list_files.read_wsdhq_split(str(lists), str(images), split="database")
    np.testing.assert_array_equal(database.labels, labels)


@pytest.mark.parametrize(
    "text, message",
    [
        ("0 1 0 1\n1 0 1\n0 0 0 0\n", "test_label.txt:2: expected 4 columns, found 3"),
        ("0 1 0 1\n1 0 2 1\n0 0 0 0\n", "test_label.txt:2: value '2' in column 3 is not 0 or 1"),
        ("0 1 0 1\n1 0 x 1\n0 0 0 0\n", "test_label.txt:2: value 'x' in column 3"),
        ("0 1 0 1\n1 0 0 1\n", "test_label.txt: 2 rows, but"),
    ],
)
def test_bad_label_files_name_file_and_line(wsdhq_tree, text, message):
    lists, images, _, _ = wsdhq_tree
    _write(lists / "test_label.txt", text)
    with pytest.raises(DataFormatError, match=message.replace("(", r"\(")):
        list_files.read_wsdhq_split(str(lists), str(images), split="query")


def test_missing_image_names_list_line_and_path(wsdhq_tree):
    lists, images, content, _ = wsdhq_tree
    os.remove(images / content["database"][0][3])
    with pytest.raises(
        DataFormatError, match=r"database_img.txt:4: image file not found: .*im3.jpg"
    ):
        list_files.read_wsdhq_split(str(lists), str(images), split="database")
    # check_files=False defers the problem to decoding, e.g. for remote file systems.
    split = list_files.read_wsdhq_split(
        str(lists), str(images), split="database", check_files=False
    )
    assert len(split) == 5


def test_empty_split_and_missing_labels(wsdhq_tree):
    lists, images, _, _ = wsdhq_tree
    _write(lists / "test_img.txt", "\n")
    with pytest.raises(DataFormatError, match="test_img.txt: split 'query' is empty"):
        list_files.read_wsdhq_split(str(lists), str(images), split="query")
    os.remove(lists / "database_label.txt")
    with pytest.raises(FileNotFoundError, match="database_label.txt"):
        list_files.read_wsdhq_split(str(lists), str(images), split="database")


def test_tag_matrix_must_match_vocabulary(wsdhq_tree):
    lists, images, _, _ = wsdhq_tree
    _write(lists / "vocab.txt", "a\nb\n")
    with pytest.raises(DataFormatError, match="train_tag.txt:1: expected 2 columns, found 7"):
        list_files.read_wsdhq_split(str(lists), str(images), split="train", tag_vocab="vocab.txt")


def test_hashnet_list(tmp_path):
    names = ["images/a.jpg", "images/b.jpg", "images/c.jpg"]
    _touch_images(tmp_path, names)
    labels = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    lines = [f"{n} {' '.join(map(str, row))}\n" for n, row in zip(names, labels)]
    path = _write(tmp_path / "test.txt", "".join(lines))
    split = list_files.read_hashnet_list(path, str(tmp_path), split="query")
    np.testing.assert_array_equal(split.labels, labels)
    assert split.paths[1] == os.path.join(str(tmp_path), "images/b.jpg")

    _write(tmp_path / "test.txt", "".join(lines[:2]) + "images/c.jpg 0 0\n")
    with pytest.raises(DataFormatError, match=r"test.txt:3: expected 3 columns, found 2"):
        list_files.read_hashnet_list(path, str(tmp_path), split="query")
    _write(tmp_path / "test.txt", "".join(lines[:2]) + "images/c.jpg\n")
    with pytest.raises(DataFormatError, match=r"test.txt:3: expected 'path l1 ... lC'"):
        list_files.read_hashnet_list(path, str(tmp_path), split="query")
    _write(tmp_path / "test.txt", "".join(lines[:2]) + "images/c.jpg 0 0 -1\n")
    with pytest.raises(DataFormatError, match=r"test.txt:3: value '-1' in column 4"):
        list_files.read_hashnet_list(path, str(tmp_path), split="query")


def test_dataset_registry(wsdhq_tree, tmp_path):
    lists, images, _, _ = wsdhq_tree
    dataset = datasets.get_dataset("wsdhq", str(lists), image_root=str(images))
    assert len(dataset.split("database")) == 5
    assert dataset.topk == 5000
    with pytest.raises(KeyError, match="no split 'validation'"):
        dataset.split("validation")
    with pytest.raises(KeyError, match=r"Unknown dataset 'nope'; known: .*builtin"):
        datasets.get_dataset("nope", str(tmp_path))


def test_latin1_list_and_paths_with_spaces_name_file_and_line(tmp_path):
    _touch_images(tmp_path, ["a.jpg", "b.jpg"])
    path = tmp_path / "test.txt"
    path.write_bytes("a.jpg 1 0\nb.jpg 0 1\ncaf\u00e9.jpg 1 1\n".encode("latin-1"))
    with pytest.raises(
        DataFormatError,
        match=r"test.txt:3: not UTF-8 text \(byte 0xe9 at "
        "column 4\\); save the file as UTF-8",
    ):
        list_files.read_hashnet_list(str(path), str(tmp_path), split="query")
    _write(path, "a.jpg 1 0\nmy cat.jpg 0 1\n")
    with pytest.raises(
        DataFormatError,
        match=r"test.txt:2: image path 'my cat.jpg' contains a "
        "space; list paths may not contain spaces",
    ):
        list_files.read_hashnet_list(str(path), str(tmp_path), split="query")
    _write(path, "a.jpg 1 0\nb.jpg x 1\n")  # a bad value is still reported as one
    with pytest.raises(DataFormatError, match=r"test.txt:2: value 'x' in column 2"):
        list_files.read_hashnet_list(str(path), str(tmp_path), split="query")
    _write(tmp_path / "test_img.txt", "a.jpg\nmy cat.jpg\n")
    with pytest.raises(DataFormatError, match=r"test_img.txt:2: .*may not contain spaces"):
        list_files.read_path_list(str(tmp_path / "test_img.txt"))
