"""Turning a real dataset download into checked split lists.

A *preparer* (one module per dataset in `wsdhash.data.sources`) reads one dataset in
its official layout (or from TFDS), writes split lists that the dataset registry
(`wsdhash.data.datasets.DATASETS`) reads, and returns the protocol those lists must
satisfy. `check_prepared` then verifies the lists
through the dataset registry: split sizes match the protocol, query and train are
disjoint where the protocol says so, the train split is inside the database where it
says so, and every image exists and decodes. Problems are reported, never fixed by
silently dropping images.

Preparers are registered in `PREPARERS` (from each dataset's `DatasetSpec`, declared
in its `sources/` module; dataset_spec.py), one per dataset name, and share a
signature:

    preparer(root: str, output_dir: str, *, seed: int, **options) -> Prepared

`root` is the user's download folder, `output_dir` the folder the lists go into
(usually `data/<name>/`). The CLI is `python -m wsdhash.data.prepare`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import cv2
import numpy as np

from wsdhash.data import datasets as datasets_lib
from wsdhash.data.dataset_spec import PREPARERS
from wsdhash.data.protocols import Prepared, Protocol


def _decodes(path: str) -> bool:
    data = np.fromfile(path, dtype=np.uint8)
    return data.size > 0 and cv2.imdecode(data, cv2.IMREAD_COLOR) is not None


def check_prepared(
    prepared: Prepared,
    data_dir: str,
    *,
    decode: bool = True,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> list[str]:
    """Checks prepared lists against their protocol; returns the problems found.

    Args:
        prepared: what the preparer returned.
        data_dir: the folder the lists were written to.
        decode: also decode every image once (slow on big datasets, but it is the only
            way to find truncated downloads before training does).
        progress: wraps the image iteration (e.g. `tqdm.tqdm`) to show progress.

    Returns:
        One line per problem; empty when everything matches.
    """
    dataset = datasets_lib.get_dataset(prepared.dataset, data_dir, **prepared.options)
    protocol = prepared.protocol
    splits, problems = _read_splits(dataset)
    problems += _count_problems(protocol, dataset.splits, splits)
    problems += _label_problems(protocol, splits)
    problems += _relation_problems(protocol, splits)
    problems += _image_problems(splits, decode, progress)
    return problems


def _read_splits(dataset) -> tuple[dict, list[str]]:
    """Reads every split of `dataset`; returns the splits read and one problem per split
    that could not be read."""
    splits, problems = {}, []
    for name in dataset.splits:
        try:
            splits[name] = dataset.split(name)
        except (OSError, ValueError) as error:
            problems.append(f"split {name!r} cannot be read: {error}")
    return splits, problems


def _count_problems(protocol: Protocol, split_names, splits: dict) -> list[str]:
    """Splits the protocol names that are missing or have another size than it says."""
    problems = []
    for name, expected in protocol.counts.items():
        if name not in splits:
            if name not in split_names:
                problems.append(f"split {name!r} is missing")
            continue
        if expected is not None and len(splits[name]) != expected:
            problems.append(
                f"split {name!r} has {len(splits[name])} items, protocol says {expected}"
            )
    return problems


def _label_problems(protocol: Protocol, splits: dict) -> list[str]:
    """Splits with another number of label columns than the protocol says."""
    problems = []
    for name, split in splits.items():
        if protocol.num_classes is not None and split.num_classes not in (0, protocol.num_classes):
            problems.append(
                f"split {name!r} has {split.num_classes} label columns, "
                f"protocol says {protocol.num_classes}"
            )
    return problems


def _relation_problems(protocol: Protocol, splits: dict) -> list[str]:
    """Splits that share images though the protocol says they are disjoint, and images
    outside the split the protocol says holds them."""
    problems = []
    for first, second in protocol.disjoint:
        if first in splits and second in splits:
            shared = np.intersect1d(splits[first].paths, splits[second].paths)
            if shared.size:
                problems.append(
                    f"splits {first!r} and {second!r} share {shared.size} images, e.g. {shared[0]}"
                )
    for inner, outer in protocol.contained:
        if inner in splits and outer in splits:
            outside = np.setdiff1d(splits[inner].paths, splits[outer].paths)
            if outside.size:
                problems.append(
                    f"{outside.size} images of split {inner!r} are not in {outer!r}, "
                    f"e.g. {outside[0]}"
                )
    return problems


def _image_problems(
    splits: dict, decode: bool, progress: Callable[[Iterable], Iterable] | None
) -> list[str]:
    """Images of the splits that do not exist or (with `decode`) do not decode."""
    paths = np.unique(np.concatenate([s.paths for s in splits.values()])) if splits else []
    iterate = progress(paths) if (progress is not None and decode) else paths
    missing, broken = [], []
    for path in iterate:
        if not os.path.exists(path):
            missing.append(path)
        elif decode and not _decodes(path):
            broken.append(path)
    problems = []
    if missing:
        problems.append(f"{len(missing)} images do not exist, e.g. {missing[0]}")
    if broken:
        problems.append(f"{len(broken)} images do not decode, e.g. {broken[0]}")
    return problems


__all__ = ["PREPARERS", "check_prepared"]
