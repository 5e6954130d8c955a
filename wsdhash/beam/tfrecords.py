"""A prepared dataset's splits as TFRecord shards, on Apache Beam.

`python -m wsdhash.pipeline tfrecords` calls `write_tfrecords`. The format (records,
locations, manifest) is defined and read in wsdhash/data/tfrecords.py.

The pipeline: ranges of item indices per split -> items (reshuffled over the workers)
-> one `tf.train.Example` per item with the image file's bytes (`_EncodeItems`; each
worker loads the dataset's list files once) -> grouped by shard (`shard_of`, a stable
hash) -> each shard written by one `_WriteShard` call, its records sorted by index.
Shards are written by our own DoFn rather than Beam's `WriteToTFRecord` sink because
the reader needs each record's location (shard, byte offset, length) and a shard whose
bytes, and SHA-256, do not depend on the runner or the number of workers; the sink
decides neither the order within a shard nor which records share one.

The output is built in a temporary folder beside it (`.<name>.*.building`) while
`<output>.lock` is held, and renamed into place once every shard and the manifest are
written (wsdhash/index/sharded.py's pattern): a killed or failed run leaves a previous
output whole. The driver reads the workers' per-shard summaries from that folder, so
the output must be a local path (or a mounted file system) for now.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Sequence

import apache_beam as beam
import numpy as np

from wsdhash import atomic_files, file_lock
from wsdhash.beam import runner
from wsdhash.data import datasets
from wsdhash.data import tfrecords as records_lib


class DestinationError(ValueError):
    """The output path is a file, or a folder that holds something other than shards."""


# Items per `Create` element: the driver sends ranges, the workers expand them.
_RANGE = 1024


def _load_splits(source: dict, names: Sequence[str]) -> dict:
    dataset = datasets.get_dataset(source["dataset"], source["data_dir"], **source["options"])
    return {name: dataset.split(name) for name in names}


class _EncodeItems(beam.DoFn):
    """(split, index) -> ((split, shard), (index, serialized Example, offset and length
    of the image's bytes in it))."""

    def __init__(self, source: dict, num_shards: dict[str, int]):
        self.source = source
        self.num_shards = num_shards
        self.splits = None

    def setup(self):
        self.splits = _load_splits(self.source, sorted(self.num_shards))

    def process(self, item):
        name, index = item
        split = self.splits[name]
        with open(str(split.paths[index]), "rb") as f:
            image = f.read()
        shard = records_lib.shard_of(name, index, self.num_shards[name])
        serialized = records_lib.example_bytes(split, index, image)
        # The "image" feature is serialized first (keys in order), so its bytes are the
        # first match, a few header bytes in.
        position = serialized.find(image)
        if not 0 <= position < 64:
            raise RuntimeError(f"{split.paths[index]}: image bytes not found in its record.")
        yield (name, shard), (index, serialized, position, len(image))


class _WriteShard(beam.DoFn):
    """Writes one shard, its records sorted by index, and its summary beside it:
    `<shard>.json` (items, bytes, SHA-256) and `<shard>.npy` (index, offset and length
    of the item's image bytes in the shard)."""

    def __init__(self, folder: str, num_shards: dict[str, int]):
        self.folder = folder
        self.num_shards = num_shards

    def process(self, keyed):
        import tensorflow as tf  # pylint: disable=g-import-not-at-top

        (name, shard), items = keyed
        items = sorted(items)
        file_name = records_lib.shard_file_name(name, shard, self.num_shards[name])
        path = os.path.join(self.folder, file_name)
        locations = np.empty((len(items), 3), np.int64)
        offset = 0
        with tf.io.TFRecordWriter(path) as writer:
            for row, (index, serialized, position, length) in enumerate(items):
                writer.write(serialized)
                locations[row] = (
                    index,
                    offset + records_lib.RECORD_HEADER_BYTES + position,
                    length,
                )
                offset += len(serialized) + records_lib.RECORD_FRAMING_BYTES
        np.save(f"{path}.npy", locations)
        summary = {
            "file": file_name,
            "shard": shard,
            "num_items": len(items),
            "num_bytes": os.path.getsize(path),
            "sha256": records_lib.file_sha256(path),
        }
        with open(f"{path}.json", "w") as f:
            json.dump(summary, f)
        yield summary


def _index_ranges(sizes: dict[str, int]) -> list[tuple[str, int, int]]:
    return [
        (name, start, min(start + _RANGE, size))
        for name, size in sorted(sizes.items())
        for start in range(0, size, _RANGE)
    ]


def _expand(item: tuple[str, int, int]) -> Iterable[tuple[str, int]]:
    name, start, stop = item
    for index in range(start, stop):
        yield name, index


def _split_entry(folder: str, split, num_shards: int) -> dict:
    """Gathers a split's shard summaries into its manifest entry and locations file."""
    prefix = f"{split.name}-"
    summaries = []
    for entry in sorted(os.listdir(folder)):
        if entry.startswith(prefix) and entry.endswith(".tfrecord.json"):
            with open(os.path.join(folder, entry)) as f:
                summaries.append(json.load(f))
    summaries.sort(key=lambda s: s["shard"])
    locations = np.full((len(split), 3), -1, np.int64)
    for number, summary in enumerate(summaries):
        shard_path = os.path.join(folder, summary["file"])
        rows = np.load(f"{shard_path}.npy")
        locations[rows[:, 0]] = np.column_stack([np.full(len(rows), number), rows[:, 1:]])
        os.remove(f"{shard_path}.npy")
        os.remove(f"{shard_path}.json")
    missing = np.flatnonzero(locations[:, 0] < 0)
    if missing.size or sum(s["num_items"] for s in summaries) != len(split):
        raise RuntimeError(
            f"split {split.name!r}: the shards hold {sum(s['num_items'] for s in summaries)} "
            f"records for {len(split)} items (item {missing[:1].tolist()} missing)."
        )
    locations_file = f"{split.name}-locations.npy"
    np.save(os.path.join(folder, locations_file), locations)
    return {
        "num_items": len(split),
        "num_labels": split.num_classes,
        "num_tags": split.num_tags,
        "label_names": list(split.label_names),
        "tag_names": list(split.tag_names),
        "targets_sha256": records_lib.targets_sha256(split),
        "num_shards": num_shards,
        "shards": [
            {k: s[k] for k in ("file", "num_items", "num_bytes", "sha256")} for s in summaries
        ],
        "locations": {
            "file": locations_file,
            "sha256": records_lib.file_sha256(os.path.join(folder, locations_file)),
        },
    }


def _check_destination(output_dir: str) -> None:
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        if not os.path.isfile(os.path.join(output_dir, records_lib.MANIFEST)):
            raise DestinationError(
                f"{output_dir} exists and holds no TFRecord shards (no "
                f"{records_lib.MANIFEST}); writing replaces the whole folder, so choose "
                "another output or empty it."
            )
    elif os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise DestinationError(f"{output_dir} is a file, not a folder.")


def default_num_shards(num_items: int, records_per_shard: int) -> int:
    return max(1, math.ceil(num_items / records_per_shard))


def write_tfrecords(
    output_dir: str,
    *,
    dataset: str,
    data_dir: str,
    dataset_options: dict | None = None,
    splits: Sequence[str] | None = None,
    records_per_shard: int = 1000,
    pipeline_args: Sequence[str] = (),
    progress: Callable[[str], None] = lambda line: None,
) -> dict:
    """Writes the splits of a registered dataset as TFRecord shards with a manifest.

    Args:
        output_dir: the shards folder (created, or replaced when it holds shards).
        dataset, data_dir, dataset_options: the dataset, as `datasets.get_dataset`
            takes it.
        splits: the splits to write (default: all of the dataset's).
        records_per_shard: the mean number of records per shard; each split gets
            ceil(N / records_per_shard) shards.
        pipeline_args: Beam pipeline options (`--runner`, `--direct_num_workers`, ...),
            read by `runner.pipeline_options` (the DirectRunner runs as Beam's
            FnApiRunner; an unknown option is an error).
        progress: called with a line per stage.

    Returns:
        The manifest.

    Raises:
        file_lock.LockedError: another process writes this output.
        DestinationError: the output is a file or a folder of something else.
        ValueError: a bad split name or pipeline option; the dataset's own errors.
    """
    output_dir = os.path.abspath(output_dir)
    _check_destination(output_dir)  # before any work (again under the lock)
    options = runner.pipeline_options(list(pipeline_args))
    source = {
        "dataset": dataset,
        "data_dir": os.path.abspath(data_dir),
        "options": dict(dataset_options or {}),
    }
    loaded = datasets.get_dataset(dataset, source["data_dir"], **source["options"])
    names = list(splits or loaded.splits)
    unknown = [name for name in names if name not in loaded.splits]
    if unknown:
        raise ValueError(
            f"dataset {dataset!r} has no split {unknown[0]!r}; splits: {', '.join(loaded.splits)}."
        )
    split_data = {name: loaded.split(name) for name in names}
    num_shards = {
        name: default_num_shards(len(split), records_per_shard)
        for name, split in split_data.items()
    }
    progress(
        "splits: "
        + ", ".join(f"{n} {len(s)} items in {num_shards[n]} shards" for n, s in split_data.items())
    )
    os.makedirs(os.path.dirname(output_dir), exist_ok=True)
    with file_lock.exclusive(output_dir, "TFRecord shards", folder=False):
        _check_destination(output_dir)
        atomic_files.remove_leftover_folders(output_dir)
        building = atomic_files.building_folder(output_dir)
        try:
            _run_pipeline(building, source, split_data, num_shards, options)
            progress("pipeline done; checking the shards and writing the manifest")
            manifest = {
                "format": records_lib.FORMAT,
                "version": records_lib.VERSION,
                "source": source,
                "fields": records_lib.FIELDS,
                "splits": {n: _split_entry(building, split_data[n], num_shards[n]) for n in names},
            }
            atomic_files.write_json(os.path.join(building, records_lib.MANIFEST), manifest)
            atomic_files.replace_folder(building, output_dir)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    return manifest


def _run_pipeline(folder, source, split_data, num_shards, options) -> None:
    sizes = {name: len(split) for name, split in split_data.items()}
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | "IndexRanges" >> beam.Create(_index_ranges(sizes))
            | "Items" >> beam.FlatMap(_expand)
            | "Spread" >> beam.Reshuffle()
            | "Encode" >> beam.ParDo(_EncodeItems(source, num_shards))
            | "ByShard" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WriteShard(folder, num_shards))
        )
