"""Reading and writing the tag-processing artefacts (docs/methods.md, "WSDHQ: tag processing").

Files in an output folder, all written atomically:

* `FinalTagEmbs.txt`: T' x D floats, `np.loadtxt`-readable, 9 significant digits so
  float32 values round-trip exactly.
* `TagIdMergeMap.json`: `{"0": [raw column indices], "1": [...], ...}`. Merged ids are
  0..T'-1 and id g is row g of `FinalTagEmbs.txt` (the row-order contract). JSON
  instead of the original pickle: reading a pickle can run arbitrary code.
* `merged_tags.txt`: N x T' 0/1 merged training-tag matrix (optional).
* `dropped_tags.json`: reason -> raw column indices dropped.
* `report.md`: counts, largest merge groups, nearest neighbours of frequent tags.

The original `TagIdMergeMap.pkl` is read only with `allow_pickle=True`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from wsdhash import atomic_files
from wsdhash.data.types import DataFormatError, SplitData
from wsdhash.tagging.processing import TagProcessingResult

FINAL_EMBEDDINGS_FILE = "FinalTagEmbs.txt"
MERGE_MAP_FILE = "TagIdMergeMap.json"
MERGED_TAGS_FILE = "merged_tags.txt"
DROPPED_TAGS_FILE = "dropped_tags.json"
REPORT_FILE = "report.md"
SETTINGS_FILE = "tag_processing.json"

# The original's merge map may hold key -1 (probably the tags without a vector); its
# loader deletes it (docs/methods.md, "WSDHQ: tag processing"), and so do we.
_DROPPED_KEY = -1


# --- FinalTagEmbs.txt -----------------------------------------------------------------


def write_final_embeddings(path: str | os.PathLike, embeddings: np.ndarray) -> None:
    """Writes the T' x D embedding matrix as `np.loadtxt` text."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2:
        raise ValueError(f"Embeddings must be 2-D (T', D), got shape {embeddings.shape}.")
    with atomic_files.atomic_path(path) as temporary:
        np.savetxt(temporary, embeddings, fmt="%.9g")


def read_final_embeddings(path: str | os.PathLike) -> np.ndarray:
    """Reads `FinalTagEmbs.txt` as float32 (T', D)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Tag embeddings file not found: {path}")
    try:
        return np.loadtxt(path, dtype=np.float32, ndmin=2)
    except ValueError as error:
        raise DataFormatError(f"{path}: not a float matrix ({error}).") from None


# --- Merge map ------------------------------------------------------------------------


def write_merge_map(path: str | os.PathLike, merge_map: Mapping[int, Sequence[int]]) -> None:
    """Writes the merge map as JSON, keys in id order (must be 0..T'-1)."""
    merge_map = _checked_merge_map(dict(merge_map), os.fspath(path), contiguous=True)
    # Not atomic_files.write_json: it sorts keys as strings ("10" before "2").
    lines = [f'  "{g}": {json.dumps(members)}' for g, members in merge_map.items()]
    atomic_files.write_text(path, "{\n" + ",\n".join(lines) + "\n}\n")


def _checked_merge_map(merge_map: dict, path: str, *, contiguous: bool) -> dict[int, list[int]]:
    checked: dict[int, list[int]] = {}
    for key, members in merge_map.items():
        if isinstance(members, (str, bytes)) or not hasattr(members, "__iter__"):
            raise DataFormatError(f"{path}: merged tag {key!r} maps to {members!r}, not a list.")
        members = list(members)
        if not members or not all(
            isinstance(m, (int, np.integer)) and not isinstance(m, bool) and m >= 0 for m in members
        ):
            raise DataFormatError(
                f"{path}: merged tag {key!r} must map to a non-empty list of raw column "
                f"indices >= 0, got {members[:10]!r}."
            )
        checked[int(key)] = [int(m) for m in members]
    if contiguous and sorted(checked) != list(range(len(checked))):
        raise DataFormatError(
            f"{path}: merged ids must be 0..{len(checked) - 1}, got {sorted(checked)[:10]}..."
        )
    return checked


def load_merge_map(path: str | os.PathLike, allow_pickle: bool = False) -> dict[int, list[int]]:
    """Reads a merge map `{merged_id: [raw column indices]}` from JSON or (opt-in) pickle.

    JSON (ours): keys must be "0".."T'-1"; the result is ordered by id. Pickle (the
    original `TagIdMergeMap.pkl`): the dict's own iteration order is kept, because the
    original code reads columns in that order; key -1 is deleted when present.

    Args:
        path: `.json`, or `.pkl` / `.pickle`.
        allow_pickle: must be True to read a pickle. Unpickling runs code from the
            file, so only do it for files you trust.

    Returns:
        Ordered dict merged id -> raw column indices; row g of `FinalTagEmbs.txt` is the
        g-th entry.

    Raises:
        FileNotFoundError, DataFormatError, PermissionError (pickle without allow_pickle).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Merge-map file not found: {path}")
    if path.endswith((".pkl", ".pickle")):
        if not allow_pickle:
            raise PermissionError(
                f"{path} is a pickle; loading a pickle can run arbitrary code. Pass "
                "allow_pickle=True (--allow_pickle) only for a file you trust, or convert it "
                "to JSON once."
            )
        with open(path, "rb") as f:
            value = pickle.load(f)
        if not isinstance(value, dict):
            raise DataFormatError(f"{path}: expected a pickled dict, got {type(value).__name__}.")
        value = {k: v for k, v in value.items() if k != _DROPPED_KEY}
        return _checked_merge_map(value, path, contiguous=False)
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}: not valid JSON ({error}).") from None
    if not isinstance(value, dict):
        raise DataFormatError(f"{path}: expected a JSON object, got {type(value).__name__}.")
    try:
        value = {int(k): v for k, v in value.items()}
    except ValueError:
        raise DataFormatError(
            f"{path}: merged ids must be integers, got {list(value)[:5]}."
        ) from None
    value.pop(_DROPPED_KEY, None)
    checked = _checked_merge_map(value, path, contiguous=True)
    return {g: checked[g] for g in sorted(checked)}


def merged_labels(tag_matrix: np.ndarray, merge_map: Mapping[int, Sequence[int]]) -> np.ndarray:
    """Merged tag matrix: column g = OR of the raw columns of the g-th merge-map entry.

    Args:
        tag_matrix: N x T 0/1 raw tag matrix.
        merge_map: merged id -> raw column indices, in row order of FinalTagEmbs.txt.

    Returns:
        uint8 (N, T'), columns in merge-map iteration order.
    """
    tag_matrix = np.asarray(tag_matrix, dtype=bool)
    columns = tag_matrix.shape[1]
    out = np.zeros((tag_matrix.shape[0], len(merge_map)), dtype=np.uint8)
    for g, members in enumerate(merge_map.values()):
        members = list(members)
        if max(members) >= columns:
            raise ValueError(
                f"Merge map refers to raw column {max(members)} but the tag matrix has "
                f"{columns} columns."
            )
        out[:, g] = tag_matrix[:, members].any(axis=1)
    return out


def merged_split(split: SplitData | None, merge_map: Mapping[int, Sequence[int]]):
    """The split with its raw tag columns replaced by the merged tags (`merged_labels`).

    Merged tags are named by their members joined with "|" when the split names its
    raw tags. A None split (no validation queries) stays None.
    """
    if split is None:
        return None
    names = split.tag_names
    merged_names = (
        tuple("|".join(names[i] for i in members) for members in merge_map.values())
        if len(names) == split.tags.shape[1]
        else ()
    )
    return dataclasses.replace(
        split, tags=merged_labels(split.tags, merge_map), tag_names=merged_names
    )


def load_tag_targets(tag_dir: str | os.PathLike, num_raw_tags: int) -> dict[int, list[int]]:
    """The merge map of a `python -m wsdhash.tags` folder, checked against the raw tags.

    The merge map is what turns raw tag columns into training targets: merged synonyms
    become one column, dropped tags (rare, absent, without a vector) none. Any method
    trained with `--supervision=tags --tag_dir=D` trains on these columns.

    Args:
        tag_dir: the folder (`TagIdMergeMap.json`; `tag_processing.json` when present
            records the raw tag count it was made for).
        num_raw_tags: T, the columns of the dataset's raw tag matrix.

    Returns:
        Ordered merged id -> raw column indices.

    Raises:
        FileNotFoundError, DataFormatError; ValueError when the folder was made for
        another tag vocabulary.
    """
    tag_dir = os.fspath(tag_dir)
    merge_map = load_merge_map(os.path.join(tag_dir, MERGE_MAP_FILE))
    settings_path = os.path.join(tag_dir, SETTINGS_FILE)
    made_for = None
    if os.path.isfile(settings_path):
        with open(settings_path, encoding="utf-8") as f:
            made_for = json.load(f).get("num_raw_tags")
    largest = max((max(members) for members in merge_map.values()), default=-1)
    if (made_for is not None and int(made_for) != num_raw_tags) or largest >= num_raw_tags:
        raise ValueError(
            f"--tag_dir={tag_dir} was made for "
            f"{made_for if made_for is not None else f'at least {largest + 1}'} raw tags but "
            f"the dataset has {num_raw_tags}; run `python -m wsdhash.tags` on this dataset's "
            "training tags."
        )
    return merge_map


def write_label_matrix(path: str | os.PathLike, matrix: np.ndarray) -> None:
    """Writes a 0/1 matrix as space-separated rows (`np.loadtxt` layout)."""
    matrix = np.asarray(matrix, dtype=np.uint8)
    text = "".join(" ".join(map(str, row)) + "\n" for row in matrix.tolist())
    atomic_files.write_text(path, text)


# --- Report ---------------------------------------------------------------------------


def _words(vocabulary: Sequence[str], indices: Sequence[int], limit: int = 30) -> str:
    shown = ", ".join(vocabulary[i] for i in list(indices)[:limit])
    more = len(indices) - limit
    return shown + (f", ... (+{more})" if more > 0 else "") if len(indices) else "-"


def _short_name(name: str, words: int = 6) -> str:
    parts = name.split("|")
    return "|".join(parts[:words]) + (f"|...(+{len(parts) - words})" if len(parts) > words else "")


def format_report(
    result: TagProcessingResult,
    *,
    source: Mapping[str, Any] | None = None,
    num_groups: int = 20,
    num_frequent: int = 8,
    num_neighbours: int = 5,
) -> str:
    """A human-readable Markdown report of one tag-processing run.

    Args:
        result: the run.
        source: extra "key: value" lines (input files, vector source).
        num_groups: largest merge groups listed.
        num_frequent: frequent merged tags whose nearest neighbours are listed.
        num_neighbours: neighbours per frequent tag (cosine of the final embeddings).

    Returns:
        Markdown text.
    """
    vocabulary = result.vocabulary
    selection = result.selection
    groups = list(result.merge_map.values())
    names = [_short_name(name) for name in result.group_names]
    num_merged_away = sum(len(g) - 1 for g in groups)
    lines = ["# Tag processing report", ""]
    for key, value in {**(source or {}), **result.parameters}.items():
        lines.append(f"- {key}: {value}")
    lines += [
        "",
        "## Counts",
        "",
        f"- raw tags: {len(vocabulary)}",
        f"- dropped, absent from the training split: {len(selection.dropped['absent'])}",
        f"- dropped, no word vector: {len(selection.dropped['no_vector'])}",
        f"- dropped, rare (< min_count training images): {len(selection.dropped['rare'])}",
        f"- kept: {len(selection.kept)}",
        f"- merge groups with more than one tag: {sum(len(g) > 1 for g in groups)} "
        f"({num_merged_away} tags merged away)",
        f"- final tags (rows of {FINAL_EMBEDDINGS_FILE}): {len(groups)}",
        f"- correlation graph edges (directed): {int(np.count_nonzero(result.adjacency))}",
        f"- training images: {result.merged_tag_matrix.shape[0]}, "
        f"without any final tag: {int((result.merged_tag_matrix.sum(axis=1) == 0).sum())}",
        "",
        "## Dropped tags",
        "",
        f"- absent from training: {_words(vocabulary, selection.dropped['absent'])}",
        f"- no vector: {_words(vocabulary, selection.dropped['no_vector'])}",
        f"- rare: {_words(vocabulary, selection.dropped['rare'])}",
        "",
        "## Largest merge groups",
        "",
    ]
    largest = sorted(range(len(groups)), key=lambda g: (-len(groups[g]), g))[:num_groups]
    largest = [g for g in largest if len(groups[g]) > 1]
    lines += [f"- {g} ({len(groups[g])} tags): {result.group_names[g]}" for g in largest] or [
        "- none"
    ]
    lines += ["", "## Nearest neighbours of frequent final tags", ""]
    frequency = result.merged_tag_matrix.sum(axis=0)
    embeddings = result.final_embeddings.astype(np.float64)
    similarity = embeddings @ embeddings.T
    for g in np.argsort(-frequency, kind="stable")[:num_frequent]:
        order = [int(h) for h in np.argsort(-similarity[g], kind="stable") if h != g]
        neighbours = ", ".join(
            f"{names[h]} ({similarity[g, h]:.2f})" for h in order[:num_neighbours]
        )
        lines.append(f"- {names[g]} ({int(frequency[g])} images): {neighbours or '-'}")
    return "\n".join(lines) + "\n"


def write_outputs(
    output_dir: str | os.PathLike,
    result: TagProcessingResult,
    *,
    write_merged_tags: bool = True,
    source: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Writes every artefact of `result` into `output_dir` (see the module docstring).

    Returns:
        Artefact name -> path written.
    """
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    paths = {
        "final_embeddings": os.path.join(output_dir, FINAL_EMBEDDINGS_FILE),
        "merge_map": os.path.join(output_dir, MERGE_MAP_FILE),
        "dropped_tags": os.path.join(output_dir, DROPPED_TAGS_FILE),
        "settings": os.path.join(output_dir, SETTINGS_FILE),
        "report": os.path.join(output_dir, REPORT_FILE),
    }
    write_final_embeddings(paths["final_embeddings"], result.final_embeddings)
    write_merge_map(paths["merge_map"], result.merge_map)
    atomic_files.write_json(
        paths["dropped_tags"],
        {reason: [int(i) for i in idx] for reason, idx in result.selection.dropped.items()},
    )
    atomic_files.write_json(
        paths["settings"],
        {
            **{k: str(v) for k, v in (source or {}).items()},
            **result.parameters,
            "num_raw_tags": len(result.vocabulary),
            "num_kept_tags": len(result.selection.kept),
            "num_final_tags": len(result.merge_map),
            "embedding_dim": int(result.final_embeddings.shape[1]),
        },
    )
    if write_merged_tags:
        paths["merged_tags"] = os.path.join(output_dir, MERGED_TAGS_FILE)
        write_label_matrix(paths["merged_tags"], result.merged_tag_matrix)
    # The report last: its presence says the other files are complete.
    atomic_files.write_text(paths["report"], format_report(result, source=source))
    return paths
