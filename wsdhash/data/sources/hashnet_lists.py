"""Datasets distributed as HashNet-format lists: NUS-WIDE-21, ImageNet100, MS-COCO.

The lists (`train.txt`, `test.txt`, `database.txt`; `path l1 ... lC` per line) come
from the HashNet and DeepHash-pytorch repositories; the images from the datasets'
official sites. Preparing checks every line, copies the lists (atomically, unchanged)
into the output folder and records where the images are.
"""

from __future__ import annotations

import functools
import os

from wsdhash.data import list_files, protocols
from wsdhash.data.dataset_spec import DatasetSpec, register
from wsdhash.data.list_datasets import HASHNET_FILES, prepared_lists

PROTOCOLS = {
    "nuswide": protocols.Protocol(
        counts={"query": 2100, "train": 10500, "database": 193734},
        disjoint=(("query", "database"),),
        contained=(("train", "database"),),
        num_classes=21,
        topk=5000,
    ),
    "imagenet100": protocols.Protocol(
        counts={"query": 5000, "train": 13000, "database": None},  # ~128k
        disjoint=(("query", "database"),),
        contained=(("train", "database"),),
        num_classes=100,
        topk=1000,
    ),
    "coco": protocols.Protocol(
        counts={"query": 5000, "train": 10000, "database": 117218},
        disjoint=(("query", "database"),),
        contained=(("train", "database"),),
        num_classes=80,
        topk=5000,
    ),
}

WHERE_TO_GET = {
    "nuswide": (
        "Lists: data/nuswide_21/{train,test,database}.txt of "
        "https://github.com/swuxyj/DeepHash-pytorch (or HashNet's nus_wide lists); images: "
        "NUS-WIDE, https://lms.comp.nus.edu.sg/wp-content/uploads/2019/research/nuswide/"
        "NUS-WIDE.html. Pass the image folder the list paths start from as --image_root."
    ),
    "imagenet100": (
        "Lists: pytorch/data/imagenet/{train,test,database}.txt of "
        "https://github.com/thuml/HashNet; images: ILSVRC2012 from https://image-net.org. "
        "Pass the folder the list paths start from as --image_root."
    ),
    "coco": (
        "Lists: pytorch/data/coco/{train,test,database}.txt of "
        "https://github.com/thuml/HashNet; images: train2014/val2014 from "
        "https://cocodataset.org. Pass the folder the list paths start from as --image_root."
    ),
}


def prepare(
    root: str,
    output_dir: str,
    *,
    dataset: str,
    seed: int = 0,
    image_root: str | None = None,
    protocol: str = "hashnet",
) -> protocols.Prepared:
    """Copies checked HashNet lists from `root` into `output_dir`.

    Args:
        root: folder with `train.txt`, `test.txt`, `database.txt`.
        output_dir: where the lists and the manifest go.
        dataset: "nuswide", "imagenet100" or "coco".
        seed: unused (the lists are fixed); accepted for a uniform signature.
        image_root: folder the list paths are relative to (default: `root`).
        protocol: only "hashnet".
    """
    del seed
    if protocol != "hashnet":
        raise ValueError(f"{dataset} lists: protocol must be 'hashnet'; got {protocol!r}.")
    protocols.require_files(root, HASHNET_FILES.values(), dataset, WHERE_TO_GET[dataset])
    os.makedirs(output_dir, exist_ok=True)
    expected = PROTOCOLS[dataset].num_classes
    for split, file_name in HASHNET_FILES.items():
        source = os.path.join(root, file_name)
        data = list_files.read_hashnet_list(
            source, root, split=split, num_classes=expected, check_files=False
        )
        names = [os.path.relpath(path, root) for path in data.paths]
        list_files.write_hashnet_list(os.path.join(output_dir, file_name), names, data.labels)
    images = os.path.abspath(image_root or root)
    protocols.write_manifest(
        output_dir,
        {"dataset": dataset, "protocol": protocol, "layout": "hashnet", "image_root": images},
    )
    return protocols.Prepared(dataset, {}, PROTOCOLS[dataset])


IMAGENET100 = register(
    DatasetSpec(
        "imagenet100",
        prepared_lists("imagenet100", topk=1000),
        functools.partial(prepare, dataset="imagenet100"),
        prepare_root=("HashNet lists (--image_root: images)",),
    )
)
COCO = register(
    DatasetSpec(
        "coco",
        prepared_lists("coco", topk=5000),
        functools.partial(prepare, dataset="coco"),
        prepare_root=("HashNet lists (--image_root: images)",),
    )
)
