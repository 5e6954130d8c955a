"""Readers for the on-disk list formats of the published hashing codebases.

Two layouts are supported (docs/methods.md, "File formats"):

* **WSDHQ**: `<split>_img.txt` (one relative image path per line), `<split>_label.txt`
    (0/1 ground-truth matrix), `train_tag.txt` (0/1 matrix over the raw tag vocabulary)
    plus a vocabulary file with one tag per line. The query split is called `test`.
* **HashNet** (also used by DeepHash-pytorch, OrthoHash and HyP2 for NUS-WIDE):
    `path l1 l2 ... lC` per line.

Every reader checks what it reads and raises `DataFormatError` with the file and the
1-based line number of the first problem, so a broken list never turns into a silent
shape mismatch later in training.

List files are UTF-8 text (a file in another encoding, e.g. Latin-1, is an error naming
the line). Image paths may not contain spaces or other whitespace: list lines are
split on whitespace and there is no quoting, so a path with a space is reported as
such (rename the file); `python -m wsdhash.data.prepare` refuses to write one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

from wsdhash.data.types import DataFormatError, SplitData


def _read_lines(path: str) -> list[str]:
    """Lines of a text file without their newline; trailing blank lines dropped."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"List file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise DataFormatError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x} at column "
            f"{column}); save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`."
        ) from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def read_name_list(path: str) -> list[str]:
    """One name per line (a tag vocabulary, class names); blank lines are errors."""
    lines = _read_lines(path)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataFormatError(f"{path}:{number}: empty line in a one-name-per-line file.")
    if not lines:
        raise DataFormatError(f"{path}: file is empty.")
    return [line.strip() for line in lines]


_BINARY_ROW = re.compile(r"\s*[01](?:\s+[01])*\s*")
_WHITESPACE = str.maketrans("", "", " \t\r\v\f")


def _parse_binary_row_slowly(row: str, path: str, line: int, first_column: int) -> list[int]:
    """Parses one row token by token; accepts numeric spellings such as `1.0` or `0e+00`
    (`np.savetxt` without `fmt` writes those) and names the first bad value."""
    values = []
    for j, token in enumerate(row.split()):
        try:
            value = float(token)
        except ValueError:
            value = None
        if value not in (0.0, 1.0):
            raise DataFormatError(
                f"{path}:{line}: value {token!r} in column {j + first_column} is not 0 or 1."
            )
        values.append(int(value))
    return values


def _parse_binary_rows(
    rows: Sequence[str],
    path: str,
    *,
    first_column: int = 0,
    line_offset: int = 0,
    columns: int | None = None,
) -> np.ndarray:
    """Parses whitespace-separated 0/1 rows into uint8 (N, C), validating every row.

    The common case (single-character 0/1 tokens) is checked with a regular expression
    and converted through one byte buffer, which keeps an 18k x 1,386 tag matrix to about
    a second; other numeric spellings take a slower per-token path.

    Args:
        rows: the text of each row, already split off from any leading path column.
        path: file name, for error messages.
        first_column: 1-based column number of the first value in the file (for messages).
        line_offset: added to the 0-based row index + 1 to give the line number.
        columns: expected number of values per row; default: the first row's count.

    Returns:
        uint8 array (N, C) of 0/1.
    """
    if not rows:
        return np.zeros((0, columns or 0), np.uint8)
    expected = columns
    compact_rows = []
    for i, row in enumerate(rows):
        line = i + 1 + line_offset
        if _BINARY_ROW.fullmatch(row):
            compact = row.translate(_WHITESPACE)
        else:
            compact = "".join(
                str(v) for v in _parse_binary_row_slowly(row, path, line, first_column)
            )
        if expected is None:
            expected = len(compact)
        if len(compact) != expected:
            raise DataFormatError(
                f"{path}:{line}: expected {expected} columns, found {len(compact)}."
            )
        compact_rows.append(compact)
    if expected == 0:
        raise DataFormatError(f"{path}:{1 + line_offset}: row has no values.")
    buffer = "".join(compact_rows).encode("ascii")
    values = np.frombuffer(buffer, np.uint8) - np.uint8(ord("0"))
    return values.reshape(len(rows), expected)


def read_binary_matrix(path: str, *, columns: int | None = None) -> np.ndarray:
    """Reads a whitespace-separated 0/1 matrix (`np.loadtxt` layout) as uint8 (N, C)."""
    lines = _read_lines(path)
    if not lines:
        raise DataFormatError(f"{path}: file is empty.")
    return _parse_binary_rows(lines, path, first_column=1, columns=columns)


def _resolve_paths(
    names: Sequence[str], image_root: str, list_path: str, check_files: bool
) -> np.ndarray:
    paths = np.array([os.path.join(image_root, name) for name in names], dtype=object)
    if check_files:
        for number, path in enumerate(paths, start=1):
            if not os.path.isfile(path):
                raise DataFormatError(f"{list_path}:{number}: image file not found: {path}")
    return paths.astype(str)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _space_in_path(line: str, path: str, number: int) -> None:
    """Raises the "path with a space" error when `line` reads as one: two or more
    non-numeric tokens before the first label value, the first without a file
    extension and the last with one (`my cat.jpg 0 1`, not `a.jpg x 1`, a bad value)."""
    tokens = line.split()
    words = 0
    while words < len(tokens) and not _is_number(tokens[words]):
        words += 1

    def has_extension(token: str) -> bool:
        return "." in token.rsplit("/", 1)[-1].strip(".")

    if 2 <= words < len(tokens) and has_extension(tokens[words - 1]):
        if not has_extension(tokens[0]):
            raise DataFormatError(
                f"{path}:{number}: image path {' '.join(tokens[:words])!r} contains a "
                "space; list paths may not contain spaces (lines are space-separated, "
                "without quoting): rename the file."
            )


def read_path_list(path: str) -> list[str]:
    """One relative image path per line (WSDHQ `*_img.txt`, HyP2 `img.txt`)."""
    lines = _read_lines(path)
    for number, line in enumerate(lines, start=1):
        if not line.strip() or len(line.split()) != 1:
            spaces = " (image paths may not contain spaces)" if line.strip() else ""
            raise DataFormatError(
                f"{path}:{number}: expected exactly one image path, found {line!r}{spaces}."
            )
    return [line.strip() for line in lines]


def read_hashnet_list(
    list_path: str,
    image_root: str,
    *,
    split: str,
    num_classes: int | None = None,
    check_files: bool = True,
    label_names: Sequence[str] = (),
) -> SplitData:
    """Reads a HashNet-format list: `relative/path.jpg l1 l2 ... lC` per line.

    Args:
        list_path: the list file (e.g. `test.txt`).
        image_root: folder the relative paths are joined to.
        split: split name for the result.
        num_classes: expected C; default: taken from the first line.
        check_files: check that every image file exists (names the line of a missing one).
        label_names: optional class names.

    Returns:
        The split, with labels and no tags.
    """
    lines = _read_lines(list_path)
    if not lines:
        raise DataFormatError(f"{list_path}: split {split!r} is empty.")
    names, rows = [], []
    for number, line in enumerate(lines, start=1):
        head, _, rest = line.strip().partition(" ")
        if not head or not rest.strip():
            raise DataFormatError(
                f"{list_path}:{number}: expected 'path l1 ... lC', found {line!r}."
            )
        if rest[:1] not in ("0", "1"):  # not the common case: a path with a space?
            _space_in_path(line, list_path, number)
        names.append(head)
        rows.append(rest)
    labels = _parse_binary_rows(rows, list_path, first_column=2, columns=num_classes)
    if label_names and len(label_names) != labels.shape[1]:
        raise DataFormatError(
            f"{list_path}: {labels.shape[1]} label columns but {len(label_names)} label names."
        )
    return SplitData(
        name=split,
        paths=_resolve_paths(names, image_root, list_path, check_files),
        labels=labels,
        tags=np.zeros((len(names), 0), np.uint8),
        label_names=tuple(label_names),
    )


# The WSDHQ file prefix of each split: the query split is stored as "test".
WSDHQ_PREFIXES = {"train": "train", "query": "test", "database": "database"}


def read_wsdhq_split(
    list_dir: str,
    image_root: str,
    *,
    split: str,
    tag_vocab: str | None = None,
    label_names: str | None = None,
    check_files: bool = True,
) -> SplitData:
    """Reads one split in the WSDHQ layout.

    Files read from `list_dir` (prefix `test` for the query split):
        * `<prefix>_img.txt`: required, one relative image path per line.
        * `<prefix>_label.txt`: ground-truth labels; required for query and database,
            optional for train (WSDHQ trains from tags only).
        * `train_tag.txt` (train only, when present) with the vocabulary file `tag_vocab`.

    Args:
        list_dir: folder holding the list files.
        image_root: folder the image paths are relative to.
        split: "train", "query" or "database".
        tag_vocab: file name (in `list_dir`) or path of the tag vocabulary; when None the
            tag columns are left unnamed.
        label_names: file name or path of the class names, optional.
        check_files: check that every image exists.

    Returns:
        The split, in file order.
    """
    if split not in WSDHQ_PREFIXES:
        raise ValueError(
            f"Unknown WSDHQ split {split!r}; expected one of {sorted(WSDHQ_PREFIXES)}."
        )
    prefix = WSDHQ_PREFIXES[split]
    img_path = os.path.join(list_dir, f"{prefix}_img.txt")
    names = read_path_list(img_path)
    if not names:
        raise DataFormatError(f"{img_path}: split {split!r} is empty.")
    n = len(names)

    label_path = os.path.join(list_dir, f"{prefix}_label.txt")
    if os.path.isfile(label_path):
        labels = read_binary_matrix(label_path)
        _check_rows(labels, n, label_path, img_path)
    elif split == "train":
        labels = np.zeros((n, 0), np.uint8)
    else:
        raise FileNotFoundError(f"Ground-truth labels for split {split!r} not found: {label_path}")

    class_names: tuple[str, ...] = ()
    if label_names is not None:
        class_names = tuple(read_name_list(os.path.join(list_dir, label_names)))
        if labels.shape[1] and len(class_names) != labels.shape[1]:
            raise DataFormatError(
                f"{label_path}: {labels.shape[1]} label columns but {len(class_names)} names "
                f"in {os.path.join(list_dir, label_names)}."
            )

    tags = np.zeros((n, 0), np.uint8)
    tag_names: tuple[str, ...] = ()
    tag_path = os.path.join(list_dir, "train_tag.txt")
    if split == "train" and os.path.isfile(tag_path):
        vocab = None
        if tag_vocab is not None:
            vocab_path = os.path.join(list_dir, tag_vocab)
            vocab = read_name_list(vocab_path)
            tag_names = tuple(vocab)
        tags = read_binary_matrix(tag_path, columns=len(vocab) if vocab else None)
        _check_rows(tags, n, tag_path, img_path)

    return SplitData(
        name=split,
        paths=_resolve_paths(names, image_root, img_path, check_files),
        labels=labels,
        tags=tags,
        label_names=class_names,
        tag_names=tag_names,
    )


def _check_rows(matrix: np.ndarray, n: int, matrix_path: str, img_path: str) -> None:
    if matrix.shape[0] != n:
        raise DataFormatError(
            f"{matrix_path}: {matrix.shape[0]} rows, but {img_path} lists {n} images."
        )


# ---------------------------------------------------------------------------------------
# Writers: what `python -m wsdhash.data.prepare` produces. Atomic, so an interrupted
# preparation never leaves a half-written list that a reader would trust.


def matrix_lines(matrix: np.ndarray) -> list[str]:
    """0/1 rows as space-separated text lines (no newline)."""
    return [" ".join(row) for row in np.where(np.asarray(matrix) != 0, "1", "0").tolist()]


def _write_lines(path: str, lines: Sequence[str]) -> None:
    from wsdhash import atomic_files  # pylint: disable=g-import-not-at-top

    atomic_files.write_text(path, "".join(f"{line}\n" for line in lines))


def _check_relative(names: Sequence[str], what: str) -> None:
    for name in names:
        if not name or any(c.isspace() for c in name) or os.path.isabs(name):
            raise DataFormatError(
                f"{what}: image path {name!r} must be relative and contain no whitespace "
                "(list lines are space-separated)."
            )


def write_hashnet_list(path: str, names: Sequence[str], labels: np.ndarray) -> None:
    """Writes `relative/path l1 ... lC` lines, the format `read_hashnet_list` reads."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] != len(names):
        raise ValueError(f"{path}: labels {labels.shape} do not match {len(names)} paths.")
    _check_relative(names, path)
    rows = matrix_lines(labels)
    _write_lines(path, [f"{name} {row}" for name, row in zip(names, rows, strict=True)])


def write_wsdhq_split(
    list_dir: str,
    split: str,
    names: Sequence[str],
    labels: np.ndarray,
    tags: np.ndarray | None = None,
) -> None:
    """Writes one split in the WSDHQ layout (`read_wsdhq_split` reads it back).

    Args:
        list_dir: the folder.
        split: "train", "query" (written as `test_*`) or "database".
        names: relative image paths.
        labels: (N, C) ground truth.
        tags: (N, T) user tags (train only).
    """
    prefix = WSDHQ_PREFIXES[split]
    _check_relative(names, os.path.join(list_dir, f"{prefix}_img.txt"))
    labels = np.asarray(labels)
    if labels.shape[0] != len(names):
        raise ValueError(f"{split}: {labels.shape[0]} label rows for {len(names)} paths.")
    _write_lines(os.path.join(list_dir, f"{prefix}_img.txt"), list(names))
    _write_lines(os.path.join(list_dir, f"{prefix}_label.txt"), matrix_lines(labels))
    if tags is not None:
        if split != "train":
            raise ValueError("Only the train split has a tag matrix in the WSDHQ layout.")
        if np.asarray(tags).shape[0] != len(names):
            raise ValueError(
                f"{split}: {np.asarray(tags).shape[0]} tag rows for {len(names)} paths."
            )
        _write_lines(os.path.join(list_dir, "train_tag.txt"), matrix_lines(tags))


def write_name_list(path: str, names: Sequence[str]) -> None:
    """One name per line (class names, a tag vocabulary)."""
    _write_lines(path, list(names))
