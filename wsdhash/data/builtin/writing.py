"""Writing the built-in dataset: images in parallel, the WSDHQ list files, and the
`builtin.json` marker that says a generation finished (see the package doc)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import re
from collections.abc import Sequence

import cv2
import numpy as np

from wsdhash import atomic_files
from wsdhash.data import list_files
from wsdhash.data.builtin.concepts import CONCEPTS, sample_concepts
from wsdhash.data.builtin.rendering import render_scene
from wsdhash.data.builtin.tags import TAG_INDEX, TAG_WORDS, sample_tags

FORMAT_VERSION = 1
INFO_FILE = "builtin.json"
IMAGE_DIR = "images"

# Text files, in writing order; builtin.json comes after all of them.
_TEXT_FILES = (
    "label_names.txt",
    "tag_vocab.txt",
    "train_img.txt",
    "test_img.txt",
    "database_img.txt",
    "train_tag.txt",
    "train_label.txt",
    "test_label.txt",
    "database_label.txt",
)
_IMAGE_NAME = re.compile(r"^\d{6,}\.(png|jpg)$")


@dataclasses.dataclass(frozen=True)
class BuiltinInfo:
    """What `generate_builtin` produced (or found already in place).

    Attributes:
        root: the dataset folder; list-file paths are relative to it.
        seed: the generation seed.
        image_size: images are image_size x image_size x 3.
        image_format: "png" or "jpg".
        num_train: training images (the only ones with tags).
        num_query: query images, listed in `test_img.txt`.
        num_database: database images.
        label_names: the C concept names, = `CONCEPTS`.
        tag_vocab: the T tag words, in `train_tag.txt` column order.
    """

    root: str
    seed: int
    image_size: int
    image_format: str
    num_train: int
    num_query: int
    num_database: int
    label_names: tuple[str, ...]
    tag_vocab: tuple[str, ...]

    @property
    def num_concepts(self) -> int:
        return len(self.label_names)

    @property
    def num_tags(self) -> int:
        return len(self.tag_vocab)

    @property
    def num_images(self) -> int:
        return self.num_train + self.num_query + self.num_database

    def path(self, name: str) -> str:
        """Absolute path of a file of the dataset, e.g. `info.path("train_tag.txt")`."""
        return os.path.join(self.root, name)


def _image_generators(seed: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent (labels, pixels, tags) generators of one image.

    Separate streams keep the labels and tags of image i unchanged when only the drawing
    code changes, and vice versa.
    """
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(index,))
    return tuple(np.random.Generator(np.random.PCG64(s)) for s in sequence.spawn(3))


def _image_name(index: int, image_format: str) -> str:
    return f"{IMAGE_DIR}/{index:06d}.{image_format}"


def _write_lines_atomic(path: str, lines: Sequence[str]) -> None:
    atomic_files.write_text(path, "".join(line + "\n" for line in lines))


def _generate_chunk(
    root: str,
    seed: int,
    start: int,
    stop: int,
    image_size: int,
    image_format: str,
    jpeg_quality: int,
) -> tuple[int, np.ndarray, list[list[int]]]:
    """Draws and writes images [start, stop); returns their labels and tag indices."""
    cv2.setNumThreads(1)  # parallelism comes from the process pool
    labels = np.zeros((stop - start, len(CONCEPTS)), np.uint8)
    tags = []
    if image_format == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    else:
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    for row, index in enumerate(range(start, stop)):
        label_rng, pixel_rng, tag_rng = _image_generators(seed, index)
        concept_ids = sample_concepts(label_rng)
        labels[row, concept_ids] = 1
        tags.append(sample_tags(tag_rng, concept_ids))
        image = render_scene(pixel_rng, concept_ids, image_size)
        ok, encoded = cv2.imencode(
            "." + image_format, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params
        )
        if not ok:
            raise RuntimeError(f"cv2 could not encode image {index} as {image_format}.")
        atomic_files.write_bytes(
            os.path.join(root, _image_name(index, image_format)), encoded.tobytes()
        )
    return start, labels, tags


def _params(
    seed, image_size, num_train, num_query, num_database, image_format, jpeg_quality
) -> dict:
    params = {
        "seed": seed,
        "image_size": image_size,
        "num_train": num_train,
        "num_query": num_query,
        "num_database": num_database,
        "image_format": image_format,
    }
    if image_format == "jpg":
        params["jpeg_quality"] = jpeg_quality
    return params


def _read_info(root: str) -> dict | None:
    """The parsed builtin.json, or None when absent or unreadable (= incomplete)."""
    try:
        with open(os.path.join(root, INFO_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _info_from_record(root: str, record: dict) -> BuiltinInfo:
    params = record["params"]
    with open(os.path.join(root, "tag_vocab.txt"), encoding="utf-8") as f:
        vocab = tuple(f.read().splitlines())
    return BuiltinInfo(
        root=root,
        seed=params["seed"],
        image_size=params["image_size"],
        image_format=params["image_format"],
        num_train=params["num_train"],
        num_query=params["num_query"],
        num_database=params["num_database"],
        label_names=tuple(record["label_names"]),
        tag_vocab=vocab,
    )


def _check_root_is_ours(root: str) -> None:
    """Refuses to write into a folder holding anything but a (partial) built-in dataset."""
    known = set(_TEXT_FILES) | {INFO_FILE, IMAGE_DIR}
    foreign = sorted(
        name for name in os.listdir(root) if name not in known and not name.startswith(".")
    )
    if foreign:
        raise FileExistsError(
            f"{root} is not empty and holds no built-in dataset (found {foreign[:5]}); "
            "pass overwrite=True or choose an empty folder."
        )


def _remove_stale_images(root: str) -> None:
    """Deletes images of an earlier generation, which may have had more images."""
    image_dir = os.path.join(root, IMAGE_DIR)
    if not os.path.isdir(image_dir):
        return
    for name in os.listdir(image_dir):
        if _IMAGE_NAME.match(name) or (name.startswith(".") and name.endswith(".tmp")):
            os.remove(os.path.join(image_dir, name))


def generate_builtin(
    root: str | os.PathLike,
    *,
    seed: int = 0,
    image_size: int = 64,
    num_train: int = 5000,
    num_query: int = 500,
    num_database: int = 5000,
    image_format: str = "png",
    overwrite: bool = False,
    jpeg_quality: int = 90,
    num_workers: int | None = None,
) -> BuiltinInfo:
    """Writes the built-in dataset under `root`, or finds it already there.

    Calling it again with the same arguments returns at once without rewriting anything,
    so callers can call it unconditionally. A root without `builtin.json` holds an
    interrupted generation and is regenerated.

    Args:
        root: dataset folder; created if needed.
        seed: one seed for everything; the same seed gives byte-identical files.
        image_size: side of the square RGB images, >= 16. Geometry scales with it.
        num_train: training images (with tags and labels).
        num_query: query images (`test_img.txt`, `test_label.txt`).
        num_database: database images; disjoint from query and train.
        image_format: "png" (lossless) or "jpg" ("jpeg" is accepted as "jpg").
        overwrite: regenerate even if `root` holds a dataset with other parameters.
        jpeg_quality: JPEG quality, used only for "jpg".
        num_workers: processes drawing images; 0 draws in this process; None picks
            one per CPU core (at most 8) for large datasets. Does not change the output.
            Workers are started with "spawn", so a script that calls this at import
            time needs the usual `if __name__ == "__main__":` guard.

    Returns:
        A `BuiltinInfo` describing the dataset.

    Raises:
        ValueError: on invalid arguments.
        FileExistsError: `root` holds a dataset generated with other parameters, or
            unrelated files, and `overwrite` is False.
    """
    root = os.path.abspath(os.fspath(root))
    image_format = {"jpeg": "jpg"}.get(image_format.lower(), image_format.lower())
    params = _checked_params(
        seed, image_size, num_train, num_query, num_database, image_format, jpeg_quality
    )
    existing = _existing_dataset(root, params, overwrite)
    if existing is not None:
        return existing
    _clear_for_writing(root)
    total = num_train + num_query + num_database
    if num_workers is None:
        num_workers = 0 if total < 1000 else min(os.cpu_count() or 1, 8)
    labels, tag_ids = _draw_images(root, params, int(jpeg_quality), num_workers)
    contents, num_tags = _text_files(params, labels, tag_ids)
    for name, lines in contents.items():
        _write_lines_atomic(os.path.join(root, name), lines)
    record = {
        "format_version": FORMAT_VERSION,
        "generator": "wsdhash.data.builtin",
        "params": params,
        "label_names": list(CONCEPTS),
        "num_tags": num_tags,
        "files": list(_TEXT_FILES),
    }
    atomic_files.write_bytes(
        os.path.join(root, INFO_FILE),
        (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(),
    )
    return _info_from_record(root, record)


def _checked_params(
    seed, image_size, num_train, num_query, num_database, image_format, jpeg_quality
) -> dict:
    """The generation parameters as `builtin.json` records them; ValueError when invalid."""
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}.")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}.")
    for name, count in (
        ("num_train", num_train),
        ("num_query", num_query),
        ("num_database", num_database),
    ):
        if int(count) != count or count < 1:
            raise ValueError(f"{name} must be a positive integer, got {count!r}.")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a non-negative integer, got {seed}.")
    return _params(
        int(seed),
        int(image_size),
        int(num_train),
        int(num_query),
        int(num_database),
        image_format,
        int(jpeg_quality),
    )


def _existing_dataset(root: str, params: dict, overwrite: bool) -> BuiltinInfo | None:
    """The complete dataset with these parameters already under `root`, else None once
    it is sure that `root` may be (over)written (FileExistsError otherwise)."""
    record = _read_info(root)
    if record is not None:
        same = record.get("format_version") == FORMAT_VERSION and record.get("params") == params
        if same and all(os.path.isfile(os.path.join(root, f)) for f in _TEXT_FILES):
            return _info_from_record(root, record)
        if not overwrite:
            raise FileExistsError(
                f"{root} holds a built-in dataset generated with "
                f"{record.get('params')} (format {record.get('format_version')}), not "
                f"{params} (format {FORMAT_VERSION}); pass overwrite=True to replace it "
                "or choose another root."
            )
    elif os.path.isdir(root) and not overwrite:
        _check_root_is_ours(root)
    return None


def _clear_for_writing(root: str) -> None:
    """Creates the image folder and removes the marker and an earlier generation's images."""
    os.makedirs(os.path.join(root, IMAGE_DIR), exist_ok=True)
    # Removing the marker first means an interruption from here on is detected.
    if os.path.exists(os.path.join(root, INFO_FILE)):
        os.remove(os.path.join(root, INFO_FILE))
    _remove_stale_images(root)


def _draw_images(
    root: str, params: dict, jpeg_quality: int, num_workers: int
) -> tuple[np.ndarray, list[list[int]]]:
    """Draws and writes every image; their (N, C) labels and tag indices, in image order."""
    total = params["num_train"] + params["num_query"] + params["num_database"]
    labels = np.zeros((total, len(CONCEPTS)), np.uint8)
    tag_ids: list[list[int]] = [[] for _ in range(total)]
    args = (root, params["seed"], params["image_size"], params["image_format"], jpeg_quality)
    if num_workers <= 1:
        chunks = [_generate_chunk(*args[:2], 0, total, *args[2:])]
    else:
        # Small chunks balance the load; results are placed by index, so the split of
        # work never changes the output. "spawn" avoids forking a parent that may
        # already run TensorFlow or OpenCV threads.
        chunk = max(1, min(500, math.ceil(total / (4 * num_workers))))
        with concurrent.futures.ProcessPoolExecutor(
            num_workers, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            futures = [
                pool.submit(_generate_chunk, *args[:2], start, min(start + chunk, total), *args[2:])
                for start in range(0, total, chunk)
            ]
            chunks = [f.result() for f in futures]
    for start, chunk_labels, chunk_tags in chunks:
        labels[start : start + len(chunk_labels)] = chunk_labels
        tag_ids[start : start + len(chunk_tags)] = chunk_tags
    return labels, tag_ids


def _text_files(
    params: dict, labels: np.ndarray, tag_ids: list[list[int]]
) -> tuple[dict[str, list[str]], int]:
    """(file name -> lines of the WSDHQ text files in `_TEXT_FILES` order, T tags used)."""
    num_train, num_query = params["num_train"], params["num_query"]
    image_format = params["image_format"]
    train = range(num_train)
    query = range(num_train, num_train + num_query)
    database = range(num_train + num_query, len(labels))
    used = sorted({i for row in tag_ids[:num_train] for i in row})
    vocab = sorted(TAG_WORDS[i] for i in used)
    column = {TAG_INDEX[word]: j for j, word in enumerate(vocab)}
    train_tags = np.zeros((num_train, len(vocab)), np.uint8)
    for row, ids in enumerate(tag_ids[:num_train]):
        train_tags[row, [column[i] for i in ids]] = 1
    contents = {
        "label_names.txt": list(CONCEPTS),
        "tag_vocab.txt": vocab,
        "train_img.txt": [_image_name(i, image_format) for i in train],
        "test_img.txt": [_image_name(i, image_format) for i in query],
        "database_img.txt": [_image_name(i, image_format) for i in database],
        "train_tag.txt": list_files.matrix_lines(train_tags),
        "train_label.txt": list_files.matrix_lines(labels[:num_train]),
        "test_label.txt": list_files.matrix_lines(labels[query.start : query.stop]),
        "database_label.txt": list_files.matrix_lines(labels[database.start : database.stop]),
    }
    assert tuple(contents) == _TEXT_FILES
    return contents, len(vocab)
