"""What a prepared dataset promises: its protocol, its manifest, its download checks.

Shared by the preparers in `wsdhash.data.sources` (which write split lists from a
real download), the dataset factories in `wsdhash.data.datasets` (which read the
manifest to find the images) and `wsdhash.data.preparation` (which checks the lists
against the protocol).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable

from wsdhash import atomic_files

# Written next to the lists; dataset factories read it to find the image root and the
# protocol the lists were made for.
MANIFEST_NAME = "wsdhash_dataset.json"


@dataclasses.dataclass(frozen=True)
class Protocol:
    """What a dataset's split lists must satisfy.

    Attributes:
        counts: split name -> expected number of items (None: not fixed by the protocol).
        disjoint: pairs of splits that must share no image.
        contained: pairs (inner, outer): every image of `inner` is also in `outer`.
        num_classes: expected number of label columns (None: not fixed).
        topk: the protocol's mAP cut-off R (None: the whole database).
    """

    counts: dict[str, int | None]
    disjoint: tuple[tuple[str, str], ...] = ()
    contained: tuple[tuple[str, str], ...] = ()
    num_classes: int | None = None
    topk: int | None = None


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What a preparer made.

    Attributes:
        dataset: the `DATASETS` name that reads the lists.
        options: keyword options for that dataset factory (besides `data_dir`).
        protocol: what the lists must satisfy.
        notes: human-readable remarks for the report (e.g. images skipped by the
            official protocol itself, with the reason).
    """

    dataset: str
    options: dict
    protocol: Protocol
    notes: tuple[str, ...] = ()


class MissingDownloadError(FileNotFoundError):
    """The dataset's download is not where the user said it is."""


def require_files(root: str, names: Iterable[str], dataset: str, where_to_get: str) -> None:
    """Raises `MissingDownloadError` naming every missing file and where to get it."""
    missing = [name for name in names if not os.path.exists(os.path.join(root, name))]
    if missing:
        raise MissingDownloadError(
            f"{dataset}: {', '.join(missing)} not found under {root!r}. {where_to_get}"
        )


def write_manifest(output_dir: str, manifest: dict) -> None:
    """Writes the dataset manifest (image root, protocol name, ...) atomically."""
    atomic_files.write_json(os.path.join(output_dir, MANIFEST_NAME), manifest)


def read_manifest(data_dir: str) -> dict:
    """The manifest written by `write_manifest`, or {} when there is none."""
    path = os.path.join(data_dir, MANIFEST_NAME)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}).") from None
