"""Stanford Dogs from its official layout or TFDS (`stanford_dogs`).

Official layout (images.tar and lists.tar), under `root`:

    train_list.mat, test_list.mat   MATLAB files with `file_list` (relative image
                                    paths, e.g. n02085620-Chihuahua/n02085620_5927.jpg)
                                    and `labels` (1..120)
    Images/<synset>-<breed>/<file>.jpg

Protocol of the triplet re-implementation (docs/methods.md, "Dataset protocols"):
query = test (8,580), train = database = train (12,000), 120 classes, R = all.
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

NUM_CLASSES = 120
WHERE_TO_GET = (
    "Download images.tar and lists.tar from http://vision.stanford.edu/aditya86/"
    "ImageNetDogs/ and unpack them into --root, or pass --source=tfds to read TFDS "
    "stanford_dogs."
)


def read_mat_list(path: str) -> tuple[list[str], np.ndarray]:
    """(relative paths, labels 0..119) of one official `.mat` list."""
    import scipy.io  # pylint: disable=g-import-not-at-top

    if not os.path.isfile(path):
        raise protocols.MissingDownloadError(f"stanford_dogs: {path} is missing. {WHERE_TO_GET}")
    try:
        contents = scipy.io.loadmat(path)
    except (ValueError, OSError) as error:
        raise DataFormatError(f"{path}: not a MATLAB file ({error}).") from None
    if "file_list" not in contents or "labels" not in contents:
        raise DataFormatError(
            f"{path}: expected variables file_list and labels; found "
            f"{sorted(k for k in contents if not k.startswith('__'))}."
        )
    names = [str(np.asarray(item).ravel()[0]) for item in np.asarray(contents["file_list"]).ravel()]
    labels = np.asarray(contents["labels"]).ravel().astype(np.int64) - 1
    if len(labels) != len(names):
        raise DataFormatError(f"{path}: {len(names)} files but {len(labels)} labels.")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataFormatError(f"{path}: labels must be 1..{NUM_CLASSES}.")
    return names, labels


def prepare(
    root: str | None,
    output_dir: str,
    *,
    seed: int = 0,
    source: str = "auto",
    download: bool = False,
    progress=None,
) -> protocols.Prepared:
    """Writes the lists (module doc); `source` is "official", "tfds" or "auto"."""
    del seed
    official = root is not None and os.path.isfile(os.path.join(root, "train_list.mat"))
    if source == "official" or (source == "auto" and official):
        train_names, train_labels = read_mat_list(os.path.join(root, "train_list.mat"))
        test_names, test_labels = read_mat_list(os.path.join(root, "test_list.mat"))
        names = train_names + test_names
        labels = np.eye(NUM_CLASSES, dtype=np.uint8)[np.concatenate([train_labels, test_labels])]
        train = np.arange(len(train_names))
        query = np.arange(len(train_names), len(names))
        image_root = os.path.abspath(os.path.join(root, "Images"))
        class_names = sorted({n.split("/")[0] for n in names})
        if len(class_names) != NUM_CLASSES:
            class_names = [str(c) for c in range(1, NUM_CLASSES + 1)]
    elif source in ("tfds", "auto"):
        names, labels, train, query = tfds_images.train_test_classification(
            "stanford_dogs",
            NUM_CLASSES,
            output_dir,
            data_dir=root,
            download=download,
            progress=progress,
        )
        image_root, class_names = ".", [str(c) for c in range(1, NUM_CLASSES + 1)]
    else:
        raise ValueError(f"stanford_dogs: source must be official, tfds or auto; got {source!r}.")
    return splits_lib.write_train_test_retrieval(
        output_dir,
        "stanford_dogs",
        names,
        labels,
        train,
        query,
        image_root=image_root,
        label_names=class_names,
        num_train=12000,
        num_query=8580,
    )


SPEC = register(
    DatasetSpec(
        "stanford_dogs",
        prepared_lists("stanford_dogs", topk=None),
        prepare,
        prepare_root=("Images/ + *_list.mat or TFDS data dir",),
    )
)
