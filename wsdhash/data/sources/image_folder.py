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

Split rule (seeded): a random permutation of the items; the first `query_size` are
the queries, the next `train_size` the training split; the database is every item
that is not a query (train included, as CIFAR-10 protocol 1 and most published
protocols have it) or, with `database_includes_train=False`, the items in neither.
Sizes below 1 are fractions: `query_size` of all items, `train_size` of the
non-query items (so 1 means one item). Defaults: 10% queries, train = database = all
other items.

The lists are written in the HashNet layout, or the WSDHQ layout when the items have
tags, with a manifest whose image root is `--root`; `--dataset=image_folder
--data_dir=OUTPUT` then reads them (R = the whole database).
"""

from __future__ import annotations

import collections
import csv
import json
import os

import numpy as np

from wsdhash.data import protocols
from wsdhash.data.sources import splits as splits_lib

EXTENSIONS = (".jpg", ".jpeg", ".png")
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


def _names(value, where: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(SEPARATOR) if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise ValueError(f"{where}: expected a list of names, got {value!r}.")


def read_manifest_file(path: str) -> list[tuple[str, list[str], list[str], str]]:
    """(path, labels, tags, where) per item of a CSV or JSON Lines manifest."""
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
                            where,
                        )
                    )
            else:
                reader = csv.DictReader(f)
                columns = set(reader.fieldnames or ())
                if not {"path", "labels"} <= columns:
                    raise ValueError(
                        f"{path}: a CSV manifest needs a header row with the columns 'path' "
                        f"and 'labels' (and optionally 'tags'); found {sorted(columns)}."
                    )
                for number, row in enumerate(reader, 2):
                    where = f"{path}:{number}"
                    rows.append(
                        (
                            (row["path"] or "").strip(),
                            _names(row["labels"], where),
                            _names(row.get("tags"), where),
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


def prepare(
    root: str,
    output_dir: str,
    *,
    seed: int = 0,
    manifest: str | None = None,
    query_size: float = 0.1,
    train_size: float | None = None,
    database_includes_train: bool = True,
) -> protocols.Prepared:
    """Writes the seeded lists of the photos under `root` (module doc)."""
    if not root or not os.path.isdir(root):
        raise protocols.MissingDownloadError(f"image_folder: --root={root} is not a folder.")
    root = os.path.abspath(root)
    notes = []
    if manifest:
        rows = read_manifest_file(manifest)
        paths = [_relative(root, p, where) for p, _, _, where in rows]
        labels = [r[1] for r in rows]
        tags = [r[2] for r in rows]
        for (p, _, _, where), relative in zip(rows, paths, strict=True):
            if not _is_image(p):
                raise ValueError(f"{where}: {p} is not a .jpg, .jpeg or .png file.")
            if not os.path.isfile(os.path.join(root, relative)):
                raise ValueError(f"{where}: {os.path.join(root, relative)} does not exist.")
        unlabelled = [where for (_, names, _, where) in rows if not names]
        if unlabelled:
            raise ValueError(
                f"{len(unlabelled)} manifest items have no labels (first: {unlabelled[0]}); "
                "evaluation needs labels for every image."
            )
        duplicates = [p for p, n in collections.Counter(paths).items() if n > 1]
        if duplicates:
            raise ValueError(f"{manifest}: {len(duplicates)} paths repeat, e.g. {duplicates[0]}.")
        source = f"manifest {os.path.abspath(manifest)}"
    else:
        paths, labels, skipped = scan_class_folders(root)
        tags = [[] for _ in paths]
        if skipped:
            counts = ", ".join(f"{n} {ext}" for ext, n in sorted(skipped.items()))
            notes.append(f"files that are not .jpg/.jpeg/.png were left out: {counts}")
        source = f"class subfolders of {root}"
    if not paths:
        raise ValueError(f"image_folder: no .jpg, .jpeg or .png images under {root}.")
    spaced = [p for p in paths if any(c.isspace() for c in p)]
    if spaced:
        raise ValueError(
            f"image_folder: {len(spaced)} image paths contain whitespace, which list files "
            f"cannot hold (first: {spaced[0]!r}); rename them."
        )
    label_names = sorted({n for names in labels for n in names})
    label_matrix = _multi_hot(labels, label_names)
    num_query = _size(query_size, len(paths), "query_size")
    rest = len(paths) - num_query
    num_train = rest if train_size is None else _size(train_size, rest, "train_size")
    if not database_includes_train and num_query + num_train >= len(paths):
        raise ValueError(
            "image_folder: database_includes_train=false leaves no database items "
            f"({num_query} queries + {num_train} training items of {len(paths)})."
        )
    if num_query < 1 or num_train < 1:
        raise ValueError(
            f"image_folder: {len(paths)} images give {num_query} queries and {num_train} "
            "training items; each split needs at least one (set query_size / train_size)."
        )
    query, train, rest = splits_lib.permutation_blocks(len(paths), [num_query, num_train], seed)
    train = np.sort(train)
    database = np.sort(np.concatenate([train, rest]) if database_includes_train else rest)
    split_indices = {"query": np.sort(query), "train": train, "database": database}
    manifest_entries = {
        "dataset": "image_folder",
        "protocol": "seeded",
        "image_root": root,
        "seed": seed,
        "label_names": label_names,
        "source": source,
        "query_size": query_size,
        "train_size": "all" if train_size is None else train_size,
        "database_includes_train": bool(database_includes_train),
    }
    tag_names = sorted({n for names in tags for n in names})
    if tag_names:
        splits_lib.write_wsdhq_splits(
            output_dir, paths, label_matrix, _multi_hot(tags, tag_names), tag_names,
            split_indices, manifest_entries,
        )  # fmt: skip
    else:
        splits_lib.write_hashnet_splits(
            output_dir, paths, label_matrix, split_indices, manifest_entries
        )
    notes.append(
        f"{len(paths)} images, {len(label_names)} labels"
        + (f", {len(tag_names)} distinct tags" if tag_names else "")
        + f"; seed {seed}"
    )
    return protocols.Prepared(
        "image_folder",
        {},
        protocols.Protocol(
            counts={"query": num_query, "train": num_train, "database": len(database)},
            disjoint=(("query", "train"), ("query", "database")),
            contained=(("train", "database"),) if database_includes_train else (),
            num_classes=len(label_names),
            topk=None,
        ),
        notes=tuple(notes),
    )
