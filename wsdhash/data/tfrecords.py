"""A prepared dataset's splits as TFRecord shards: the format, and reading it in `tf.data`.

`python -m wsdhash.pipeline tfrecords` (wsdhash/beam/tfrecords.py) writes a folder:

    <dir>/tfrecords.json                   the manifest (below)
    <dir>/<split>-00003-of-00016.tfrecord  records of one split, by increasing index
    <dir>/<split>-locations.npy            int64 (N, 3): shard number, byte offset and
                                           length of item i's image bytes (inside its
                                           record), row i

Each record is a `tf.train.Example` with the features of `FIELDS`: the image file's
bytes exactly as on disk, the item's position in its split's list file, its split, its
path, and its labels and tags as the column numbers of their ones. Item i of a split goes
to shard `shard_of(split, i, num_shards)`, a stable hash (SHA-256 of "split/i"), so
shards are the same whatever the runner and the number of workers; within a shard
records are sorted by index, so a shard's bytes, and its SHA-256, are reproducible.

The manifest (JSON):

    {"format": "wsdhash-tfrecords", "version": 1,
     "source": {"dataset": "builtin", "data_dir": "/abs/data/builtin", "options": {...}},
     "fields": {name: description},
     "splits": {"train": {"num_items": N, "num_labels": C, "num_tags": T,
                          "targets_sha256": <hash of the list files' labels and tags>,
                          "shards": [{"file": ..., "num_items": n, "num_bytes": b,
                                      "sha256": ...}],
                          "locations": {"file": ..., "sha256": ...}}}}

Training reads the shards in one of two orders (`open_split`, docs/tfrecords.md):
`ShardedImages.reader` reads each image's bytes at its location, so the run's items come in
exactly the order the image files would (the same batches); `stream_records` reads the
shards sequentially, interleaved, through a bounded shuffle buffer (sequential I/O, a
different order). Labels and tags always come from the dataset's list files (checked
against `targets_sha256`), so merged tags and carved validation apply as with files.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable

import numpy as np

from wsdhash.data.types import SplitData

MANIFEST = "tfrecords.json"
FORMAT = "wsdhash-tfrecords"
VERSION = 1
# A tf.train.Example record's framing in a TFRecord file: length (8 bytes) and its
# CRC (4) before the data, the data's CRC (4) after.
RECORD_HEADER_BYTES = 12
RECORD_FRAMING_BYTES = 16
FIELDS = {
    "image": "bytes: the image file exactly as on disk (JPEG, PNG, ...)",
    "index": "int64: the item's position in its split's list file",
    "split": "bytes: the split name",
    "path": "bytes: the image path the list file gives (image root joined)",
    "labels": "int64 list: the columns of the item's ground-truth labels that are 1",
    "tags": "int64 list: the columns of the item's user tags that are 1",
}
# `stream_records`' default shuffle buffer, in records (encoded images: about
# 10,000 x the mean file size of memory).
STREAM_SHUFFLE_BUFFER = 10_000
STREAM_CYCLE_LENGTH = 8


class TFRecordsError(ValueError):
    """A shards folder is missing, malformed, damaged or does not match the dataset."""


def shard_of(split: str, index: int, num_shards: int) -> int:
    """The shard of item `index` of `split`: a stable hash (never Python's salted one)."""
    digest = hashlib.sha256(f"{split}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def shard_file_name(split: str, shard: int, num_shards: int) -> str:
    return f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord"


def targets_sha256(split: SplitData) -> str:
    """A hash of a split's labels and tags (shapes and values): shards record it, and a
    run refuses shards whose split no longer has the list files' targets."""
    digest = hashlib.sha256()
    for matrix in (split.labels, split.tags):
        matrix = np.ascontiguousarray(matrix != 0, dtype=np.uint8)
        digest.update(np.asarray(matrix.shape, np.int64).tobytes())
        digest.update(matrix.tobytes())
    return digest.hexdigest()


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def example_bytes(split: SplitData, index: int, image: bytes) -> bytes:
    """Item `index` of `split` as a serialized `tf.train.Example` (`FIELDS`)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    def int64s(values) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    def raw(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    features = {
        "image": raw(image),
        "index": int64s([index]),
        "split": raw(split.name.encode()),
        "path": raw(str(split.paths[index]).encode()),
        "labels": int64s(np.flatnonzero(split.labels[index])),
        "tags": int64s(np.flatnonzero(split.tags[index])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=features))
    # Deterministic: map fields in key order, so a shard's bytes do not depend on the run.
    return example.SerializeToString(deterministic=True)


def parse_example(serialized, num_labels: int, num_tags: int) -> dict:
    """A record's fields as tensors: image (bytes), index, split, path, and labels and
    tags as dense float32 (C,) and (T,) multi-hot vectors, the pipeline's dtype."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "index": tf.io.FixedLenFeature([], tf.int64),
        "split": tf.io.FixedLenFeature([], tf.string),
        "path": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.VarLenFeature(tf.int64),
        "tags": tf.io.VarLenFeature(tf.int64),
    }
    fields = tf.io.parse_single_example(serialized, spec)
    for name, width in (("labels", num_labels), ("tags", num_tags)):
        ones = fields[name].values
        fields[name] = tf.scatter_nd(
            ones[:, None], tf.ones_like(ones, tf.float32), tf.constant([width], tf.int64)
        )
    return fields


# -----------------------------------------------------------------------------
# The manifest and its checks
# -----------------------------------------------------------------------------


def read_manifest(directory: str) -> dict:
    """The manifest of a shards folder, its format checked; errors name the file."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        raise TFRecordsError(
            f"{directory} holds no TFRecord shards (no {MANIFEST}); write them with "
            "`python -m wsdhash.pipeline tfrecords`."
        )
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as error:
        raise TFRecordsError(f"{path}: not a readable JSON manifest ({error}).") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise TFRecordsError(
            f"{path}: not a {FORMAT} manifest of version {VERSION} (format "
            f"{manifest.get('format')!r}, version {manifest.get('version')!r})."
        )
    return manifest


def split_entry(manifest: dict, directory: str, split: str) -> dict:
    entry = manifest.get("splits", {}).get(split)
    if entry is None:
        raise TFRecordsError(
            f"{os.path.join(directory, MANIFEST)} has no split {split!r}; it has "
            f"{', '.join(sorted(manifest.get('splits', {}))) or 'none'}."
        )
    return entry


def verify_split(directory: str, entry: dict, *, checksums: bool = True) -> None:
    """Checks a split's shard and locations files against the manifest: present, of
    the recorded size and (with `checksums`, one read of every byte) SHA-256.

    Raises:
        TFRecordsError: one line naming the first damaged or missing file.
    """
    files = [(s["file"], s.get("num_bytes"), s["sha256"]) for s in entry["shards"]]
    files.append((entry["locations"]["file"], None, entry["locations"]["sha256"]))
    for name, size, sha256 in files:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise TFRecordsError(f"{path} is missing; write the shards again.")
        if size is not None and os.path.getsize(path) != size:
            raise TFRecordsError(
                f"{path} has {os.path.getsize(path)} bytes, the manifest says {size}: the "
                "shard is damaged or truncated; write the shards again."
            )
        if checksums and file_sha256(path) != sha256:
            raise TFRecordsError(
                f"{path} does not match its SHA-256 in {MANIFEST}: the shard is damaged "
                "or was replaced; write the shards again."
            )


def check_source(entry: dict, split: SplitData, directory: str) -> None:
    """Refuses shards of `split` written from other list files (count or targets)."""
    where = os.path.join(directory, MANIFEST)
    if entry["num_items"] != len(split):
        raise TFRecordsError(
            f"{where}: split {split.name!r} has {entry['num_items']} items in the shards "
            f"but {len(split)} in the dataset's list files; write the shards again."
        )
    if entry["targets_sha256"] != targets_sha256(split):
        raise TFRecordsError(
            f"{where}: the labels or tags of split {split.name!r} differ from the dataset's "
            "list files; write the shards again."
        )


def source_rows(source: SplitData, subset: SplitData) -> np.ndarray:
    """The position in `source` (the split the shards hold) of each item of `subset`
    (a split taken from it: the training items after the validation carve), matched by
    path; repeated paths are matched in order.

    Raises:
        TFRecordsError: an item of `subset` is not in `source`.
    """
    positions: dict[str, list[int]] = {}
    for row, path in enumerate(map(str, source.paths)):
        positions.setdefault(path, []).append(row)
    taken = {path: 0 for path in positions}
    rows = np.empty(len(subset), np.int64)
    for i, path in enumerate(map(str, subset.paths)):
        candidates = positions.get(path, ())
        if taken.get(path, 0) >= len(candidates):
            raise TFRecordsError(f"{path} (item {i} of {subset.name!r}) is not in the shards.")
        rows[i] = candidates[taken[path]]
        taken[path] += 1
    return rows


# -----------------------------------------------------------------------------
# Reading
# -----------------------------------------------------------------------------


class ShardedImages:
    """The images of one split's shards, read at their locations (the image bytes
    inside each record: no parsing).

    Reads with `os.pread` on descriptors opened once per shard (thread-safe: `tf.data`
    calls it from many threads): local files, or any file system mounted as one.
    """

    def __init__(self, directory: str, entry: dict):
        self.directory = directory
        self.entry = entry
        self.files = [os.path.join(directory, s["file"]) for s in entry["shards"]]
        self.locations = np.load(os.path.join(directory, entry["locations"]["file"]))
        self._descriptors: dict[int, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.locations)

    def read(self, row: int) -> bytes:
        """The encoded image of item `row` of the split, as its file holds it."""
        shard, offset, length = (int(v) for v in self.locations[row])
        descriptor = self._descriptors.get(shard)
        if descriptor is None:
            with self._lock:
                descriptor = self._descriptors.get(shard)
                if descriptor is None:
                    descriptor = os.open(self.files[shard], os.O_RDONLY)
                    self._descriptors[shard] = descriptor
        data = os.pread(descriptor, length, offset)
        if len(data) != length:
            raise TFRecordsError(f"{self.files[shard]}: the image of item {row} is cut short.")
        return data

    def close(self) -> None:
        with self._lock:
            for descriptor in self._descriptors.values():
                os.close(descriptor)
            self._descriptors.clear()

    def reader(self, rows: np.ndarray) -> Callable[[int], bytes]:
        """`index -> image bytes` for `make_dataset(image_reader=...)`: `index` is a
        position in a split whose item i is item `rows[i]` of the shards' split."""
        rows = np.asarray(rows, np.int64)

        def read(index: int) -> bytes:
            return self.read(int(rows[index]))

        return read


def open_split(
    directory: str, split: SplitData, *, checksums: bool = True
) -> tuple[dict, ShardedImages]:
    """Opens the shards of `split` (named as in the dataset) after checking them against
    the manifest and the dataset's list files; returns (its manifest entry, reader).

    Raises:
        TFRecordsError: one line naming what is wrong.
    """
    manifest = read_manifest(directory)
    entry = split_entry(manifest, directory, split.name)
    check_source(entry, split, directory)
    verify_split(directory, entry, checksums=checksums)
    return entry, ShardedImages(directory, entry)


def stream_records(
    images: ShardedImages,
    subset: SplitData,
    rows: np.ndarray,
    *,
    seed: int,
    num_pipelines: int = 1,
    pipeline_id: int = 0,
    shuffle_buffer: int = STREAM_SHUFFLE_BUFFER,
    cycle_length: int = STREAM_CYCLE_LENGTH,
):
    """An endless, shuffled stream of `subset`'s elements read sequentially from the
    shards, for `make_dataset(stream=...)`.

    Every epoch the shard files are shuffled (seeded), `cycle_length` of them are read
    at once, interleaved in parallel (deterministically), records of items not in
    `subset` are dropped, and a `shuffle_buffer` of records is shuffled (seeded). Each
    of `num_pipelines` input pipelines reads its own shard files (or, with fewer files
    than pipelines, every `num_pipelines`-th record). Labels, tags, path and index come
    from `subset` (item `rows[i]` of the shards is item i of `subset`).
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    position = np.full(len(images), -1, np.int64)
    position[np.asarray(rows, np.int64)] = np.arange(len(subset), dtype=np.int64)
    position = tf.constant(position)
    columns = {
        "path": tf.constant(subset.paths.astype(str)),
        "labels": tf.constant(subset.labels.astype("float32")),
        "tags": tf.constant(subset.tags.astype("float32")),
    }
    files = tf.data.Dataset.from_tensor_slices(images.files)
    by_file = len(images.files) >= num_pipelines
    if num_pipelines > 1 and by_file:
        files = files.shard(num_pipelines, pipeline_id)
    files = files.shuffle(len(images.files), seed=seed, reshuffle_each_iteration=True)
    records = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=cycle_length,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if num_pipelines > 1 and not by_file:
        records = records.shard(num_pipelines, pipeline_id)
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "index": tf.io.FixedLenFeature([], tf.int64),
    }

    def element(serialized):
        fields = tf.io.parse_single_example(serialized, spec)
        index = tf.gather(position, fields["index"])
        safe = tf.maximum(index, 0)
        found = {key: tf.gather(column, safe) for key, column in columns.items()}
        return {**found, "index": index, "image_bytes": fields["image"]}

    def in_subset(element):
        return element["index"] >= 0

    records = records.map(element, num_parallel_calls=tf.data.AUTOTUNE).filter(in_subset)
    records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return records.repeat()
