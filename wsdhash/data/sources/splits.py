"""Seeded split sampling and list writing shared by the preparers.

Every preparer ends the same way: items (relative image paths with labels, maybe
tags) are split by a seeded rule into query / train / database and written as lists
plus a manifest. The rules of the published protocols live here so each is written
once: a random permutation cut into consecutive blocks (HyP2's Flickr split), a fixed
number of items per class (NUS-WIDE-21, CIFAR-10).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from wsdhash.data import list_files, protocols


def sample_per_class(
    labels: np.ndarray, per_class: int, rng: np.random.Generator, exclude: np.ndarray | None = None
) -> np.ndarray:
    """Indices with `per_class` items of every class, none twice, none in `exclude`.

    Classes are visited in column order; a multi-label item drawn for one class is not
    drawn again for another (the NUS-WIDE-21 rule "100 images per concept").

    Raises:
        ValueError: a class has fewer than `per_class` items left.
    """
    labels = np.asarray(labels) != 0
    taken = np.zeros(len(labels), bool)
    if exclude is not None:
        taken[np.asarray(exclude, np.int64)] = True
    chosen = []
    for c in range(labels.shape[1]):
        candidates = np.flatnonzero(labels[:, c] & ~taken)
        if len(candidates) < per_class:
            raise ValueError(
                f"class {c} has {len(candidates)} items left, fewer than the protocol's "
                f"{per_class} per class."
            )
        pick = rng.choice(candidates, per_class, replace=False)
        taken[pick] = True
        chosen.append(np.sort(pick))
    return np.concatenate(chosen) if chosen else np.zeros(0, np.int64)


def permutation_blocks(num_items: int, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """A seeded permutation of 0..N-1 cut into consecutive blocks of `sizes`, then the
    rest (so len(result) == len(sizes) + 1)."""
    if sum(sizes) > num_items:
        raise ValueError(f"the protocol needs {sum(sizes)} items; only {num_items} are available.")
    order = np.random.default_rng(seed).permutation(num_items)
    bounds = np.cumsum([0, *sizes])
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)] + [
        order[bounds[-1] :]
    ]


def write_hashnet_splits(
    output_dir: str,
    names: Sequence[str],
    labels: np.ndarray,
    splits: dict[str, np.ndarray],
    manifest: dict,
) -> None:
    """Writes train.txt / test.txt / database.txt (HashNet layout) and the manifest.

    Args:
        output_dir: the dataset folder.
        names: all items' relative image paths.
        labels: all items' (N, C) labels.
        splits: split name ("train", "query", "database") -> item indices.
        manifest: written as the dataset's manifest (image root, protocol, ...).
    """
    os.makedirs(output_dir, exist_ok=True)
    names = np.asarray(names)
    for split, file_name in (
        ("train", "train.txt"),
        ("query", "test.txt"),
        ("database", "database.txt"),
    ):
        index = splits[split]
        list_files.write_hashnet_list(
            os.path.join(output_dir, file_name), list(names[index]), labels[index]
        )
    protocols.write_manifest(output_dir, {"layout": "hashnet", **manifest})


def write_wsdhq_splits(
    output_dir: str,
    names: Sequence[str],
    labels: np.ndarray,
    tags: np.ndarray,
    tag_vocabulary: Sequence[str],
    splits: dict[str, np.ndarray],
    manifest: dict,
) -> None:
    """Writes the WSDHQ layout (`*_img.txt`, `*_label.txt`, `train_tag.txt`,
    `tag_vocab.txt`) and the manifest; only the train split keeps its tags."""
    os.makedirs(output_dir, exist_ok=True)
    names = np.asarray(names)
    for split in ("train", "query", "database"):
        index = splits[split]
        list_files.write_wsdhq_split(
            output_dir,
            split,
            list(names[index]),
            labels[index],
            tags[index] if split == "train" else None,
        )
    list_files.write_name_list(os.path.join(output_dir, "tag_vocab.txt"), tag_vocabulary)
    protocols.write_manifest(
        output_dir, {"layout": "wsdhq", "tag_vocab": "tag_vocab.txt", **manifest}
    )


def write_train_test_retrieval(
    output_dir: str,
    dataset: str,
    names,
    labels: np.ndarray,
    train: np.ndarray,
    query: np.ndarray,
    *,
    image_root: str,
    label_names,
    num_train: int,
    num_query: int,
) -> protocols.Prepared:
    """The fine-grained protocol of the triplet re-implementation (docs/methods.md,
    "Dataset protocols"): train = database = the training split, query = the test split,
    single label, R = all. Writes the lists and returns what they must satisfy."""
    write_hashnet_splits(
        output_dir,
        names,
        labels,
        {"train": train, "database": train, "query": query},
        {
            "dataset": dataset,
            "protocol": "dnnh",
            "image_root": image_root,
            "label_names": list(label_names),
        },
    )
    return protocols.Prepared(
        dataset,
        {},
        protocols.Protocol(
            counts={"train": num_train, "query": num_query, "database": num_train},
            disjoint=(("query", "database"),),
            contained=(("train", "database"), ("database", "train")),
            num_classes=labels.shape[1],
            topk=None,
        ),
    )
