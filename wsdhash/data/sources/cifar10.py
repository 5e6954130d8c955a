"""CIFAR-10 through TFDS with OrthoHash's two protocols (docs/methods.md, "Dataset
protocols").

The 60,000 images (TFDS `train` then `test`, file order) are pooled and written as
PNG files once; the split is drawn from the pool with the seed and saved as lists:

* protocol 1: 100 query and 500 train images per class; database = every image not
  in the query (59,000, train included); R = all.
* protocol 2: 1,000 query images per class; train = database = the other 50,000;
  R = all.
"""

from __future__ import annotations

import os

import numpy as np

from wsdhash.data import protocols
from wsdhash.data.dataset_spec import DatasetSpec, register
from wsdhash.data.list_datasets import prepared_lists
from wsdhash.data.sources import splits as splits_lib
from wsdhash.data.sources import tfds_images

CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
PER_CLASS = {1: (100, 500), 2: (1000, None)}


def prepare(
    root: str | None,
    output_dir: str,
    *,
    seed: int = 0,
    protocol: int = 1,
    download: bool = False,
    query_per_class: int | None = None,
    train_per_class: int | None = None,
    progress=None,
) -> protocols.Prepared:
    """Writes the pooled images and the protocol's lists (module doc)."""
    protocol = int(protocol)
    if protocol not in PER_CLASS:
        raise ValueError(f"cifar10: protocol must be 1 or 2; got {protocol!r}.")
    default_query, default_train = PER_CLASS[protocol]
    query_per_class = query_per_class or default_query
    train_per_class = train_per_class or default_train
    if root and os.path.isdir(root):
        folders = {e.name for e in os.scandir(root) if e.is_dir()}
        if len(folders & set(CLASSES)) >= 2:  # a user's per-class image folders
            raise protocols.MissingDownloadError(
                f"cifar10: {root} holds per-class image folders, not a TFDS data dir; "
                f"prepare them with --dataset=image_folder --root={root} (seeded splits), "
                "or give the TFDS data dir of cifar10."
            )
    names, labels = tfds_images.materialize(
        "cifar10",
        "train+test",
        output_dir,
        data_dir=root,
        download=download,
        label_fn=lambda example: tfds_images.one_hot(example["label"], len(CLASSES)),
        progress=progress,
    )
    rng = np.random.default_rng(seed)
    query = splits_lib.sample_per_class(labels, query_per_class, rng)
    rest = np.setdiff1d(np.arange(len(names)), query)
    if protocol == 1:
        train = np.sort(splits_lib.sample_per_class(labels, train_per_class, rng, exclude=query))
        database = rest
    else:
        train = database = rest
    splits_lib.write_hashnet_splits(
        output_dir,
        names,
        labels,
        {"query": query, "train": train, "database": database},
        {
            "dataset": "cifar10",
            "protocol": f"protocol{protocol}",
            "image_root": ".",
            "seed": seed,
            "label_names": list(CLASSES),
            "source": "tfds cifar10 (train then test, pooled)",
        },
    )
    classes = len(CLASSES)
    return protocols.Prepared(
        "cifar10",
        {},
        protocols.Protocol(
            counts={
                "query": classes * query_per_class,
                "train": classes * train_per_class if protocol == 1 else len(rest),
                "database": len(names) - classes * query_per_class,
            },
            disjoint=(("query", "database"), ("query", "train")),
            contained=(("train", "database"),),
            num_classes=classes,
            topk=None,
        ),
    )


def _output_folder(protocol: str | None) -> str:
    return os.path.join("data", "cifar10", f"protocol{protocol or 1}")


SPEC = register(
    DatasetSpec(
        "cifar10",
        prepared_lists("cifar10", topk=None, image_size=224, crop_size=224),
        prepare,
        default_protocol="1",
        protocol_type=int,
        output_folder=_output_folder,
        prepare_root=("TFDS data dir",),
        prepare_protocol="1 (default), 2",
    )
)
