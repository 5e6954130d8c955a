"""NUS-WIDE: NUS-WIDE-21 from HashNet lists, or the WSDHQ tag protocol from the
official release.

`protocol="hashnet"` (default): the HashNet / DeepHash-pytorch lists in `root`
(hashnet_lists.py): 2,100 / 10,500 / 193,734, R = 5,000.

`protocol="wsdhq"`: from the official release unpacked in `root`:

    ImageList/Imagelist.txt            one Windows path per image, e.g.
                                       C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg
    NUS_WID_Tags/TagList1k.txt         the 1,000-tag vocabulary, one tag per line
    NUS_WID_Tags/AllTags1k.txt         per image, 1,000 space-separated 0/1 values
    Groundtruth/AllLabels/Labels_<concept>.txt
                                       per image one 0/1 value, for the 81 concepts
    Flickr/<concept>/<file>.jpg        the images (the path after `ImageData\\`)

The 21 most frequent concepts are the labels (NUS-WIDE-21); images with none of
them, or whose file is missing, are left out and counted in the report. The WSDHQ
split files are not published (docs/methods.md, "Dataset protocols"), so wsdhash uses
the NUS-WIDE-21 rule:
100 query images per concept, the database is the rest, and 500 training images per
concept are drawn from the database (about 10,500, the logs put WSDHQ's at ~10.1k).
Training uses the TagList1k tags; labels are ground truth for evaluation only.
"""

from __future__ import annotations

import os

import numpy as np

from wsdhash.data import list_files, protocols
from wsdhash.data.dataset_spec import DatasetSpec, register
from wsdhash.data.list_datasets import prepared_lists
from wsdhash.data.sources import splits as splits_lib
from wsdhash.data.types import DataFormatError

WHERE_TO_GET = (
    "Download ImageList, NUS_WID_Tags, Groundtruth and the images from "
    "https://lms.comp.nus.edu.sg/wp-content/uploads/2019/research/nuswide/NUS-WIDE.html "
    "and unpack them into --root."
)
NUM_CONCEPTS = 21


def _read_matrix(path: str, rows: int, columns: int | None = None) -> np.ndarray:
    matrix = list_files.read_binary_matrix(path, columns=columns)
    if matrix.shape[0] != rows:
        raise DataFormatError(
            f"{path}: {matrix.shape[0]} rows, but the image list has {rows} images."
        )
    return matrix


def _relative_image_path(line: str, path: str, number: int) -> str:
    text = line.strip().replace("\\", "/")
    marker = "ImageData/"
    if marker in text:
        text = text.split(marker, 1)[1]
    if not text or " " in text:
        raise DataFormatError(f"{path}:{number}: unexpected image path {line!r}.")
    return text


def _read_image_list(root: str) -> list[str]:
    """The images' relative paths, from ImageList/Imagelist.txt."""
    list_path = os.path.join(root, "ImageList", "Imagelist.txt")
    with open(list_path, encoding="utf-8") as f:
        return [
            _relative_image_path(line, list_path, n) for n, line in enumerate(f, 1) if line.strip()
        ]


def _read_concept_labels(root: str, num_images: int) -> tuple[list[str], np.ndarray]:
    """(concept names, (images, concepts) 0/1 labels) from the Labels_<concept>.txt files."""
    label_dir = os.path.join(root, "Groundtruth", "AllLabels")
    concepts = sorted(
        f[len("Labels_") : -len(".txt")]
        for f in os.listdir(label_dir)
        if f.startswith("Labels_") and f.endswith(".txt")
    )
    if len(concepts) < NUM_CONCEPTS:
        raise DataFormatError(
            f"{label_dir}: {len(concepts)} Labels_<concept>.txt files; NUS-WIDE has 81."
        )
    all_labels = np.concatenate(
        [_read_matrix(os.path.join(label_dir, f"Labels_{c}.txt"), num_images) for c in concepts],
        axis=1,
    )
    return concepts, all_labels


def _top_concepts(all_labels: np.ndarray) -> np.ndarray:
    """Columns of the NUM_CONCEPTS most frequent concepts, in alphabetical order."""
    counts = all_labels.sum(axis=0)
    return np.sort(np.argsort(-counts, kind="stable")[:NUM_CONCEPTS])


def _usable_images(
    names: list[str], labels: np.ndarray, images: str
) -> tuple[np.ndarray, tuple[str, str]]:
    """Indices of the images with a label and a file under `images`, and notes counting
    the others."""
    exists = np.array([os.path.isfile(os.path.join(images, n)) for n in names])
    keep = np.flatnonzero(labels.any(axis=1) & exists)
    notes = (
        f"{int((~labels.any(axis=1)).sum())} images have none of the 21 concepts; not used",
        f"{int((~exists).sum())} listed images are missing under {images}; not used",
    )
    return keep, notes


def _wsdhq_splits(
    labels: np.ndarray, query_per_class: int, train_per_class: int, seed: int
) -> dict[str, np.ndarray]:
    """Split -> indices: seeded queries per concept, the database the rest, and seeded
    training items per concept from the database."""
    rng = np.random.default_rng(seed)
    query = splits_lib.sample_per_class(labels, query_per_class, rng)
    database = np.setdiff1d(np.arange(len(labels)), query)
    train = np.sort(
        splits_lib.sample_per_class(labels, train_per_class, rng, exclude=query)
    )  # from the database, since query items are excluded
    return {"query": query, "train": train, "database": database}


def _prepare_wsdhq(
    root: str,
    output_dir: str,
    *,
    seed: int,
    image_root: str | None,
    query_per_class: int,
    train_per_class: int,
) -> protocols.Prepared:
    """Writes the `wsdhq` lists (module doc) and returns what they must satisfy."""
    required = [
        "ImageList/Imagelist.txt",
        "NUS_WID_Tags/TagList1k.txt",
        "NUS_WID_Tags/AllTags1k.txt",
        "Groundtruth/AllLabels",
    ]
    protocols.require_files(root, required, "nuswide", WHERE_TO_GET)
    names = _read_image_list(root)
    vocabulary = list_files.read_name_list(os.path.join(root, "NUS_WID_Tags", "TagList1k.txt"))
    tags = _read_matrix(
        os.path.join(root, "NUS_WID_Tags", "AllTags1k.txt"), len(names), len(vocabulary)
    )
    concepts, all_labels = _read_concept_labels(root, len(names))
    top = _top_concepts(all_labels)
    labels = all_labels[:, top]
    images = os.path.abspath(image_root or root)
    keep, notes = _usable_images(names, labels, images)
    names = np.asarray(names)[keep]
    labels, tags = labels[keep], tags[keep]
    splits_lib.write_wsdhq_splits(
        output_dir,
        names,
        labels,
        tags,
        vocabulary,
        _wsdhq_splits(labels, query_per_class, train_per_class, seed),
        {
            "dataset": "nuswide",
            "protocol": "wsdhq",
            "image_root": images,
            "seed": seed,
            "label_names": [concepts[i] for i in top],
        },
    )
    return protocols.Prepared(
        "nuswide",
        {},
        protocols.Protocol(
            counts={
                "query": NUM_CONCEPTS * query_per_class,
                "train": NUM_CONCEPTS * train_per_class,
                "database": len(names) - NUM_CONCEPTS * query_per_class,
            },
            disjoint=(("query", "database"),),
            contained=(("train", "database"),),
            num_classes=NUM_CONCEPTS,
            topk=5000,
        ),
        notes,
    )


def prepare(
    root: str,
    output_dir: str,
    *,
    seed: int = 0,
    protocol: str = "hashnet",
    image_root: str | None = None,
    query_per_class: int = 100,
    train_per_class: int = 500,
) -> protocols.Prepared:
    """NUS-WIDE lists for `protocol` "hashnet" or "wsdhq" (module doc)."""
    if protocol == "hashnet":
        # Imported here so that importing this module registers no other dataset
        # (the registration order is the sources package's import order).
        from wsdhash.data.sources import hashnet_lists  # pylint: disable=g-import-not-at-top

        return hashnet_lists.prepare(
            root, output_dir, dataset="nuswide", seed=seed, image_root=image_root
        )
    if protocol != "wsdhq":
        raise ValueError(f"nuswide: protocol must be 'hashnet' or 'wsdhq'; got {protocol!r}.")
    return _prepare_wsdhq(
        root,
        output_dir,
        seed=seed,
        image_root=image_root,
        query_per_class=query_per_class,
        train_per_class=train_per_class,
    )


def _output_folder(protocol: str | None) -> str:
    if protocol == "wsdhq":
        return os.path.join("data", "nuswide", protocol)
    return os.path.join("data", "nuswide")


SPEC = register(
    DatasetSpec(
        "nuswide",
        prepared_lists("nuswide", topk=5000),
        prepare,
        output_folder=_output_folder,
        prepare_root=("HashNet lists / official release",),
        prepare_protocol="hashnet, wsdhq",
    )
)
