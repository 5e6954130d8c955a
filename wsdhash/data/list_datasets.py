"""Datasets read from split list files: the generic WSDHQ and HashNet list layouts, the
built-in generated dataset, and `prepared_lists`, the loader of every real dataset
whose lists `python -m wsdhash.data.prepare` wrote (wsdhash/data/sources/ declare
those).

A loader is `(data_dir, **options) -> RetrievalDataset` (a `DatasetSpec.load`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from wsdhash.data import list_files
from wsdhash.data import protocols as protocols_lib
from wsdhash.data.dataset_spec import DatasetSpec, register
from wsdhash.data.types import RetrievalDataset, SplitData


def builtin(
    data_dir: str,
    *,
    seed: int = 0,
    image_size: int = 64,
    num_train: int = 5000,
    num_query: int = 500,
    num_database: int = 5000,
    check_files: bool = True,
) -> RetrievalDataset:
    """The built-in generated dataset, (re)generated in `data_dir` when missing.

    Generation is idempotent: an existing dataset with the same parameters is reused.
    """
    from wsdhash.data import builtin as builtin_data  # pylint: disable=g-import-not-at-top

    builtin_data.generate_builtin(
        data_dir,
        seed=seed,
        image_size=image_size,
        num_train=num_train,
        num_query=num_query,
        num_database=num_database,
    )

    def load_split(split: str) -> SplitData:
        return list_files.read_wsdhq_split(
            data_dir,
            data_dir,
            split=split,
            tag_vocab="tag_vocab.txt",
            label_names="label_names.txt",
            check_files=check_files,
        )

    crop = image_size * 7 // 8
    return RetrievalDataset(
        name="builtin", load_split=load_split, topk=1000, image_size=image_size, crop_size=crop
    )


def wsdhq_lists(
    data_dir: str,
    *,
    image_root: str | None = None,
    tag_vocab: str | None = None,
    topk: int | None = 5000,
    check_files: bool = True,
) -> RetrievalDataset:
    """Any dataset in the WSDHQ list layout (`*_img.txt`, `*_label.txt`, `train_tag.txt`).

    Args:
        data_dir: folder holding the list files.
        image_root: folder the image paths are relative to (default: `data_dir`).
        tag_vocab: tag vocabulary file name in `data_dir`, if any.
        topk: mAP cut-off (WSDHQ uses 5000).
        check_files: check every image exists when a split is loaded.
    """
    root = image_root if image_root is not None else data_dir

    def load_split(split: str) -> SplitData:
        return list_files.read_wsdhq_split(
            data_dir, root, split=split, tag_vocab=tag_vocab, check_files=check_files
        )

    return RetrievalDataset(
        name="wsdhq", load_split=load_split, topk=topk, image_size=256, crop_size=227
    )


HASHNET_FILES = {"train": "train.txt", "query": "test.txt", "database": "database.txt"}


def hashnet_lists(
    data_dir: str,
    *,
    image_root: str | None = None,
    topk: int | None = None,
    check_files: bool = True,
) -> RetrievalDataset:
    """Any dataset in the HashNet list layout (`train.txt`, `test.txt`, `database.txt`).

    Args:
        data_dir: folder holding the list files.
        image_root: folder the image paths are relative to (default: `data_dir`).
        topk: mAP cut-off; None = the whole database.
        check_files: check every image exists when a split is loaded.
    """
    root = image_root if image_root is not None else data_dir

    def load_split(split: str) -> SplitData:
        return list_files.read_hashnet_list(
            os.path.join(data_dir, HASHNET_FILES[split]), root, split=split, check_files=check_files
        )

    return RetrievalDataset(name="hashnet", load_split=load_split, topk=topk)


def prepared_lists(
    name: str,
    *,
    topk: int | None,
    image_size: int = 256,
    crop_size: int = 224,
    protocols: dict[str, int | None] | None = None,
) -> Callable[..., RetrievalDataset]:
    """The factory of a real dataset whose lists `python -m wsdhash.data.prepare` wrote.

    The lists are in the HashNet layout (`train.txt`, `test.txt`, `database.txt`) or,
    when the manifest says `"layout": "wsdhq"`, in the WSDHQ layout with user tags.
    The manifest (protocols.py) gives the image root, the protocol and the label
    names; without a manifest the folder is read as ready-made lists (WSDHQ layout when
    `train_img.txt` exists, else HashNet) whose paths are relative to `image_root`
    (default: the folder itself).

    Args:
        name: the registry name.
        topk: the protocol's mAP cut-off R (None: the whole database).
        image_size, crop_size: the published preprocessing (resize side, crop).
        protocols: per-protocol R overriding `topk` (e.g. Flickr's WSDHQ protocol).
    """

    def factory(
        data_dir: str, *, image_root: str | None = None, check_files: bool = True
    ) -> RetrievalDataset:
        manifest = protocols_lib.read_manifest(data_dir)
        if manifest.get("dataset", name) != name:
            raise ValueError(
                f"{data_dir} holds lists of dataset {manifest['dataset']!r}, not {name!r} "
                f"({protocols_lib.MANIFEST_NAME})."
            )
        # A relative image root in the manifest is relative to the lists' folder.
        root = image_root or os.path.join(data_dir, manifest.get("image_root", "."))
        label_names = tuple(manifest.get("label_names", ()))
        protocol = manifest.get("protocol", "")
        cutoff = (protocols or {}).get(protocol, topk)
        layout = manifest.get("layout")
        if layout is None:  # ready-made lists without a manifest: WSDHQ or HashNet layout
            wsdhq = os.path.isfile(os.path.join(data_dir, "train_img.txt"))
            layout = "wsdhq" if wsdhq else "hashnet"
        if layout == "wsdhq":

            def load_split(split: str) -> SplitData:
                data = list_files.read_wsdhq_split(
                    data_dir,
                    root,
                    split=split,
                    tag_vocab=manifest.get("tag_vocab"),
                    check_files=check_files,
                )
                return dataclasses.replace(data, label_names=label_names or data.label_names)

        else:

            def load_split(split: str) -> SplitData:
                return list_files.read_hashnet_list(
                    os.path.join(data_dir, HASHNET_FILES[split]),
                    root,
                    split=split,
                    check_files=check_files,
                    label_names=label_names,
                )

        return RetrievalDataset(
            name=name,
            load_split=load_split,
            topk=cutoff,
            image_size=image_size,
            crop_size=crop_size,
        )

    factory.__name__ = name
    factory.__doc__ = f"The {name} dataset from prepared lists (see `prepared_lists`)."
    return factory


register(DatasetSpec("builtin", builtin, image_root=False))
register(DatasetSpec("wsdhq", wsdhq_lists))
register(DatasetSpec("hashnet", hashnet_lists))
