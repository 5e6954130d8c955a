"""Your own photos: a folder of class subfolders, or a manifest of paths, labels and tags.

Two forms of `--root`:

* class subfolders (the convention of `keras.utils.image_dataset_from_directory`):
  `ROOT/<class>/.../*.jpg`; every direct subfolder is a class (sorted names are the
  label columns) and holds its images at any depth. One label per image.
* a manifest (`--manifest=FILE`, paths relative to `--root`): CSV with a header row
  naming the columns `path`, `labels` and optionally `tags` (several names in a cell
  are separated by `|`), or JSON Lines with one object per line,
  `{"path": "a/b.jpg", "labels": ["dog", "grass"], "tags": ["puppy", "summer"]}`.
  Multi-label; tags are the noisy user tags WSDHQ trains on.

Only `.jpg`, `.jpeg` and `.png` files are used (what the exported SavedModel decodes);
other files are counted in the notes. Paths may not contain whitespace (the list files
separate fields by spaces); such files are refused with their names.

Split rule, without `query_from` (seeded): a random permutation of the items; the first
`query_size` are the queries, the next `train_size` the training split; the database
is every item that is not a query (train included, as CIFAR-10 protocol 1 and most
published protocols have it) or, with `database_includes_train=False`, the items in
neither. Sizes below 1 are fractions: `query_size` of all items, `train_size` of the
non-query items (so 1 means one item). Defaults: 10% queries, train = database = all
other items.

Keeping the dataset's own split (`query_from`): each item belongs to a named split of
the dataset (its top-level folder, `ROOT/<split>/<class>/...`, e.g. `ROOT/train/cat/1.jpg`
and `ROOT/test/cat/7.jpg`; or the manifest's `split` column / key), and

* query = the items of the splits in `query_from` (e.g. `test`);
* train = the items of the splits in `train_from` (default: every split not in
  `query_from`);
* database = the items of the splits in `database_from` (default: every split not in
  `query_from`, so the training items are in the database; with
  `database_includes_train=False`, those minus the training items).

`query_size` and `train_size` then draw (seeded) that many, or that fraction, of the
query and training items (default: all); the database keeps every item of its splits
(the training items not drawn included). A query split may not also be a training or
database split. Items of a split named nowhere are left out (counted in the notes).
Top-level folders that all look like split names (train, test, val, ...) without
`query_from`, or a manifest with a `split` column without it, are an error rather than
being taken for classes or ignored.

The lists are written in the HashNet layout, or the WSDHQ layout when the items have
tags, with a manifest whose image root is `--root`; `--dataset=image_folder
--data_dir=OUTPUT` then reads them (R = the whole database).
"""

from __future__ import annotations

import collections
import csv
import json
import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from wsdhash.data import protocols
from wsdhash.data.dataset_spec import DatasetSpec, register
from wsdhash.data.list_datasets import prepared_lists
from wsdhash.data.sources import splits as splits_lib

EXTENSIONS = (".jpg", ".jpeg", ".png")
# Top-level folder names that mean a split, not a class (scan_class_folders refuses a
# root whose folders are all such names and hold folders).
SPLIT_NAMES = frozenset(
    (
        "train",
        "training",
        "test",
        "testing",
        "val",
        "valid",
        "validation",
        "query",
        "queries",
        "database",
        "db",
        "gallery",
        "retrieval",
    )
)
SEPARATOR = "|"


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in EXTENSIONS


def scan_class_folders(root: str) -> tuple[list[str], list[list[str]], collections.Counter]:
    """(relative paths, one-label lists, skipped file types) of `ROOT/<class>/...`."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(
            f"image_folder: {root} has no class subfolders; put each class's images in "
            "ROOT/<class>/, or describe them in a manifest (--manifest=FILE.csv|.jsonl)."
        )
    if set(classes) <= SPLIT_NAMES and all(
        any(e.is_dir() for e in os.scandir(os.path.join(root, name))) for name in classes
    ):
        raise ValueError(
            f"image_folder: the folders of {root} look like splits ({', '.join(classes)}), "
            "not classes; keep them with --query_from=<split of the queries> (e.g. "
            f"--query_from={'test' if 'test' in classes else classes[-1]}), which reads "
            "ROOT/<split>/<class>/."
        )
    paths, labels, skipped = [], [], collections.Counter()
    for name in classes:
        for folder, subfolders, files in os.walk(os.path.join(root, name), followlinks=True):
            subfolders.sort()
            for file_name in sorted(files):
                if not _is_image(file_name):
                    skipped[os.path.splitext(file_name)[1].lower() or "(none)"] += 1
                    continue
                paths.append(os.path.relpath(os.path.join(folder, file_name), root))
                labels.append([name])
    return paths, labels, skipped


def scan_split_folders(
    root: str,
) -> tuple[list[str], list[list[str]], list[str], collections.Counter]:
    """(relative paths, one-label lists, split names, skipped file types) of
    `ROOT/<split>/<class>/...`."""
    splits = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not splits:
        raise ValueError(
            f"image_folder: {root} has no split folders; with --query_from put the images "
            "in ROOT/<split>/<class>/ (e.g. ROOT/train/cat/1.jpg, ROOT/test/cat/7.jpg)."
        )
    paths, labels, item_splits, skipped = [], [], [], collections.Counter()
    for split in splits:
        split_paths, split_labels, split_skipped = scan_class_folders(os.path.join(root, split))
        paths += [os.path.join(split, p) for p in split_paths]
        labels += split_labels
        item_splits += [split] * len(split_paths)
        skipped += split_skipped
    return paths, labels, item_splits, skipped


def _names(value, where: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(SEPARATOR) if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise ValueError(f"{where}: expected a list of names, got {value!r}.")


def _split_name(value, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or any(c.isspace() for c in value.strip()):
        raise ValueError(f"{where}: expected a split name without spaces, got {value!r}.")
    return value.strip()


def read_manifest_file(path: str) -> list[tuple[str, list[str], list[str], str, str]]:
    """(path, labels, tags, split, where) per item of a CSV or JSON Lines manifest (split:
    the optional `split` column or key, "" when absent)."""
    rows = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if path.lower().endswith((".jsonl", ".json")):
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    where = f"{path}:{number}"
                    try:
                        item = json.loads(line)
                    except json.JSONDecodeError as error:
                        raise ValueError(f"{where}: not valid JSON ({error.msg}).") from None
                    if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                        raise ValueError(f"{where}: expected an object with a 'path' string.")  # noqa: TRY004
                    rows.append(
                        (
                            item["path"],
                            _names(item.get("labels"), where),
                            _names(item.get("tags"), where),
                            _split_name(item.get("split"), where),
                            where,
                        )
                    )
            else:
                reader = csv.DictReader(f)
                columns = set(reader.fieldnames or ())
                if not {"path", "labels"} <= columns:
                    raise ValueError(
                        f"{path}: a CSV manifest needs a header row with the columns 'path' "
                        f"and 'labels' (and optionally 'tags' and 'split'); found "
                        f"{sorted(columns)}."
                    )
                for number, row in enumerate(reader, 2):
                    where = f"{path}:{number}"
                    rows.append(
                        (
                            (row["path"] or "").strip(),
                            _names(row["labels"], where),
                            _names(row.get("tags"), where),
                            _split_name(row.get("split"), where),
                            where,
                        )
                    )
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start})."
        ) from None
    if not rows:
        raise ValueError(f"{path}: the manifest lists no images.")
    return rows


def _relative(root: str, path: str, where: str) -> str:
    absolute = os.path.normpath(os.path.join(root, path))
    relative = os.path.relpath(absolute, root)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        raise ValueError(f"{where}: {path} is outside --root={root}.")
    return relative


def _multi_hot(lists: list[list[str]], vocabulary: list[str]) -> np.ndarray:
    column = {name: i for i, name in enumerate(vocabulary)}
    matrix = np.zeros((len(lists), len(vocabulary)), np.uint8)
    for row, names in enumerate(lists):
        matrix[row, [column[n] for n in names]] = 1
    return matrix


def _size(value: float, total: int, flag: str) -> int:
    if value < 0:
        raise ValueError(f"image_folder: {flag} must be >= 0, got {value}.")
    count = round(value * total) if value < 1 else int(value)
    if count > total:
        raise ValueError(f"image_folder: {flag}={value} asks for {count} of {total} items.")
    return count


def _draw(indices: np.ndarray, size: float | None, flag: str, rng) -> np.ndarray:
    """`size` of `indices` (a count, or below 1 a fraction) drawn with `rng`, sorted; all
    of them when `size` is None."""
    if size is None:
        return np.sort(indices)
    count = _size(size, len(indices), flag)
    return np.sort(rng.permutation(indices)[:count])


def _given_splits(
    item_splits: list[str],
    *,
    query_from: Sequence[str],
    train_from: Sequence[str] | None,
    database_from: Sequence[str] | None,
    database_includes_train: bool | None,
    query_size: float | None,
    train_size: float | None,
    seed: int,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """(split -> item indices, notes) from the items' own splits (module doc)."""
    found = sorted(set(item_splits))
    for flag, names in (
        ("query_from", query_from),
        ("train_from", train_from),
        ("database_from", database_from),
    ):
        unknown = sorted(set(names or ()) - set(found))
        if unknown:
            raise ValueError(
                f"image_folder: {flag}={','.join(names)}: no items in split(s) "
                f"{', '.join(unknown)}; the splits are {', '.join(found)}."
            )
    if database_from is not None and database_includes_train is not None:
        raise ValueError(
            "image_folder: database_from names the database's splits; "
            "database_includes_train does not apply with it (give one)."
        )
    query_names = set(query_from)
    train_names = set(train_from) if train_from else set(found) - query_names
    database_names = set(database_from) if database_from else set(found) - query_names
    for flag, names in (("train_from", train_names), ("database_from", database_names)):
        shared = sorted(query_names & names)
        if shared:
            raise ValueError(
                f"image_folder: split(s) {', '.join(shared)} are both in query_from and "
                f"{flag}; queries must stay out of the training split and the database."
            )
    split_of = np.asarray(item_splits)
    rng = np.random.default_rng(seed)
    query = _draw(
        np.flatnonzero(np.isin(split_of, sorted(query_names))), query_size, "query_size", rng
    )
    train = _draw(
        np.flatnonzero(np.isin(split_of, sorted(train_names))), train_size, "train_size", rng
    )
    database = np.flatnonzero(np.isin(split_of, sorted(database_names)))
    if database_includes_train is False:
        database = np.setdiff1d(database, train)
    notes = []
    left_out = sorted(set(found) - query_names - train_names - database_names)
    if left_out:
        counts = ", ".join(f"{name} ({np.sum(split_of == name)})" for name in left_out)
        notes.append(f"items of splits named in no list were left out: {counts}")
    return {"query": query, "train": train, "database": database}, notes


def _drawn_splits(
    num_items: int,
    *,
    query_size: float | None,
    train_size: float | None,
    database_includes_train: bool | None,
    seed: int,
) -> dict[str, np.ndarray]:
    """split -> item indices, drawn at random (module doc)."""
    num_query = _size(0.1 if query_size is None else query_size, num_items, "query_size")
    rest = num_items - num_query
    num_train = rest if train_size is None else _size(train_size, rest, "train_size")
    if database_includes_train is False and num_query + num_train >= num_items:
        raise ValueError(
            "image_folder: database_includes_train=false leaves no database items "
            f"({num_query} queries + {num_train} training items of {num_items})."
        )
    query, train, rest = splits_lib.permutation_blocks(num_items, [num_query, num_train], seed)
    train = np.sort(train)
    database = np.sort(
        np.concatenate([train, rest]) if database_includes_train is not False else rest
    )
    return {"query": np.sort(query), "train": train, "database": database}


class _Items(NamedTuple):
    """The photos found: per item its relative path, labels, tags and own split ("" when
    it has none), where they were read from, and notes on what was left out."""

    paths: list[str]
    labels: list[list[str]]
    tags: list[list[str]]
    splits: list[str]
    source: str
    notes: list[str]


def _check_root_and_flags(
    root: str,
    query_from: Sequence[str] | None,
    train_from: Sequence[str] | None,
    database_from: Sequence[str] | None,
) -> str:
    """Checks that `root` is a folder and that the split flags go together; returns
    `root` as an absolute path."""
    if not root or not os.path.isdir(root):
        raise protocols.MissingDownloadError(f"image_folder: --root={root} is not a folder.")
    if not query_from and (train_from or database_from):
        raise ValueError(
            "image_folder: train_from / database_from need query_from (the split whose "
            "items are the queries)."
        )
    return os.path.abspath(root)


def _check_manifest_items(root: str, manifest: str, rows: list, paths: list[str]) -> None:
    """Checks that every manifest item is an existing image with labels, listed once."""
    for (p, _, _, _, where), relative in zip(rows, paths, strict=True):
        if not _is_image(p):
            raise ValueError(f"{where}: {p} is not a .jpg, .jpeg or .png file.")
        if not os.path.isfile(os.path.join(root, relative)):
            raise ValueError(f"{where}: {os.path.join(root, relative)} does not exist.")
    unlabelled = [where for (_, names, _, _, where) in rows if not names]
    if unlabelled:
        raise ValueError(
            f"{len(unlabelled)} manifest items have no labels (first: {unlabelled[0]}); "
            "evaluation needs labels for every image."
        )
    duplicates = [p for p, n in collections.Counter(paths).items() if n > 1]
    if duplicates:
        raise ValueError(f"{manifest}: {len(duplicates)} paths repeat, e.g. {duplicates[0]}.")


def _check_manifest_splits(
    manifest: str, rows: list, item_splits: list[str], query_from: Sequence[str] | None
) -> None:
    """Checks that every item names its split with `query_from`, and none does without."""
    named = sorted({name for name in item_splits if name})
    if query_from:
        unsplit = [where for (*_, name, where) in rows if not name]
        if unsplit:
            raise ValueError(
                f"image_folder: query_from needs every manifest item's split; "
                f"{len(unsplit)} have none (first: {unsplit[0]})."
            )
    elif named:
        raise ValueError(
            f"{manifest}: items name their split ({', '.join(named)}); keep it with "
            f"--query_from=<split of the queries> (e.g. --query_from={named[-1]}), or "
            "drop the split column to draw queries at random."
        )


def _manifest_items(root: str, manifest: str, query_from: Sequence[str] | None) -> _Items:
    """Reads and checks the items of a manifest."""
    rows = read_manifest_file(manifest)
    paths = [_relative(root, p, where) for p, _, _, _, where in rows]
    labels = [r[1] for r in rows]
    tags = [r[2] for r in rows]
    item_splits = [r[3] for r in rows]
    _check_manifest_items(root, manifest, rows, paths)
    _check_manifest_splits(manifest, rows, item_splits, query_from)
    return _Items(paths, labels, tags, item_splits, f"manifest {os.path.abspath(manifest)}", [])


def _folder_items(root: str, query_from: Sequence[str] | None) -> _Items:
    """Reads the items of split folders (with `query_from`) or class folders."""
    if query_from:
        paths, labels, item_splits, skipped = scan_split_folders(root)
        source = f"split folders of {root}"
    else:
        paths, labels, skipped = scan_class_folders(root)
        item_splits = [""] * len(paths)
        source = f"class subfolders of {root}"
    notes = []
    if skipped:
        counts = ", ".join(f"{n} {ext}" for ext, n in sorted(skipped.items()))
        notes.append(f"files that are not .jpg/.jpeg/.png were left out: {counts}")
    return _Items(paths, labels, [[] for _ in paths], item_splits, source, notes)


def _check_paths(root: str, paths: list[str]) -> None:
    """Checks that there are images and that no path holds whitespace."""
    if not paths:
        raise ValueError(f"image_folder: no .jpg, .jpeg or .png images under {root}.")
    spaced = [p for p in paths if any(c.isspace() for c in p)]
    if spaced:
        raise ValueError(
            f"image_folder: {len(spaced)} image paths contain whitespace, which list files "
            f"cannot hold (first: {spaced[0]!r}); rename them."
        )


def _assign_splits(
    items: _Items,
    *,
    seed: int,
    query_size: float | None,
    train_size: float | None,
    database_includes_train: bool | None,
    query_from: Sequence[str] | None,
    train_from: Sequence[str] | None,
    database_from: Sequence[str] | None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """(split -> item indices, notes): the items' own splits with `query_from`, else
    drawn at random."""
    if query_from:
        return _given_splits(
            items.splits,
            query_from=query_from,
            train_from=train_from,
            database_from=database_from,
            database_includes_train=database_includes_train,
            query_size=query_size,
            train_size=train_size,
            seed=seed,
        )
    split_indices = _drawn_splits(
        len(items.paths),
        query_size=query_size,
        train_size=train_size,
        database_includes_train=database_includes_train,
        seed=seed,
    )
    return split_indices, []


def _split_sizes(
    split_indices: dict[str, np.ndarray], num_items: int, query_from: Sequence[str] | None
) -> dict[str, int]:
    """The size of each split; checks that none is empty."""
    sizes = {name: len(indices) for name, indices in split_indices.items()}
    if sizes["query"] < 1 or sizes["train"] < 1 or sizes["database"] < 1:
        raise ValueError(
            f"image_folder: {num_items} images give {sizes['query']} queries, "
            f"{sizes['train']} training and {sizes['database']} database items; each split "
            "needs at least one (set query_size / train_size"
            + (", query_from / train_from / database_from)." if query_from else ").")
        )
    return sizes


def _manifest_entries(
    root: str,
    items: _Items,
    label_names: list[str],
    train_in_database: bool,
    *,
    seed: int,
    query_size: float | None,
    train_size: float | None,
    query_from: Sequence[str] | None,
    train_from: Sequence[str] | None,
    database_from: Sequence[str] | None,
) -> dict:
    """The entries of the dataset manifest written beside the lists."""
    entries = {
        "dataset": "image_folder",
        "protocol": "given splits" if query_from else "seeded",
        "image_root": root,
        "seed": seed,
        "label_names": label_names,
        "source": items.source,
        "query_size": ("all" if query_from else 0.1) if query_size is None else query_size,
        "train_size": "all" if train_size is None else train_size,
        "database_includes_train": train_in_database,
    }
    if query_from:
        entries.update(
            query_from=sorted(query_from),
            train_from=sorted(train_from) if train_from else "all other splits",
            database_from=sorted(database_from) if database_from else "all other splits",
        )
    return entries


def _write_lists(
    output_dir: str,
    items: _Items,
    label_matrix: np.ndarray,
    split_indices: dict[str, np.ndarray],
    entries: dict,
) -> list[str]:
    """Writes the lists, in the WSDHQ layout when the items have tags, else the HashNet
    layout; returns the tag names."""
    tag_names = sorted({n for names in items.tags for n in names})
    if tag_names:
        splits_lib.write_wsdhq_splits(
            output_dir,
            items.paths,
            label_matrix,
            _multi_hot(items.tags, tag_names),
            tag_names,
            split_indices,
            entries,
        )
    else:
        splits_lib.write_hashnet_splits(
            output_dir, items.paths, label_matrix, split_indices, entries
        )
    return tag_names


def _prepared(
    sizes: dict[str, int], label_names: list[str], train_in_database: bool, notes: list[str]
) -> protocols.Prepared:
    """What the lists must satisfy: the split sizes, queries apart from the rest, and the
    training items inside the database where they are."""
    return protocols.Prepared(
        "image_folder",
        {},
        protocols.Protocol(
            counts=sizes,
            disjoint=(("query", "train"), ("query", "database")),
            contained=(("train", "database"),) if train_in_database else (),
            num_classes=len(label_names),
            topk=None,
        ),
        notes=tuple(notes),
    )


def prepare(
    root: str,
    output_dir: str,
    *,
    seed: int = 0,
    manifest: str | None = None,
    query_size: float | None = None,
    train_size: float | None = None,
    database_includes_train: bool | None = None,
    query_from: Sequence[str] | None = None,
    train_from: Sequence[str] | None = None,
    database_from: Sequence[str] | None = None,
) -> protocols.Prepared:
    """Writes the lists of the photos under `root` (module doc).

    Args:
        root: the photos (class subfolders, split folders, or the manifest's root).
        output_dir: where the lists go.
        seed: seeds every draw.
        manifest: a CSV or JSON Lines manifest instead of folders.
        query_size: queries, a count or a fraction (default: 10% drawn at random; with
            `query_from`, all the query splits' items).
        train_size: training items, a count or a fraction (default: all candidates).
        database_includes_train: whether the database keeps the training items
            (default: yes).
        query_from: keep the dataset's own splits: the split names whose items are the
            queries (a top-level folder each, or manifest `split` values).
        train_from: with `query_from`, the training splits (default: all the others).
        database_from: with `query_from`, the database splits (default: all the others).
    """
    root = _check_root_and_flags(root, query_from, train_from, database_from)
    items = (
        _manifest_items(root, manifest, query_from) if manifest else _folder_items(root, query_from)
    )
    _check_paths(root, items.paths)
    label_names = sorted({n for names in items.labels for n in names})
    label_matrix = _multi_hot(items.labels, label_names)
    split_indices, split_notes = _assign_splits(
        items,
        seed=seed,
        query_size=query_size,
        train_size=train_size,
        database_includes_train=database_includes_train,
        query_from=query_from,
        train_from=train_from,
        database_from=database_from,
    )
    notes = items.notes + split_notes
    sizes = _split_sizes(split_indices, len(items.paths), query_from)
    train_in_database = bool(np.isin(split_indices["train"], split_indices["database"]).all())
    entries = _manifest_entries(
        root,
        items,
        label_names,
        train_in_database,
        seed=seed,
        query_size=query_size,
        train_size=train_size,
        query_from=query_from,
        train_from=train_from,
        database_from=database_from,
    )
    tag_names = _write_lists(output_dir, items, label_matrix, split_indices, entries)
    notes.append(
        f"{len(items.paths)} images, {len(label_names)} labels"
        + (f", {len(tag_names)} distinct tags" if tag_names else "")
        + f"; seed {seed}"
    )
    return _prepared(sizes, label_names, train_in_database, notes)


# Your own photos: class subfolders or a manifest (module doc).
SPEC = register(
    DatasetSpec(
        "image_folder",
        prepared_lists("image_folder", topk=None),
        prepare,
        prepare_root=(
            "your photos: ROOT/<class>/*.jpg, or",
            "--manifest=FILE.csv/.jsonl (paths under",
            "ROOT, labels, tags, split); --query_size",
            "--train_size, --database_includes_train",
            "or the dataset's own split: ROOT/<split>",
            "/<class>/*.jpg or the manifest's split",
            "column, with --query_from (below)",
        ),
    )
)
