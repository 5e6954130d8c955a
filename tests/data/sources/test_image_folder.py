"""Your own photos: class subfolders and CSV / JSON Lines manifests become seeded lists
that the `image_folder` dataset reads, with the split rule's invariants, the prepare
CLI's checks, and one-line errors for what a real photo folder holds."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from fixtures import write_jpeg, write_png_bytes

from wsdhash.data import preparation, protocols
from wsdhash.data.datasets import get_dataset
from wsdhash.data.sources import image_folder

CLASSES = {"cat": 7, "dog": 5, "zebra": 8}


def class_tree(root):
    """root/<class>/... with JPEGs and PNGs at two depths, plus files to skip."""
    seed = 0
    for name, count in CLASSES.items():
        for i in range(count):
            folder = os.path.join(root, name, "2024" if i % 2 else "")
            if i % 3 == 0:
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, f"p{i}.PNG"), "wb") as f:
                    f.write(write_png_bytes(seed))
            else:
                write_jpeg(os.path.join(folder, f"p{i}.jpg"), seed)
            seed += 1
    with open(os.path.join(root, "cat", "notes.txt"), "w") as f:
        f.write("not an image")
    with open(os.path.join(root, "dog", "anim.gif"), "wb") as f:
        f.write(b"GIF89a")
    os.makedirs(os.path.join(root, ".thumbnails"))
    return root


def _read(output_dir):
    dataset = get_dataset("image_folder", str(output_dir))
    return {name: dataset.split(name) for name in ("train", "query", "database")}, dataset


def test_class_folders_become_seeded_lists(tmp_path):
    root = class_tree(str(tmp_path / "photos"))
    prepared = image_folder.prepare(root, str(tmp_path / "lists"), seed=1, query_size=0.25)
    splits, dataset = _read(tmp_path / "lists")
    total = sum(CLASSES.values())
    assert len(splits["query"]) == round(0.25 * total)  # 5
    assert len(splits["train"]) == total - 5 and len(splits["database"]) == total - 5
    assert dataset.topk is None
    query, train = set(splits["query"].paths), set(splits["train"].paths)
    assert not query & train and train == set(splits["database"].paths)
    every = query | train
    assert len(every) == total and all(os.path.isfile(p) for p in every)
    assert not any(p.endswith((".txt", ".gif")) for p in every)
    # Labels: one per image, the class folder's column in sorted order.
    names = splits["train"].label_names
    assert names == tuple(sorted(CLASSES))
    for split in splits.values():
        assert (split.labels.sum(1) == 1).all()
        for path, row in zip(split.paths, split.labels, strict=True):
            assert names[int(row.argmax())] == os.path.relpath(path, root).split(os.sep)[0]
    assert any("1 .gif, 1 .txt" in note for note in prepared.notes)
    # The prepare checks pass: sizes, disjointness, containment, decoding.
    assert preparation.check_prepared(prepared, str(tmp_path / "lists"), decode=True) == []
    # Seeded: same seed, same lists; another seed, other queries.
    image_folder.prepare(root, str(tmp_path / "again"), seed=1, query_size=0.25)
    image_folder.prepare(root, str(tmp_path / "other"), seed=2, query_size=0.25)
    again, _ = _read(tmp_path / "again")
    other, _ = _read(tmp_path / "other")
    np.testing.assert_array_equal(again["query"].paths, splits["query"].paths)
    assert set(other["query"].paths) != query


def test_sizes_counts_and_a_database_without_train(tmp_path):
    root = class_tree(str(tmp_path / "photos"))
    prepared = image_folder.prepare(
        root,
        str(tmp_path / "lists"),
        query_size=4,
        train_size=0.5,
        database_includes_train=False,
    )
    splits, _ = _read(tmp_path / "lists")
    total = sum(CLASSES.values())
    assert len(splits["query"]) == 4 and len(splits["train"]) == 8
    assert len(splits["database"]) == total - 12
    sets = {name: set(split.paths) for name, split in splits.items()}
    assert not sets["train"] & sets["database"] and not sets["query"] & sets["database"]
    assert preparation.check_prepared(prepared, str(tmp_path / "lists"), decode=False) == []


def _manifest_tree(tmp_path):
    root = tmp_path / "photos"
    rows = []
    for i in range(12):
        write_jpeg(str(root / "all" / f"{i}.jpg"), i)
        labels = ["sky"] + (["sea"] if i % 2 else []) + (["boat"] if i % 3 == 0 else [])
        tags = ["summer", "blue"] if i % 2 else ["holiday"]
        rows.append((f"all/{i}.jpg", labels, tags))
    return root, rows


@pytest.mark.parametrize("form", ["csv", "jsonl"])
def test_manifest_with_labels_and_tags(tmp_path, form):
    root, rows = _manifest_tree(tmp_path)
    manifest = tmp_path / f"photos.{form}"
    if form == "csv":
        lines = ["path,labels,tags"] + [f"{p},{'|'.join(lb)},{'|'.join(t)}" for p, lb, t in rows]
    else:
        lines = [json.dumps({"path": p, "labels": lb, "tags": t}) for p, lb, t in rows]
    manifest.write_text("\n".join(lines) + "\n")
    prepared = image_folder.prepare(
        str(root), str(tmp_path / "lists"), manifest=str(manifest), query_size=3
    )
    assert protocols.read_manifest(str(tmp_path / "lists"))["layout"] == "wsdhq"
    splits, _ = _read(tmp_path / "lists")
    train = splits["train"]
    expected = {p: (lb, t) for p, lb, t in rows}
    assert train.label_names == ("boat", "sea", "sky")
    assert train.tag_names == ("blue", "holiday", "summer")
    for path, labels, tags in zip(train.paths, train.labels, train.tags, strict=True):
        want_labels, want_tags = expected[os.path.relpath(path, root)]
        assert [train.label_names[i] for i in np.flatnonzero(labels)] == sorted(want_labels)
        assert [train.tag_names[i] for i in np.flatnonzero(tags)] == sorted(want_tags)
    assert preparation.check_prepared(prepared, str(tmp_path / "lists"), decode=True) == []


def test_what_real_photo_folders_hold_gives_clear_errors(tmp_path):
    root, _ = _manifest_tree(tmp_path)
    bad = {
        "no class subfolders": (str(tmp_path / "photos" / "all"), None),
        "outside --root": (str(root), "path,labels\n../elsewhere.jpg,sky\n"),
        "does not exist": (str(root), "path,labels\nall/missing.jpg,sky\n"),
        "have no labels": (str(root), "path,labels\nall/1.jpg,\n"),
        "needs a header row": (str(root), "file,label\nall/1.jpg,sky\n"),
        "not valid JSON": (str(root), "{broken\n"),
        "paths repeat": (str(root), "path,labels\nall/1.jpg,sky\nall/1.jpg,sea\n"),
    }
    for expected, (where, text) in bad.items():
        manifest = None
        if text is not None:
            manifest = tmp_path / ("m.jsonl" if text.startswith("{") else "m.csv")
            manifest.write_text(text)
        with pytest.raises(ValueError, match=expected):
            image_folder.prepare(where, str(tmp_path / "out"), manifest=manifest and str(manifest))
    write_jpeg(str(tmp_path / "spaced" / "cat" / "IMG 1.jpg"))
    with pytest.raises(ValueError, match="contain whitespace.*IMG 1.jpg"):
        image_folder.prepare(str(tmp_path / "spaced"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="asks for 40 of 12"):
        image_folder.prepare(str(root), str(tmp_path / "out"), query_size=40)
    with pytest.raises(protocols.MissingDownloadError):
        image_folder.prepare(str(tmp_path / "nowhere"), str(tmp_path / "out"))


def test_prepare_cli(tmp_path):
    root = class_tree(str(tmp_path / "photos"))
    command = [
        sys.executable,
        "-m",
        "wsdhash.data.prepare",
        "--dataset=image_folder",
        f"--root={root}",
        f"--output_dir={tmp_path / 'lists'}",
        "--query_size=6",
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "all checks passed" in result.stdout
    assert len(_read(tmp_path / "lists")[0]["query"]) == 6
    result = subprocess.run(
        [*command[:-1], "--query_size=-1"], check=False, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "wsdhash.data.prepare: error: --query_size must be >= 0 and <= 1000000000, got -1.0."
    ]


def test_cifar10_on_class_folders_points_to_image_folder(tmp_path):
    from wsdhash.data.sources import cifar10

    for name in ("airplane", "cat"):
        write_jpeg(str(tmp_path / "cifar" / name / "0.jpg"))
    with pytest.raises(protocols.MissingDownloadError, match="--dataset=image_folder"):
        cifar10.prepare(str(tmp_path / "cifar"), str(tmp_path / "out"))


SPLIT_TREE = {"train": {"cat": 4, "dog": 3}, "test": {"cat": 2, "dog": 2}, "val": {"dog": 2}}


def split_tree(root):
    """root/<split>/<class>/*.jpg, as the CIFAR-10 JPEG folders come."""
    seed = 0
    for split, classes in SPLIT_TREE.items():
        for name, count in classes.items():
            for i in range(count):
                write_jpeg(os.path.join(root, split, name, f"{i}.jpg"), seed)
                seed += 1
    return root


def _relative_paths(split, root):
    return sorted(os.path.relpath(p, root) for p in split.paths)


def _files(root, *splits):
    return sorted(
        os.path.join(split, name, f"{i}.jpg")
        for split in splits
        for name, count in SPLIT_TREE[split].items()
        for i in range(count)
    )


def test_split_folders_keep_the_datasets_own_split(tmp_path):
    root = split_tree(str(tmp_path / "photos"))
    # Without --query_from the split folders are not taken for two classes.
    with pytest.raises(ValueError, match=r"look like splits \(test, train, val\), not classes"):
        image_folder.prepare(root, str(tmp_path / "drawn"))

    prepared = image_folder.prepare(root, str(tmp_path / "lists"), query_from=["test"])
    splits, _ = _read(tmp_path / "lists")
    assert _relative_paths(splits["query"], root) == _files(root, "test")
    assert _relative_paths(splits["train"], root) == _files(root, "train", "val")
    assert _relative_paths(splits["database"], root) == _files(root, "train", "val")
    assert splits["query"].label_names == ("cat", "dog")  # classes, not splits
    for split in splits.values():
        for path, row in zip(split.paths, split.labels, strict=True):
            assert split.label_names[int(row.argmax())] == path.split(os.sep)[-2]
    assert preparation.check_prepared(prepared, str(tmp_path / "lists"), decode=True) == []
    assert protocols.read_manifest(str(tmp_path / "lists"))["query_from"] == ["test"]

    # Training on train only; the database keeps val too, or val alone without train,
    # or train alone (val then left out, and said so).
    image_folder.prepare(root, str(tmp_path / "a"), query_from=["test"], train_from=["train"])
    splits, _ = _read(tmp_path / "a")
    assert _relative_paths(splits["train"], root) == _files(root, "train")
    assert _relative_paths(splits["database"], root) == _files(root, "train", "val")
    image_folder.prepare(
        root,
        str(tmp_path / "b"),
        query_from=["test"],
        train_from=["train"],
        database_includes_train=False,
    )
    assert _relative_paths(_read(tmp_path / "b")[0]["database"], root) == _files(root, "val")
    prepared = image_folder.prepare(
        root,
        str(tmp_path / "c"),
        query_from=["test"],
        train_from=["train"],
        database_from=["train"],
    )
    assert _relative_paths(_read(tmp_path / "c")[0]["database"], root) == _files(root, "train")
    assert any("left out: val (2)" in note for note in prepared.notes)

    # Sizes draw from the given splits, seeded; the database keeps every train item.
    prepared = image_folder.prepare(
        root,
        str(tmp_path / "d"),
        query_from=["test"],
        train_from=["train"],
        query_size=2,
        train_size=0.5,
        seed=3,
    )
    splits, _ = _read(tmp_path / "d")
    assert len(splits["query"]) == 2 and set(_relative_paths(splits["query"], root)) < set(
        _files(root, "test")
    )
    assert len(splits["train"]) == 4 and set(_relative_paths(splits["train"], root)) < set(
        _files(root, "train")
    )
    assert _relative_paths(splits["database"], root) == _files(root, "train", "val")
    assert preparation.check_prepared(prepared, str(tmp_path / "d"), decode=False) == []


def test_manifest_split_column_keeps_the_datasets_own_split(tmp_path):
    root, rows = _manifest_tree(tmp_path)
    lines = ["path,labels,split"] + [
        f"{p},{'|'.join(lb)},{'test' if i < 3 else 'train'}" for i, (p, lb, _) in enumerate(rows)
    ]
    manifest = tmp_path / "photos.csv"
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"name their split \(test, train\); keep it with "):
        image_folder.prepare(str(root), str(tmp_path / "x"), manifest=str(manifest))
    prepared = image_folder.prepare(
        str(root), str(tmp_path / "lists"), manifest=str(manifest), query_from=["test"]
    )
    splits, _ = _read(tmp_path / "lists")
    assert _relative_paths(splits["query"], root) == sorted(p for p, _, _ in rows[:3])
    assert _relative_paths(splits["train"], root) == sorted(p for p, _, _ in rows[3:])
    assert _relative_paths(splits["database"], root) == sorted(p for p, _, _ in rows[3:])
    assert preparation.check_prepared(prepared, str(tmp_path / "lists"), decode=False) == []

    jsonl = tmp_path / "photos.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps({"path": p, "labels": lb, **({"split": "query"} if i < 2 else {})})
            for i, (p, lb, _) in enumerate(rows)
        )
    )
    with pytest.raises(ValueError, match="needs every manifest item's split; 10 have none"):
        image_folder.prepare(
            str(root), str(tmp_path / "y"), manifest=str(jsonl), query_from=["query"]
        )


def test_given_split_errors_name_the_splits(tmp_path):
    root = split_tree(str(tmp_path / "photos"))
    cases = {
        r"query_from=tset: no items in split\(s\) tset; the splits are test, train, val": {
            "query_from": ["tset"]
        },
        "test are both in query_from and train_from": {
            "query_from": ["test"],
            "train_from": ["test", "train"],
        },
        "train_from / database_from need query_from": {"train_from": ["train"]},
        "database_includes_train does not apply": {
            "query_from": ["test"],
            "database_from": ["val"],
            "database_includes_train": True,
        },
    }
    for message, options in cases.items():
        with pytest.raises(ValueError, match=message):
            image_folder.prepare(root, str(tmp_path / "out"), **options)


def test_prepare_cli_keeps_split_folders(tmp_path):
    root = split_tree(str(tmp_path / "photos"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wsdhash.data.prepare",
            "--dataset=image_folder",
            f"--root={root}",
            f"--output_dir={tmp_path / 'lists'}",
            "--query_from=test",
            "--train_from=train",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "all checks passed" in result.stdout
    splits, _ = _read(tmp_path / "lists")
    assert _relative_paths(splits["query"], root) == _files(root, "test")
    assert _relative_paths(splits["train"], root) == _files(root, "train")
