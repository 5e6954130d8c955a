"""Precomputed backbone features in HDF5, written resumably, read as a dataset.

Layout of `FILE.h5` (`python -m wsdhash.extract` writes it):

    attrs:  format="wsdhash-features", version=1, backbone, weights, seed, image_size,
            crop_size, normalization, ten_crop, dataset, data_dir, dataset_options,
            topk (-1: all), feature_dim, wsdhash_version; with `extract --model`
            also model_format (keras, saved_model, tflite) and, for a SavedModel,
            model_signature and model_output ("" when it has one output)
    /<split>/features  (N, F) float32, chunked by rows
    /<split>/labels    (N, C) uint8       /<split>/tags  (N, T) uint8
    /<split>/paths     (N,) UTF-8 strings /<split>/index (N,) int64: the item's position
                                          in the dataset's split list (file order)
    /<split>.attrs["done"]  rows written so far
    /label_names, /tag_names  (optional) UTF-8 strings

Splits are the groups `train`, `query` and `database` (those extracted). Each distinct
image (by path) is encoded once: a row of an image already written (the training
images again in the database, as most protocols have it) is a copy of that row.

Writing goes to `FILE.h5.partial`, one batch at a time, with `done` updated and the
file flushed after each batch: an interrupted extraction resumes at the first row not
written (after checking that the partial file was made with the same settings and
lists the same items). The finished file is renamed to `FILE.h5` only when every split
is complete, so a reader never sees a half-written file under the final name. The
writer holds `FILE.h5.lock` (wsdhash/file_lock.py; removed when it closes): a second
extraction into the same file fails at once instead of interleaving batches. Free disk
space is checked before the extraction and before every batch (HDF5 can crash the
process on a full disk): `DiskFullError` stops it with the partial file intact and
resumable.

Integrity: numeric datasets carry HDF5's Fletcher-32 filter and string datasets a
SHA-256 attribute (as codes files do, wsdhash/eval/codes_file.py), verified on read:
a flipped byte is an error naming the file and the dataset. Reading also refuses
features with NaN or infinite rows, naming the rows.

`features_dataset` reads it as a `RetrievalDataset` whose splits carry the features
(`SplitData.features`), so `python -m wsdhash.train --backbone=features
--features=FILE.h5` trains any method's head on them.
"""

from __future__ import annotations

import collections
import errno
import os
import shutil
from collections.abc import Callable, Iterable

import h5py
import numpy as np

from wsdhash import file_lock
from wsdhash.data.dataset_spec import DatasetSpec, register
from wsdhash.data.types import DataFormatError, RetrievalDataset, SplitData
from wsdhash.eval.codes_file import create_checked_dataset, read_checked_dataset

FORMAT = "wsdhash-features"
VERSION = 1
SPLITS = ("train", "query", "database")
# Settings that must match for a partial file to be resumed: everything that changes
# the features (the seed initialises --weights=none backbones and generates the
# built-in dataset; dataset_options are the dataset factory's, as JSON).
SETTINGS = (
    "backbone",
    "weights",
    "seed",
    "image_size",
    "crop_size",
    "normalization",
    "ten_crop",
    "dataset",
    "data_dir",
    "dataset_options",
    "feature_dim",
    "model_format",
    "model_signature",
    "model_output",
)
# Rows per write when a stretch of a split only copies rows of images already written.
COPY_BLOCK_ROWS = 1024
# Free space kept beyond a batch's rows, for HDF5's metadata and the rest of the system.
DISK_MARGIN_BYTES = 16 << 20


class PartialFileError(ValueError):
    """An unfinished extraction (`.partial`) that cannot be resumed with these settings."""


class DiskFullError(OSError):
    """Not enough free disk space to go on; the partial file is left resumable."""


def _megabytes(count: int) -> str:
    return f"{count / (1 << 20):,.1f} MiB"


def _strings(values) -> np.ndarray:
    return np.asarray([str(v) for v in values], dtype=h5py.string_dtype("utf-8"))


def _open(path: str, mode: str, what: str) -> h5py.File:
    try:
        return h5py.File(path, mode)
    except OSError as error:
        raise DataFormatError(f"{path}: not a readable HDF5 file ({error}); {what}.") from None


class FeaturesWriter:
    """Writes (or resumes) `path` split by split; `finish()` renames it into place.

    Args:
        path: the final file name.
        settings: the extraction settings, stored as attributes (`SETTINGS` plus
            `topk` and `wsdhash_version`); a partial file made with other settings is
            an error, not silently mixed.
    """

    def __init__(self, path: str, settings: dict):
        self.path, self.partial = path, f"{path}.partial"
        self.settings = settings
        self.file = None
        # Held until close(): another writer of this file gets a LockedError.
        self._lock = file_lock.exclusive(path, "features file", folder=False)
        self._lock.__enter__()
        try:
            self._open(settings)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise

    def _open(self, settings: dict) -> None:
        resume = os.path.exists(self.partial)
        if resume:
            try:
                self.file = _open(self.partial, "a", "delete it to extract from scratch")
            except DataFormatError as error:
                raise PartialFileError(str(error)) from None
            recorded = {k: self.file.attrs.get(k) for k in SETTINGS}
            different = [k for k in SETTINGS if str(recorded[k]) != str(settings.get(k))]
            if self.file.attrs.get("format") != FORMAT or different:
                self.file.close()
                self.file = None
                detail = ", ".join(
                    f"{k}: {recorded[k]} there, {settings.get(k)} now" for k in different
                )
                raise PartialFileError(
                    f"{self.partial}: an unfinished extraction with other settings "
                    f"({detail or 'not a wsdhash features file'}); delete it or rerun "
                    "with the same flags."
                )
        else:
            self.check_free_space(0)
            self.file = h5py.File(self.partial, "w")
            self.file.attrs.update({"format": FORMAT, "version": VERSION, **settings})

    def check_free_space(self, needed_bytes: int) -> None:
        """Raises DiskFullError unless `needed_bytes` (plus a margin) fit on the disk."""
        folder = os.path.dirname(os.path.abspath(self.partial))
        free = shutil.disk_usage(folder).free
        if free < needed_bytes + DISK_MARGIN_BYTES:
            raise DiskFullError(
                f"{self.partial}: {_megabytes(needed_bytes)} still to write (plus a "
                f"{_megabytes(DISK_MARGIN_BYTES)} margin) but {_megabytes(free)} free in "
                f"{folder}; free some space and rerun the same command to continue where it "
                "stopped."
            )

    def remaining_bytes(self, splits: Iterable[SplitData], feature_dim: int) -> int:
        """The feature bytes still to write for `splits`."""
        return sum((len(split) - self.done(split.name)) * feature_dim * 4 for split in splits)

    def done(self, split: str) -> int:
        """Rows of `split` written so far."""
        return int(self.file[split].attrs["done"]) if split in self.file else 0

    def start_split(self, split: SplitData, feature_dim: int) -> int:
        """Creates the split's datasets (once); returns the rows already written."""
        if split.name in self.file:
            paths = self.file[split.name]["paths"].asstr()[:]
            if len(paths) != len(split) or list(paths) != [str(p) for p in split.paths]:
                raise PartialFileError(
                    f"{self.partial}: split {split.name!r} lists other items than the "
                    "dataset now does; delete the partial file."
                )
            return self.done(split.name)
        n = len(split)
        group = self.file.create_group(split.name)
        # Chunks of 256 rows: one chunk per batch write, whole rows per read.
        group.create_dataset(
            "features",
            (n, feature_dim),
            np.float32,
            chunks=(min(max(n, 1), 256), feature_dim),
            fletcher32=bool(n and feature_dim),
        )
        create_checked_dataset(group, "labels", split.labels.astype(np.uint8))
        create_checked_dataset(group, "tags", split.tags.astype(np.uint8))
        create_checked_dataset(group, "paths", _strings(split.paths))
        create_checked_dataset(group, "index", np.arange(n, dtype=np.int64))
        group.attrs["done"] = 0
        if split.label_names and "label_names" not in self.file:
            create_checked_dataset(self.file, "label_names", _strings(split.label_names))
        if split.tag_names and "tag_names" not in self.file:
            create_checked_dataset(self.file, "tag_names", _strings(split.tag_names))
        self.file.flush()
        return 0

    def write_rows(self, split: str, start: int, rows: np.ndarray) -> None:
        """Writes rows `start:start + len(rows)` and records them as done."""
        rows = np.asarray(rows, np.float32)
        # Checked before HDF5 writes: on a full disk it can crash instead of raising.
        self.check_free_space(rows.nbytes)
        group = self.file[split]
        try:
            self._store(group, start, rows)
            # `done` moves only after the rows, and both reach the disk before the next
            # batch; a failed write leaves `done` where it was, so a rerun redoes the batch.
            group.attrs["done"] = start + len(rows)
            self.file.flush()
        except OSError as error:
            if getattr(error, "errno", None) == errno.ENOSPC or "No space" in str(error):
                raise DiskFullError(
                    f"{self.partial}: the disk is full ({error}); free some space and rerun "
                    "the same command to continue where it stopped."
                ) from None
            raise

    @staticmethod
    def _store(group: h5py.Group, start: int, rows: np.ndarray) -> None:
        group["features"][start : start + len(rows)] = rows

    def finish(self) -> str:
        """Checks every split is complete and renames the partial file into place."""
        for name in self.file:
            if name in SPLITS:
                group = self.file[name]
                if group.attrs["done"] != len(group["paths"]):
                    raise ValueError(f"{self.partial}: split {name!r} is not complete.")
        self.file.close()
        os.replace(self.partial, self.path)
        return self.path

    def close(self) -> None:
        try:
            if self.file is not None and self.file.id.valid:
                self.file.close()
        finally:
            if self._lock is not None:
                self._lock.__exit__(None, None, None)
                self._lock = None


def _first_written_rows(writer: FeaturesWriter) -> dict[str, tuple[str, int]]:
    """Image path -> (split, row) of its first row already written, over every split."""
    first = {}
    for name in SPLITS:
        if name in writer.file:
            paths = writer.file[name]["paths"].asstr()[: writer.done(name)]
            for row, path in enumerate(paths):
                first.setdefault(str(path), (name, row))
    return first


def _read_rows(group: h5py.Group, rows: np.ndarray) -> np.ndarray:
    """`group["features"][rows]` for any row order and repeats (h5py wants them sorted
    and distinct)."""
    unique, inverse = np.unique(rows, return_inverse=True)
    return group["features"][unique][inverse]


def extract_split(
    writer: FeaturesWriter,
    split: SplitData,
    encode_batches: Callable[[SplitData], Iterable[np.ndarray]],
    feature_dim: int,
    *,
    max_batches: int | None = None,
    progress: Callable[[Iterable, int, int], Iterable] | None = None,
) -> tuple[bool, int]:
    """Writes a split's features, starting after the rows a previous run wrote.

    Each distinct image is encoded once: a row whose image path was already written
    (in a split extracted before, the database holding the training images as most
    protocols have it, or earlier in this split) is copied from that row, so the two
    rows are equal and the image is not decoded and run through the backbone again.

    Args:
        writer: the open file.
        split: the items, in file order.
        encode_batches: items -> their (b, F) features batch by batch, in order; only
            the rows not written yet, and of those only the first row of each image
            not written elsewhere, are encoded.
        feature_dim: F.
        max_batches: stop after this many blocks of rows (a time-limited job; tests use
            it to interrupt an extraction at a known point). A block is one encoded
            batch with the copied rows before it, or `COPY_BLOCK_ROWS` copied rows.
        progress: `(blocks, rows already done, rows in the split) -> blocks`, e.g. a
            tqdm bar.

    Returns:
        (whether the split is complete, the blocks written).
    """
    position = writer.start_split(split, feature_dim)
    n = len(split)
    encoded_rows, copied = _plan_rows(split, position, _first_written_rows(writer))
    count = 0
    if position < n and max_batches != 0:
        written = _feature_blocks(
            writer, split, feature_dim, position, encode_batches, encoded_rows, copied
        )
        if progress is not None:
            written = progress(written, position, n)
        for block in written:
            writer.write_rows(split.name, position, block)
            position += len(block)
            count += 1
            if max_batches is not None and count >= max_batches:
                break
    return writer.done(split.name) == n, count


def _plan_rows(
    split: SplitData, position: int, first: dict[str, tuple[str, int]]
) -> tuple[list[int], dict[int, tuple[str, int]]]:
    """(rows to encode, row -> the (split, row) it is copied from) of the rows from
    `position` on, given each path's first row already written (`first`, updated)."""
    encoded_rows, copied = [], {}
    for row in range(position, len(split)):
        path = str(split.paths[row])
        if path in first:
            copied[row] = first[path]
        else:
            first[path] = (split.name, row)
            encoded_rows.append(row)
    return encoded_rows, copied


def _feature_blocks(writer, split, feature_dim, position, encode_batches, encoded_rows, copied):
    """The (rows, F) blocks of the split from `position` on: each encoded batch with the
    copied rows before it, then blocks of `COPY_BLOCK_ROWS` copied rows. Nothing is
    encoded before the first block is asked for."""
    n = len(split)
    batches = iter(())
    if encoded_rows:
        batches = iter(encode_batches(split.take(np.asarray(encoded_rows, np.int64))))
    start, done_encoded = position, 0
    while start < n:
        block_encoded = []
        if done_encoded < len(encoded_rows):
            batch = np.asarray(next(batches), np.float32)
            block_encoded = encoded_rows[done_encoded : done_encoded + len(batch)]
            done_encoded += len(batch)
            # Up to this batch's last row; the copies after it go with the next batch.
            end = block_encoded[-1] + 1 if done_encoded < len(encoded_rows) else n
        else:
            end = min(n, start + COPY_BLOCK_ROWS)
        block = np.empty((end - start, feature_dim), np.float32)
        if block_encoded:
            block[np.asarray(block_encoded) - start] = batch
        _copy_rows(block, start, end, copied, split.name, writer)
        yield block
        start = end


def _copy_rows(block, start, end, copied, split_name, writer) -> None:
    """Fills the copied rows of `block` (rows start..end of split `split_name`): from a
    row written before (read back from the file) or from an encoded row of this block
    (its first occurrence in this split)."""
    by_split = collections.defaultdict(lambda: ([], []))  # name -> (rows, sources)
    for row in range(start, end):
        if row in copied:
            name, source = copied[row]
            by_split[name][0].append(row)
            by_split[name][1].append(source)
    for name, (rows, source_rows) in by_split.items():
        rows, source_rows = np.asarray(rows), np.asarray(source_rows)
        in_block = (source_rows >= start) if name == split_name else None
        if in_block is not None and in_block.any():
            block[rows[in_block] - start] = block[source_rows[in_block] - start]
            rows, source_rows = rows[~in_block], source_rows[~in_block]
        if len(rows):
            block[rows - start] = _read_rows(writer.file[name], source_rows)


def extract_dataset(
    path: str,
    dataset,
    splits: Iterable[str],
    encode_batches: Callable[[SplitData], Iterable[np.ndarray]],
    settings: dict,
    *,
    max_batches: int | None = None,
    progress: Callable[[str], Callable[[Iterable, int, int], Iterable]] | None = None,
) -> str | None:
    """Writes (or finishes) the features file of `dataset`'s `splits`.

    Args:
        path: the final file; work goes to `path + ".partial"` until every split is done.
        dataset: a `RetrievalDataset`.
        splits: split names, written in this order.
        encode_batches: items -> their (b, F) features batch by batch, in order.
        settings: attributes (`FeaturesWriter`); `settings["feature_dim"]` is F.
        max_batches: stop after this many batches in all (None: run to the end).
        progress: split name -> the `progress` argument of `extract_split`.

    Returns:
        `path` when the file is finished, None when `max_batches` stopped it first.
    """
    writer = FeaturesWriter(path, settings)
    try:
        splits = list(splits)
        writer.check_free_space(
            writer.remaining_bytes(
                (dataset.split(name) for name in splits), int(settings["feature_dim"])
            )
        )
        for name in splits:
            complete, written = extract_split(
                writer,
                dataset.split(name),
                encode_batches,
                int(settings["feature_dim"]),
                max_batches=max_batches,
                progress=progress(name) if progress else None,
            )
            if max_batches is not None:
                max_batches -= written
            if not complete:
                return None
        return writer.finish()
    finally:
        writer.close()


def _check_attributes(path: str, attrs: dict) -> dict:
    if attrs.get("format") != FORMAT:
        raise DataFormatError(
            f"{path}: not a wsdhash features file (no format={FORMAT!r} attribute); "
            "make one with `python -m wsdhash.extract`."
        )
    if attrs.get("version") != VERSION:
        raise DataFormatError(
            f"{path}: features format version {attrs.get('version')}; this wsdhash reads "
            f"{VERSION}. Extract again."
        )
    return attrs


def _open_finished(path: str) -> h5py.File:
    if not os.path.exists(path):
        unfinished = os.path.exists(f"{path}.partial")
        hint = (
            " (an unfinished extraction is in .partial: rerun `python -m wsdhash.extract` "
            "with the same flags to finish it)"
            if unfinished
            else ""
        )
        raise FileNotFoundError(f"Features file not found: {path}{hint}")
    return _open(path, "r", "a truncated or foreign file? Extract it again")


def read_attributes(path: str) -> dict:
    """The attributes of a features file (cheap: reads no features); checks the format."""
    with _open_finished(path) as file:
        return _check_attributes(path, dict(file.attrs))


def read_split(path: str, name: str) -> SplitData:
    """One split of a features file, with its features (N, F) in memory."""
    with _open_finished(path) as file:
        attrs = _check_attributes(path, dict(file.attrs))
        if name not in file:
            present = [s for s in SPLITS if s in file]
            raise DataFormatError(f"{path}: no {name!r} split (it holds {present}).")
        group = file[name]

        def read(parent, key, strings=False):
            try:
                return read_checked_dataset(parent[key], path, strings=strings)
            except ValueError as error:  # corrupted: names the file and the dataset
                raise DataFormatError(str(error)) from None

        try:
            n = len(group["paths"])
            if group.attrs["done"] != n:
                raise DataFormatError(
                    f"{path}: split {name!r} is incomplete ({group.attrs['done']}/{n} rows)."
                )
            features = read(group, "features")
            labels, tags = read(group, "labels"), read(group, "tags")
            paths = np.asarray(read(group, "paths", strings=True)).astype(str)
            label_names = (
                tuple(read(file, "label_names", strings=True)) if "label_names" in file else ()
            )
            tag_names = tuple(read(file, "tag_names", strings=True)) if "tag_names" in file else ()
        except (KeyError, OSError) as error:
            raise DataFormatError(f"{path}: split {name!r} is damaged ({error}).") from None
    if features.shape != (n, int(attrs["feature_dim"])):
        raise DataFormatError(
            f"{path}: split {name!r} features have shape {features.shape}, expected "
            f"({n}, {attrs['feature_dim']})."
        )
    bad_rows = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if len(bad_rows):
        shown = ", ".join(f"{row} ({paths[row]})" for row in bad_rows[:5])
        more = f" and {len(bad_rows) - 5} more" if len(bad_rows) > 5 else ""
        raise DataFormatError(
            f"{path}: split {name!r} has NaN or infinite features in {len(bad_rows)} of {n} "
            f"rows: {shown}{more}; check those images and the backbone, then extract again."
        )
    return SplitData(
        name=name,
        paths=paths,
        labels=labels,
        tags=tags,
        label_names=label_names if labels.shape[1] == len(label_names) else (),
        tag_names=tag_names if tags.shape[1] == len(tag_names) else (),
        features=features,
    )


def sample_distinct_rows(path: str, *, max_rows: int = 1000, seed: int = 0) -> np.ndarray:
    """Up to `max_rows` feature rows of distinct images (by path; an image in several
    splits counts once) of a finished features file, drawn at random (seeded), (n, F)."""
    with _open_finished(path) as file:
        _check_attributes(path, dict(file.attrs))
        first = {}
        for name in SPLITS:
            if name in file:
                for row, item in enumerate(file[name]["paths"].asstr()[:]):
                    first.setdefault(item, (name, row))
        sources = list(first.values())
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.permutation(len(sources))[:max_rows])
        by_split = collections.defaultdict(list)
        for i in picked:
            name, row = sources[i]
            by_split[name].append(row)
        rows = [_read_rows(file[name], np.asarray(r)) for name, r in by_split.items()]
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(rows).astype(np.float32)


def split_names(path: str) -> tuple[str, ...]:
    """The splits a features file holds, in `SPLITS` order."""
    with _open_finished(path) as file:
        _check_attributes(path, dict(file.attrs))
        return tuple(s for s in SPLITS if s in file)


def read_features_file(path: str) -> tuple[dict, dict[str, SplitData]]:
    """(attributes, split name -> SplitData with features) of a finished features file."""
    return read_attributes(path), {name: read_split(path, name) for name in split_names(path)}


def features_dataset(data_dir: str, *, image_root=None, check_files=True):
    """The registered `features` dataset: `data_dir` is the features file (module doc).

    Splits are read when first asked for, then kept: the database split of a large
    dataset is only read for the final evaluation.
    """
    del image_root, check_files  # nothing to read but the file

    attrs = read_attributes(data_dir)
    loaded = {}

    def load_split(name: str) -> SplitData:
        if name not in loaded:
            loaded[name] = read_split(data_dir, name)
        return loaded[name]

    topk = int(attrs.get("topk", -1))
    return RetrievalDataset(
        name="features",
        load_split=load_split,
        splits=split_names(data_dir),
        topk=None if topk < 0 else topk,
        image_size=1,
        crop_size=1,
        image_files=False,
    )


# Precomputed backbone features (`python -m wsdhash.extract`); data_dir is the .h5 file.
register(DatasetSpec("features", features_dataset, image_root=False))
