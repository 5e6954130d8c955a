"""The data types every reader, writer and pipeline of wsdhash shares.

`SplitData` holds the items of one split (paths, labels, tags, optional features);
`RetrievalDataset` is a registered dataset with its protocol, which loads its splits
on demand; `DataFormatError` is what every reader raises on a malformed file, naming
it. This module imports nothing else from wsdhash, so any module may import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np


class DataFormatError(ValueError):
    """A list, label or tag file does not have the expected format."""


@dataclasses.dataclass(frozen=True)
class SplitData:
    """The items of one split, in file order.

    Attributes:
        name: split name ("train", "query", "database", ...).
        paths: absolute image paths, shape (N,).
        labels: ground-truth multi-hot labels, uint8 (N, C); C = 0 when the split has none.
        tags: user-tag indicators, uint8 (N, T); T = 0 when the split has none.
        label_names: C class names (may be empty when unknown).
        tag_names: T tag words (may be empty when unknown).
        features: optional (N, F) float32 precomputed backbone features
            (`python -m wsdhash.extract`); the pipeline then yields them instead of
            decoding images, and `paths` only name the items.
    """

    name: str
    paths: np.ndarray
    labels: np.ndarray
    tags: np.ndarray
    label_names: tuple[str, ...] = ()
    tag_names: tuple[str, ...] = ()
    features: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.paths)
        if self.features is not None and (self.features.ndim != 2 or len(self.features) != n):
            raise DataFormatError(
                f"Split {self.name!r}: features have shape {self.features.shape}, expected "
                f"({n}, F) to match its {n} items."
            )
        for field in ("labels", "tags"):
            array = getattr(self, field)
            if array.ndim != 2 or array.shape[0] != n:
                raise DataFormatError(
                    f"Split {self.name!r}: {field} has shape {array.shape}, expected ({n}, *) "
                    f"to match its {n} image paths."
                )

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, indices: np.ndarray, name: str | None = None) -> SplitData:
        """The items at `indices` (in that order), as a new split."""
        indices = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(
            self,
            name=name or self.name,
            paths=self.paths[indices],
            labels=self.labels[indices],
            tags=self.tags[indices],
            features=None if self.features is None else self.features[indices],
        )

    @property
    def num_classes(self) -> int:
        return self.labels.shape[1]

    @property
    def num_tags(self) -> int:
        return self.tags.shape[1]


@dataclasses.dataclass(frozen=True)
class RetrievalDataset:
    """A dataset with its retrieval protocol.

    Attributes:
        name: registry name.
        load_split: split name -> `SplitData` (file order).
        splits: the split names that exist.
        topk: the protocol's mAP cut-off R (None = the whole database).
        image_size: the size images are resized to before cropping (square).
        crop_size: the training / evaluation crop.
        image_files: whether its splits name image files that training decodes (False
            for precomputed features, whose rows are the inputs).
    """

    name: str
    load_split: Callable[[str], SplitData]
    splits: tuple[str, ...] = ("train", "query", "database")
    topk: int | None = None
    image_size: int = 256
    crop_size: int = 224
    image_files: bool = True

    def split(self, name: str) -> SplitData:
        if name not in self.splits:
            raise KeyError(f"Dataset {self.name!r} has no split {name!r}; splits: {self.splits}.")
        return self.load_split(name)
