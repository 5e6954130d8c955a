"""CUB-200-2011 from its official layout or TFDS (`caltech_birds2011`).

Official layout (`CUB_200_2011.tgz`), under `root` or `root/CUB_200_2011`:

    images.txt              "<id> <class folder>/<file>.jpg"
    image_class_labels.txt  "<id> <class 1..200>"
    train_test_split.txt    "<id> <1 = train, 0 = test>"
    classes.txt             "<class> <name>" (optional, for label names)
    images/<class folder>/<file>.jpg

Protocol of the triplet re-implementation (docs/methods.md, "Dataset protocols"):
query = test (5,794), train = database = train (5,994), 200 classes, R = all.
"""

from __future__ import annotations

import os

import numpy as np

from wsdhash.data import protocols
from wsdhash.data.dataset_spec import DatasetSpec, register
from wsdhash.data.list_datasets import prepared_lists
from wsdhash.data.sources import splits as splits_lib
from wsdhash.data.sources import tfds_images
from wsdhash.data.types import DataFormatError

NUM_CLASSES = 200
WHERE_TO_GET = (
    "Download CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ "
    "and unpack it into --root, or pass --source=tfds to read TFDS caltech_birds2011."
)


def _id_table(path: str, value_name: str) -> dict[int, str]:
    if not os.path.isfile(path):
        raise protocols.MissingDownloadError(f"cub200: {path} is missing. {WHERE_TO_GET}")
    table = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            head, _, value = line.strip().partition(" ")
            if not head.isdigit() or not value.strip():
                raise DataFormatError(
                    f"{path}:{number}: expected '<id> <{value_name}>', found {line.strip()!r}."
                )
            table[int(head)] = value.strip()
    return table


def read_official(root: str):
    """(names relative to the images folder, labels 0..199, is_train, images folder, class
    names) from the official text files."""
    base = os.path.join(root, "CUB_200_2011")
    base = base if os.path.isdir(base) else root
    images = _id_table(os.path.join(base, "images.txt"), "path")
    classes = _id_table(os.path.join(base, "image_class_labels.txt"), "class")
    split = _id_table(os.path.join(base, "train_test_split.txt"), "is_training_image")
    ids = sorted(images)
    for table, name in ((classes, "image_class_labels.txt"), (split, "train_test_split.txt")):
        missing = [i for i in ids if i not in table]
        if missing:
            raise DataFormatError(
                f"{os.path.join(base, name)}: no entry for image id {missing[0]} "
                f"({len(missing)} ids missing)."
            )
    labels = np.array([int(classes[i]) - 1 for i in ids])
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataFormatError(
            f"{os.path.join(base, 'image_class_labels.txt')}: classes must be 1..{NUM_CLASSES}."
        )
    is_train = np.array([split[i] == "1" for i in ids])
    names_path = os.path.join(base, "classes.txt")
    class_names = (
        [v for _, v in sorted(_id_table(names_path, "name").items())]
        if os.path.isfile(names_path)
        else [str(c) for c in range(1, NUM_CLASSES + 1)]
    )
    return [images[i] for i in ids], labels, is_train, os.path.join(base, "images"), class_names


def prepare(
    root: str | None,
    output_dir: str,
    *,
    seed: int = 0,
    source: str = "auto",
    download: bool = False,
    progress=None,
) -> protocols.Prepared:
    """Writes the lists (module doc); `source` is "official", "tfds" or "auto" (official
    files when `root` has them, else TFDS with `root` as its data dir)."""
    del seed
    official = root is not None and any(
        os.path.isfile(os.path.join(root, *parts, "images.txt"))
        for parts in ((), ("CUB_200_2011",))
    )
    if source == "official" or (source == "auto" and official):
        names, classes, is_train, image_root, class_names = read_official(root)
        labels = np.eye(NUM_CLASSES, dtype=np.uint8)[classes]
        train, query = np.flatnonzero(is_train), np.flatnonzero(~is_train)
    elif source in ("tfds", "auto"):
        names, labels, train, query = tfds_images.train_test_classification(
            "caltech_birds2011",
            NUM_CLASSES,
            output_dir,
            data_dir=root,
            download=download,
            progress=progress,
        )
        image_root, class_names = ".", [str(c) for c in range(1, NUM_CLASSES + 1)]
    else:
        raise ValueError(f"cub200: source must be official, tfds or auto; got {source!r}.")
    return splits_lib.write_train_test_retrieval(
        output_dir,
        "cub200",
        names,
        labels,
        train,
        query,
        image_root=image_root if image_root == "." else os.path.abspath(image_root),
        label_names=class_names,
        num_train=5994,
        num_query=5794,
    )


SPEC = register(
    DatasetSpec(
        "cub200",
        prepared_lists("cub200", topk=None),
        prepare,
        prepare_root=("CUB_200_2011 or TFDS data dir",),
    )
)
