"""PASCAL VOC 2007 / 2012 through TFDS (`voc/2007`, `voc/2012`), HyP2's protocol.

Labels: a 20-d multi-hot vector over the classes of ALL annotated objects, including
the ones marked `difficult` (HyP2 reads every XML object). Splits (docs/methods.md,
"Dataset protocols"):

* VOC2007: train = database = trainval (5,011), query = test (4,952), R = all.
* VOC2012: train = database = train (5,717), query = validation (5,823), R = all.

The images are written as files once (tfds_images.py); `root` is the TFDS data dir.
"""

from __future__ import annotations

import functools

import numpy as np

from wsdhash.data import protocols
from wsdhash.data.dataset_spec import DatasetSpec, register
from wsdhash.data.list_datasets import prepared_lists
from wsdhash.data.sources import splits as splits_lib
from wsdhash.data.sources import tfds_images

CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
# year -> (TFDS split of train/database, TFDS split of the queries, their published sizes)
SPLITS = {
    "2007": ("train+validation", "test", 5011, 4952),
    "2012": ("train", "validation", 5717, 5823),
}


def object_labels(example: dict) -> np.ndarray:
    """20-d multi-hot over every object of the image, difficult ones included."""
    row = np.zeros(len(CLASSES), np.uint8)
    row[np.asarray(example["objects"]["label"], np.int64)] = 1
    return row


def prepare(
    root: str | None,
    output_dir: str,
    *,
    year: str,
    seed: int = 0,
    download: bool = False,
    progress=None,
) -> protocols.Prepared:
    """Writes VOC `year` images and lists (module doc)."""
    del seed  # the protocol's splits are the official ones
    train_split, query_split, num_train, num_query = SPLITS[year]
    name = f"voc{year}"
    data = {}
    for role, split in (("train", train_split), ("query", query_split)):
        data[role] = tfds_images.materialize(
            f"voc/{year}",
            split,
            output_dir,
            data_dir=root,
            download=download,
            label_fn=object_labels,
            progress=progress,
        )
    names = data["train"][0] + data["query"][0]
    labels = np.concatenate([data["train"][1], data["query"][1]])
    train = np.arange(len(data["train"][0]))
    query = np.arange(len(train), len(names))
    splits_lib.write_hashnet_splits(
        output_dir,
        names,
        labels,
        {"train": train, "database": train, "query": query},
        {
            "dataset": name,
            "protocol": "hyp2",
            "image_root": ".",
            "label_names": list(CLASSES),
            "source": f"tfds voc/{year}",
        },
    )
    return protocols.Prepared(
        name,
        {},
        protocols.Protocol(
            counts={"train": num_train, "query": num_query, "database": num_train},
            disjoint=(("query", "database"),),
            contained=(("train", "database"), ("database", "train")),
            num_classes=len(CLASSES),
            topk=None,
        ),
    )


# VOC's published preprocessing: 448 x 448, no crop.
VOC2007 = register(
    DatasetSpec(
        "voc2007",
        prepared_lists("voc2007", topk=None, image_size=448, crop_size=448),
        functools.partial(prepare, year="2007"),
        prepare_root=("TFDS data dir (--download to fetch)",),
        prepare_label="voc2007/2012",
    )
)
VOC2012 = register(
    DatasetSpec(
        "voc2012",
        prepared_lists("voc2012", topk=None, image_size=448, crop_size=448),
        functools.partial(prepare, year="2012"),
    )
)
