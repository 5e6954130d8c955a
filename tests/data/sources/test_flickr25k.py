"""MIRFLICKR-25K from its official layout: HyP2 and WSDHQ protocols."""

import json
import os

import numpy as np
import pytest
from fixtures import write_jpeg, write_text

from wsdhash.data import preparation, protocols
from wsdhash.data.datasets import get_dataset
from wsdhash.data.sources import flickr25k
from wsdhash.data.types import DataFormatError

NUM = 40


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirflickr_download")
    for i in range(1, NUM + 1):
        write_jpeg(root / "mirflickr" / f"im{i}.jpg", seed=i)
        # Image i carries tag "t<i % 3>", image 1 also "Sunset" (lower-cased on reading).
        tags = [f"t{i % 3}"] + (["Sunset", "sunset"] if i == 1 else [])
        write_text(root / "mirflickr" / "meta" / "tags" / f"tags{i}.txt", tags)
    annotations = root / "mirflickr25k_annotations_v080"
    for c, concept in enumerate(flickr25k.POTENTIAL + flickr25k.RELEVANT):
        # Concept c on images c+1 and c+2 (1-based); images 39 and 40 get no label.
        members = [n for n in (c + 1, c + 2) if n <= NUM - 2]
        write_text(annotations / f"{concept}.txt", [str(n) for n in members])
    return root


def _prepare(download, out, **options):
    sizes = {"num_images": NUM, "num_query": 5, "num_train": 10, **options}
    return flickr25k.prepare(str(download), str(out), **sizes)


def test_hyp2_protocol_lists_labels_and_splits(download, tmp_path):
    prepared = _prepare(download, tmp_path / "a", seed=3)
    assert preparation.check_prepared(prepared, str(tmp_path / "a")) == []
    dataset = get_dataset("flickr25k", str(tmp_path / "a"))
    assert dataset.topk == 1000
    splits = {name: dataset.split(name) for name in ("query", "train", "database")}
    assert [len(s) for s in splits.values()] == [5, 10, NUM - 2 - 15]  # 2 unlabelled left out
    everything = np.concatenate([s.paths for s in splits.values()])
    assert len(set(everything)) == NUM - 2
    assert not any(p.endswith(("im39.jpg", "im40.jpg")) for p in everything)
    # Image 1 is in "animals" (column 0) only; image 3 in columns 1 and 2 ("baby", "bird");
    # image 26 (1-based) in columns 24 ("baby_r1") and 25 ("bird_r1").
    by_name = {
        os.path.basename(p): row
        for s in splits.values()
        for p, row in zip(s.paths, s.labels, strict=True)
    }
    assert np.flatnonzero(by_name["im1.jpg"]).tolist() == [0]
    assert np.flatnonzero(by_name["im3.jpg"]).tolist() == [1, 2]
    assert np.flatnonzero(by_name["im26.jpg"]).tolist() == [24, 25]
    assert splits["query"].label_names[24] == "baby_r1"
    assert any("2 images have none of the 38 labels" in n for n in prepared.notes)
    # Seeded: the same seed gives the same lists, another seed another split.
    _prepare(download, tmp_path / "b", seed=3)
    _prepare(download, tmp_path / "c", seed=4)
    read = lambda d: (tmp_path / d / "test.txt").read_text()  # noqa: E731
    assert read("a") == read("b") and read("a") != read("c")


def test_hyp2_own_split_files_are_used_when_present(download, tmp_path):
    root = tmp_path / "with_hyp2"
    root.mkdir()
    os.symlink(download / "mirflickr", root / "mirflickr")
    names = [f"im{i}.jpg" for i in range(1, 21)]
    write_text(root / "img.txt", names)
    targets = np.zeros((20, 38), int)
    targets[np.arange(20), np.arange(20) % 38] = 1
    write_text(root / "targets.txt", [" ".join(map(str, r)) for r in targets])
    order = list(range(19, -1, -1))
    (root / "flickr.txt").write_text(json.dumps(order))
    prepared = flickr25k.prepare(str(root), str(tmp_path / "out"), num_query=2, num_train=3)
    dataset = get_dataset("flickr25k", str(tmp_path / "out"))
    query = dataset.split("query")
    assert [os.path.basename(p) for p in query.paths] == ["im20.jpg", "im19.jpg"]
    assert np.flatnonzero(query.labels[0]).tolist() == [19]
    assert len(dataset.split("database")) == 15 and prepared.protocol.counts["database"] == 15
    (root / "flickr.txt").write_text(json.dumps([0, 0, 1]))
    with pytest.raises(DataFormatError, match="flickr.txt: not a permutation"):
        flickr25k.prepare(str(root), str(tmp_path / "bad"), num_query=2, num_train=3)


def test_wsdhq_protocol_tags_and_containment(download, tmp_path):
    out = tmp_path / "wsdhq"
    prepared = _prepare(download, out, protocol="wsdhq", min_tag_count=1)
    assert preparation.check_prepared(prepared, str(out)) == []
    dataset = get_dataset("flickr25k", str(out))
    assert dataset.topk == 5000
    train = dataset.split("train")
    numbers = [int(os.path.basename(path)[2:-4]) for path in train.paths]
    # The vocabulary: every tag on a training image (min_tag_count=1), lower-cased, once.
    tags = {i: {f"t{i % 3}"} | ({"sunset"} if i == 1 else set()) for i in numbers}
    assert train.tag_names == tuple(sorted(set().union(*tags.values())))
    for i, row in zip(numbers, train.tags, strict=True):
        assert {train.tag_names[j] for j in np.flatnonzero(row)} == tags[i]
    assert train.num_classes == 24
    assert set(train.paths) <= set(dataset.split("database").paths)


def test_errors_name_files_and_downloads(download, tmp_path):
    with pytest.raises(protocols.MissingDownloadError, match="press.liacs.nl"):
        flickr25k.prepare(str(tmp_path), str(tmp_path / "out"))
    broken = tmp_path / "broken"
    broken.mkdir()
    os.symlink(download / "mirflickr", broken / "mirflickr")
    annotations = broken / "mirflickr25k_annotations_v080"
    for concept in flickr25k.POTENTIAL + flickr25k.RELEVANT:
        write_text(annotations / f"{concept}.txt", ["1"])
    write_text(annotations / "bird.txt", ["1", "x7"])
    with pytest.raises(DataFormatError, match=r"bird.txt:2: expected an image number"):
        flickr25k.prepare(str(broken), str(tmp_path / "out"), num_images=NUM)
