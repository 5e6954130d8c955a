"""NUS-WIDE (HashNet lists and the official release), ImageNet100 and COCO lists."""

import os

import numpy as np
import pytest
from fixtures import write_jpeg, write_text

from wsdhash.data import preparation, protocols
from wsdhash.data.datasets import get_dataset
from wsdhash.data.sources import hashnet_lists, nuswide
from wsdhash.data.types import DataFormatError


def _hashnet_tree(root, classes, sizes):
    """HashNet lists with images under root/images; item k has label k % classes."""
    names, k = {}, 0
    for file_name, size in sizes.items():
        lines = []
        for _ in range(size):
            row = np.zeros(classes, int)
            row[k % classes] = 1
            write_jpeg(root / "images" / f"{k:04d}.jpg", seed=k)
            lines.append(f"images/{k:04d}.jpg {' '.join(map(str, row))}")
            k += 1
        names[file_name] = lines
    # The train items are also database items, as in NUS-WIDE-21.
    names["database.txt"] = names["database.txt"] + names["train.txt"]
    for file_name, lines in names.items():
        write_text(root / "lists" / file_name, lines)


@pytest.mark.parametrize("dataset,classes", [("nuswide", 21), ("imagenet100", 100), ("coco", 80)])
def test_hashnet_lists_are_copied_checked_and_counted(tmp_path, dataset, classes):
    _hashnet_tree(tmp_path, classes, {"test.txt": 4, "train.txt": 6, "database.txt": 8})
    out = tmp_path / "out"
    prepared = preparation.PREPARERS.get(dataset)(
        str(tmp_path / "lists"), str(out), image_root=str(tmp_path)
    )
    data = get_dataset(dataset, str(out))
    assert data.topk == {"nuswide": 5000, "imagenet100": 1000, "coco": 5000}[dataset]
    train = data.split("train")
    assert train.labels.shape == (6, classes) and os.path.isfile(train.paths[0])
    np.testing.assert_array_equal(train.labels.argmax(1), np.arange(4, 10) % classes)
    problems = preparation.check_prepared(prepared, str(out))
    # Structure is right; only the sizes differ from the published protocol.
    assert problems and all("protocol says" in p for p in problems), problems
    query = prepared.protocol.counts["query"]
    assert f"split 'query' has 4 items, protocol says {query}" in problems


def test_hashnet_lists_errors(tmp_path):
    with pytest.raises(protocols.MissingDownloadError, match="DeepHash-pytorch"):
        nuswide.prepare(str(tmp_path), str(tmp_path / "out"))
    _hashnet_tree(tmp_path, 21, {"test.txt": 2, "train.txt": 2, "database.txt": 2})
    lines = (tmp_path / "lists" / "test.txt").read_text().splitlines()
    write_text(tmp_path / "lists" / "test.txt", [lines[0], lines[1] + " 1"])
    with pytest.raises(DataFormatError, match=r"test.txt:2"):
        hashnet_lists.prepare(str(tmp_path / "lists"), str(tmp_path / "o"), dataset="nuswide")


CONCEPTS = [f"c{c:02d}" for c in range(22)]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A NUS-WIDE release: 22 concepts (c21 the rarest), 1,000-tag matrix, Windows paths."""
    root = tmp_path_factory.mktemp("nuswide_release")
    rng = np.random.default_rng(0)
    num = 140
    labels = np.zeros((num, 22), int)
    labels[np.arange(num), np.arange(num) % 21] = 1  # 6-7 per common concept
    labels[:3, 21] = 1  # the rarest concept
    labels[-1] = 0  # an image with no concept
    lines = []
    for i in range(num):
        relative = f"Flickr/{CONCEPTS[i % 21]}/{i:04d}_{1000 + i}.jpg"
        lines.append("C:\\ImageData\\" + relative.replace("/", "\\"))
        if i != 5:  # image 5 is missing on disk
            write_jpeg(root / relative, seed=i)
    write_text(root / "ImageList" / "Imagelist.txt", lines)
    write_text(root / "NUS_WID_Tags" / "TagList1k.txt", [f"tag{t}" for t in range(1000)])
    tags = (rng.random((num, 1000)) < 0.01).astype(int)
    tags[:, 7] = 1  # every image has tag7
    write_text(root / "NUS_WID_Tags" / "AllTags1k.txt", [" ".join(map(str, r)) for r in tags])
    for c, concept in enumerate(CONCEPTS):
        write_text(root / "Groundtruth" / "AllLabels" / f"Labels_{concept}.txt", labels[:, c])
    return root, labels, tags


def test_official_release_wsdhq_protocol(official, tmp_path):
    root, labels, tags = official
    out = tmp_path / "out"
    prepared = nuswide.prepare(
        str(root), str(out), protocol="wsdhq", query_per_class=1, train_per_class=2, seed=1
    )
    assert preparation.check_prepared(prepared, str(out)) == []
    assert any("1 images have none of the 21 concepts" in n for n in prepared.notes)
    assert any("1 listed images are missing" in n for n in prepared.notes)
    data = get_dataset("nuswide", str(out))
    query, train, database = (data.split(s) for s in ("query", "train", "database"))
    assert len(query) == 21 and len(train) == 42
    assert query.label_names == tuple(CONCEPTS[:21])  # c21, the rarest, is not a label
    assert set(train.paths) <= set(database.paths)
    assert not set(query.paths) & set(database.paths)
    assert len(query) + len(database) == 140 - 2
    # Every concept has exactly one query image.
    np.testing.assert_array_equal(query.labels.sum(0), np.ones(21))
    assert train.tag_names[7] == "tag7" and train.tags[:, 7].all()
    for path, row in zip(train.paths, train.tags, strict=True):
        i = int(os.path.basename(path)[:4])
        np.testing.assert_array_equal(row, tags[i])


def test_ready_made_lists_without_a_manifest(tmp_path):
    """A folder of ready-made lists (HashNet or WSDHQ layout) reads as the dataset."""
    from wsdhash.data import list_files

    _hashnet_tree(tmp_path, 24, {"test.txt": 2, "train.txt": 3, "database.txt": 4})
    hashnet = get_dataset("flickr25k", str(tmp_path / "lists"), image_root=str(tmp_path))
    assert len(hashnet.split("database")) == 7 and hashnet.split("query").num_classes == 24
    wsdhq = tmp_path / "wsdhq"
    for split, n in (("train", 3), ("query", 2), ("database", 4)):
        names = [f"images/{i:04d}.jpg" for i in range(n)]
        tags = np.eye(n, 5, dtype=np.uint8) if split == "train" else None
        list_files.write_wsdhq_split(str(wsdhq), split, names, np.eye(n, 24), tags)
    data = get_dataset("flickr25k", str(wsdhq), image_root=str(tmp_path))
    assert data.split("train").tags.shape == (3, 5) and len(data.split("query")) == 2
