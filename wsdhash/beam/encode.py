"""Codes of many images on Apache Beam: the library side of `python -m wsdhash.pipeline
encode`, which writes a codes folder (wsdhash/eval/codes_folder.py).

The pipeline, stage by stage:

    items          (split, id, path, labels): the files a pattern matches (Beam's
                   `MatchFiles`: local paths, gs://, s3://, wherever Beam's filesystems
                   reach; split "database", id = the matched path), or a prepared
                   dataset's query and database lists (id = the image path the dataset
                   gives, labels = its ground truth); then a reshuffle, so that every
                   worker reads files
    read           the file's bytes (`FileSystems.open`); unreadable: a dead letter
    RunInference   the export's `serving_default` on batches of `batch_size` encoded
                   images, keyed by item, one loaded model per worker process
    route          a valid item becomes a row; one the export marks invalid (`valid`
                   False: not a JPEG or PNG, truncated, over its pixel limit, with its
                   `status`), or that fails when its batch is retried item by item,
                   becomes a dead letter
    shard          rows grouped by (split, shard), the shard a stable hash of the id
                   (BLAKE2b, not Python's salted `hash`), so a re-run puts every item in
                   the same shard; each shard sorted by id and written as one .npz
    failed         the dead letters, sorted, as one `failed.jsonl`

Model handler. Beam's own TensorFlow handler (`apache_beam.ml.inference.
tensorflow_inference.TFModelHandlerNumpy`/`...Tensor`) does not fit this export: its
module imports `tensorflow_hub` at import (not a dependency of wsdhash or of Beam's
core), it loads with `tf.keras.models.load_model` (Keras 3 loads only .keras / .h5
files, not a SavedModel of a `tf.Module`), and it calls the model positionally on one
stacked tensor, where the export has no `__call__`, only signatures that take the
keyword `images` (a tf.string batch) and return a dict (`packed_codes`, `valid`,
`status`, ...). So `SavedModelHandler` is a small `ModelHandler` of our own around
`tf.saved_model.load` and `serving_default`, with the same outputs and the same retry of
a batch the model fails as a whole as `wsdhash.index.images.encode_images` (what
`search build --images` runs), so the codes are the same bit for bit.

Where shards go. Workers write the shards into a staging folder: on a local runner
(the default DirectRunner, run on Beam's Python FnApiRunner, in-process or with
`--direct_running_mode=multi_processing`), the temporary folder beside the output;
on a remote one (Dataflow, Flink, Spark) a folder the workers can write (`staging_dir`,
default `<--temp_location>/wsdhash-encode-<random>`), which the driver copies from.
The driver then adds the empty shards that no row hashed to, the codebooks (AQD) and
the dead letters, computes every file's SHA-256, writes the signed manifest last and
renames the folder into place (replacing an older codes folder, never another
folder), all under a lock on the output (wsdhash/file_lock.py). A killed run leaves
only `.NAME.XXXXXXXX.building` (and the lock file), which the next run removes: a
reader sees the old folder or the new one, never a mix.

Defines no flags; the command (wsdhash/commands/pipeline.py) does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from absl import logging
from apache_beam import pvalue
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference
from apache_beam.runners.runner import PipelineState

from wsdhash import atomic_files, file_lock
from wsdhash.eval import codes_folder

ITEMS_PER_SHARD = 100_000
"""Auto sharding (`num_shards=0`): ceil(items / this) shards per split. A shard of
100,000 items with 64-bit codes and 60-character ids is about 25 MB (NumPy stores ids
as 4-byte characters), so a reader holding one shard at a time stays small."""
MAX_SHARDS = 10_000
"""Shards per split at most (also the bound of `--num_shards`)."""

FAILED = "failed"  # the dead letters' tagged output
_STAGING_PREFIX = "wsdhash-encode-"
_SHARD_FILE = re.compile(r"(query|database)-(\d{5})-of-(\d{5})\.npz")


class DestinationError(ValueError):
    """The output cannot be written: a folder that is not a codes folder, or no place
    that a remote runner's workers can write."""


class Item(NamedTuple):
    """One image to encode. labels: its 0/1 ground truth, one byte per class (a
    dataset's splits), or None (a pattern's files)."""

    split: str
    id: str
    path: str
    labels: bytes | None = None


@dataclasses.dataclass(frozen=True)
class ModelLayout:
    """What an export's codes look like in a codes folder.

    scorer: "hamming" (packed binary codes) or "aqd" (WSDHQ's quantization codes, its
        codeword indices, which are also its code bytes, as in the trainer's codes.h5).
    bits: K for binary codes, 8 M for AQD codes (one byte per codebook).
    code_bytes: the width of a row of codes: ceil(bits / 8).
    feature_dim: D of the `embedding` output (AQD queries keep it as `features`).
    codebooks: (M, 256, D) float32 for AQD, else None.
    fingerprint: the export's weights fingerprint, or None.
    """

    scorer: str
    bits: int
    code_bytes: int
    feature_dim: int
    codebooks: np.ndarray | None = None
    fingerprint: str | None = None

    @property
    def code_output(self) -> str:
        return "quantization_codes" if self.scorer == "aqd" else "packed_codes"

    @property
    def outputs(self) -> tuple[str, ...]:
        """The signature outputs a row needs."""
        return ("quantization_codes", "embedding") if self.scorer == "aqd" else ("packed_codes",)

    def keeps_features(self, split: str) -> bool:
        return self.scorer == "aqd" and split == "query"


def model_layout(model, model_dir: str) -> ModelLayout:
    """The layout of a loaded export (`tf.saved_model.load`; `model_dir`: the local
    folder it was loaded from); ValueError naming `model_dir` when it does not take
    images or lacks an output."""
    from wsdhash import cli
    from wsdhash.index.images import check_takes_images, model_index_layout
    from wsdhash.model_fingerprint import export_fingerprint

    try:
        check_takes_images(model, model_dir)
        _, _, codebooks = model_index_layout(model, "auto", model_dir)
    except cli.UsageError as error:
        raise ValueError(str(error)) from None
    outputs = model.signatures["serving_default"].structured_outputs
    needed = {
        "valid",
        "status",
        "embedding",
        "quantization_codes" if codebooks is not None else "packed_codes",
    }
    if not needed <= set(outputs):
        raise ValueError(
            f"{model_dir}: serving_default returns {sorted(outputs)}; it needs "
            f"{sorted(needed)} (export it with `python -m wsdhash.export`)."
        )
    feature_dim = int(outputs["embedding"].shape[-1])
    if codebooks is not None:
        codebooks = np.asarray(codebooks, np.float32)
        bits = 8 * codebooks.shape[0]
        code_bytes = codebooks.shape[0]
        scorer = "aqd"
    else:
        bits, code_bytes, scorer = feature_dim, -(-feature_dim // 8), "hamming"
    return ModelLayout(
        scorer, bits, code_bytes, feature_dim, codebooks, export_fingerprint(model_dir)
    )


def local_model_dir(model_dir: str) -> str:
    """`model_dir` itself on a local disk; a remote one (gs://, s3://) is copied through
    Beam's filesystems into a new local temporary folder, whose path is returned, so
    that TensorFlow loads it without a filesystem plugin of its own for the scheme."""
    if _is_local(model_dir):
        return model_dir
    root = model_dir.rstrip("/") + "/"
    [matched] = FileSystems.match([root + "**"])
    if not matched.metadata_list:
        raise FileNotFoundError(f"{model_dir} holds no files.")
    local = tempfile.mkdtemp(prefix="wsdhash-model-")
    for metadata in matched.metadata_list:
        relative = metadata.path[len(root) :]
        if not relative or relative.endswith("/"):
            continue
        target = os.path.join(local, *relative.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with FileSystems.open(metadata.path) as source, open(target, "wb") as f:
            shutil.copyfileobj(source, f)
    return local


def stable_shard(item_id: str, num_shards: int) -> int:
    """The shard of an id: the same on every worker and in every run."""
    digest = hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_shards


def auto_num_shards(num_items: int) -> int:
    """ceil(num_items / ITEMS_PER_SHARD), at least 1 and at most MAX_SHARDS."""
    return min(MAX_SHARDS, max(1, math.ceil(num_items / ITEMS_PER_SHARD)))


def dataset_items(splits: dict) -> list[Item]:
    """The items of a dataset's splits ({"query": SplitData, ...}); ValueError when a
    split lists an image twice (a codes folder holds an id once per split)."""
    items = []
    for name, data in splits.items():
        paths = [str(path) for path in data.paths]
        if len(set(paths)) != len(paths):
            seen, twice = set(), None
            for path in paths:
                twice = path if path in seen else twice
                seen.add(path)
            raise ValueError(f"split {name} lists {twice} more than once.")
        labels = np.asarray(data.labels, np.uint8)
        items.extend(
            Item(name, path, path, row.tobytes()) for path, row in zip(paths, labels, strict=True)
        )
    return items


# --- The model call -------------------------------------------------------------------


def _status_reason(status: int) -> str:
    from wsdhash.data.image_header import STATUS_NAMES  # only for an invalid item

    return STATUS_NAMES.get(int(status), "not a valid JPEG or PNG image")


def _call(serve, data: Sequence[bytes], outputs: Sequence[str]) -> list:
    import tensorflow as tf

    served = serve(images=tf.constant(list(data)))
    valid = np.asarray(served["valid"].numpy(), bool)
    status = served["status"].numpy() if "status" in served else np.ones(len(data))
    values = {key: served[key].numpy() for key in outputs}
    results = []
    for i, ok in enumerate(valid):
        if ok:
            results.append((None, {key: values[key][i] for key in outputs}))
        else:
            results.append((_status_reason(status[i]), {}))
    return results


def serve_batch(serve, data: Sequence[bytes], outputs: Sequence[str]) -> list:
    """One (reason, rows) per encoded image: reason None and {output: row} for a valid
    one, else why it is invalid and {}. A batch the model fails as a whole (an export
    without per-item validity, on one bad file) is retried item by item, as
    `wsdhash.index.images.encode_images` does, with the same reasons."""
    import tensorflow as tf

    errors = (tf.errors.InvalidArgumentError, tf.errors.UnknownError)
    try:
        return _call(serve, data, outputs)
    except errors:
        results = []
        for item in data:
            try:
                results.extend(_call(serve, [item], outputs))
            except errors as error:
                message = " ".join(str(getattr(error, "message", error)).split())
                results.append((f"the model cannot decode it ({message[:200]})", {}))
        return results


class SavedModelHandler(ModelHandler):
    """RunInference's handler for a wsdhash export (module doc): encoded images in, one
    `serve_batch` result out per image. Batches of exactly `batch_size` (fewer at the
    end of a bundle); one model per worker process, shared by its threads
    (RunInference's default)."""

    def __init__(self, model_dir: str, outputs: Sequence[str], batch_size: int):
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size)
        self.model_dir = model_dir
        self.outputs = tuple(outputs)

    def load_model(self):
        import tensorflow as tf

        return tf.saved_model.load(local_model_dir(self.model_dir))

    def run_inference(self, batch, model, inference_args=None):
        del inference_args
        return serve_batch(model.signatures["serving_default"], batch, self.outputs)

    def get_num_bytes(self, batch) -> int:
        return sum(len(data) for data in batch)

    def get_metrics_namespace(self) -> str:
        return "wsdhash_encode"


# --- Pipeline steps (module-level, so that Beam pickles them by reference) --------------


def _failure(item: Item, reason: str) -> dict:
    return {"split": item.split, "id": item.id, "path": item.path, "reason": reason}


def matched_item(metadata) -> Item:
    """The item of a file `MatchFiles` found (its path is its id)."""
    return Item("database", metadata.path, metadata.path)


def read_image(item: Item):
    """(item, the file's bytes); a dead letter when it cannot be read."""
    try:
        with FileSystems.open(item.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            data = f.read()
    except Exception as error:  # noqa: BLE001 (OSError, BeamIOError, a remote store's)
        reason = getattr(error, "strerror", None) or " ".join(str(error).split())[:200]
        yield pvalue.TaggedOutput(FAILED, _failure(item, f"cannot be read ({reason})"))
        return
    yield item, data


def route(element, layout: ModelLayout):
    """A model result as a (split, row) or a dead letter. A row is (id, code bytes,
    feature bytes or None, labels or None), all bytes, so it travels cheaply."""
    item, (reason, values) = element
    if reason is not None:
        yield pvalue.TaggedOutput(FAILED, _failure(item, reason))
        return
    codes = np.asarray(values[layout.code_output], np.uint8).tobytes()
    features = None
    if layout.keeps_features(item.split):
        features = np.asarray(values["embedding"], np.float32).tobytes()
    yield item.split, (item.id, codes, features, item.labels)


def assign_shard(element, num_shards: int, counts: dict):
    """((split, shard, shards of the split), row); `num_shards` 0: auto from the
    split's item count."""
    split, row = element
    count = num_shards or auto_num_shards(counts.get(split, 0))
    return (split, stable_shard(row[0], count), count), row


def shard_arrays(rows: Iterable, layout: ModelLayout, split: str) -> dict[str, np.ndarray]:
    """A shard's arrays (codes_folder's layout) from its rows, sorted by id."""
    rows = sorted(rows, key=lambda row: row[0])
    ids = [row[0] for row in rows]
    for before, after in itertools.pairwise(ids):
        if before == after:
            raise ValueError(f"split {split}: id {before} occurs twice.")
    n = len(rows)
    arrays = {
        "ids": np.array(ids, dtype=str) if ids else np.zeros(0, "<U1"),
        "codes": np.frombuffer(b"".join(row[1] for row in rows), np.uint8).reshape(
            n, layout.code_bytes
        ),
    }
    if layout.scorer == "aqd":
        arrays["indices"] = arrays["codes"]  # the codeword indices are the code bytes
    if layout.keeps_features(split):
        features = b"".join(row[2] for row in rows)
        arrays["features"] = np.frombuffer(features, np.float32).reshape(n, layout.feature_dim)
    if rows and rows[0][3] is not None:
        labels = np.frombuffer(b"".join(row[3] for row in rows), np.uint8)
        arrays["labels"] = labels.reshape(n, len(rows[0][3]))
    return arrays


def _write(folder: str, name: str, data: bytes) -> None:
    """Writes a staged file: atomically on a local disk (into a folder that must exist:
    a worker left over from a killed run never recreates a removed one), else through
    Beam's filesystems (an object store writes an object whole)."""
    if _is_local(folder):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder} is gone (its run was stopped).")
        atomic_files.write_bytes(os.path.join(folder, name), data)
        return
    with FileSystems.create(FileSystems.join(folder, name)) as f:
        f.write(data)


def write_shard(element, folder: str, layout: ModelLayout) -> None:
    (split, number, count), rows = element
    arrays = shard_arrays(rows, layout, split)
    _write(folder, codes_folder.shard_name(split, number, count), codes_folder.shard_bytes(arrays))


def failed_lines(failures: Iterable[dict]) -> bytes:
    """failed.jsonl: one JSON object per line, sorted by (split, id, reason)."""
    ordered = sorted(failures, key=lambda f: (f["split"], f["id"], f["reason"]))
    return "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in ordered).encode("utf-8")


def write_failed(element, folder: str) -> None:
    _, failures = element
    _write(folder, codes_folder.FAILED_FILE, failed_lines(failures))


def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


# --- The pipeline -----------------------------------------------------------------------


def build_pipeline(
    pipeline,
    *,
    model_dir: str,
    layout: ModelLayout,
    staging: str,
    images: str | None = None,
    items: Sequence[Item] = (),
    batch_size: int = 64,
    num_shards: int = 0,
) -> None:
    """Adds the encode transforms (module doc) to a `beam.Pipeline`.

    Args:
        pipeline: the pipeline.
        model_dir: the exported SavedModel.
        layout: `model_layout` of it.
        staging: the folder the shards and failed.jsonl are written to.
        images: a file pattern (its matches go to the database split), or
        items: the items of a dataset's splits (`dataset_items`).
        batch_size: images per model call.
        num_shards: shards per split; 0: `auto_num_shards` of the split's items.
    """
    if images:
        listed = (
            pipeline
            | "Match" >> fileio.MatchFiles(images, fileio.EmptyMatchTreatment.ALLOW)
            | "ToItems" >> beam.Map(matched_item)
        )
    else:
        listed = pipeline | "Items" >> beam.Create(list(items))
    spread = listed | "Spread" >> beam.Reshuffle()
    counts = (
        listed
        | "SplitOf" >> beam.Map(lambda item: (item.split, 1))
        | "Count" >> beam.CombinePerKey(sum)
    )
    read = spread | "Read" >> beam.FlatMap(read_image).with_outputs(FAILED, main="read")
    handler = KeyedModelHandler(SavedModelHandler(model_dir, layout.outputs, batch_size))
    encoded = read.read | "Encode" >> RunInference(handler)
    routed = encoded | "Route" >> beam.FlatMap(route, layout).with_outputs(FAILED, main="rows")
    (
        routed.rows
        | "Shard" >> beam.Map(assign_shard, num_shards, beam.pvalue.AsDict(counts))
        | "GroupShards" >> beam.GroupByKey()
        | "WriteShards" >> beam.Map(write_shard, staging, layout)
    )
    (
        (read[FAILED], routed[FAILED])
        | "Failures" >> beam.Flatten()
        | "OneFile" >> beam.Map(lambda failure: (0, failure))
        | "GroupFailures" >> beam.GroupByKey()
        | "WriteFailed" >> beam.Map(write_failed, staging)
    )


# --- The driver -----------------------------------------------------------------------


def check_destination(output: str) -> None:
    """DestinationError unless `output` is absent, an empty folder or a codes folder."""
    if os.path.lexists(output) and not os.path.isdir(output):
        raise DestinationError(f"{output} exists and is not a folder; choose another output.")
    if os.path.isdir(output) and os.listdir(output) and not codes_folder.is_codes_folder(output):
        raise DestinationError(
            f"{output} exists and is not a codes folder (no {codes_folder.MANIFEST}); encode "
            "replaces the whole folder, so choose another output or empty it."
        )


def _collect_staged(staging: str, building: str) -> None:
    """Copies the staged shards and failed.jsonl of a remote staging folder into the
    local `building` folder, then removes the staging folder."""
    [matched] = FileSystems.match([FileSystems.join(staging, "*")])
    for metadata in matched.metadata_list:
        name = metadata.path.rstrip("/").rsplit("/", 1)[-1]
        if _SHARD_FILE.fullmatch(name) or name == codes_folder.FAILED_FILE:
            with FileSystems.open(metadata.path) as f:
                atomic_files.write_bytes(os.path.join(building, name), f.read())
    try:
        FileSystems.delete([staging.rstrip("/") + "/"])  # the prefix: every object under it
    except Exception as error:  # noqa: BLE001 (a leftover in a temp location is harmless)
        logging.warning("could not remove the staging folder %s: %s", staging, error)


def _empty_shard(layout: ModelLayout, split: str, num_classes: int | None) -> bytes:
    arrays = shard_arrays([], layout, split)
    if num_classes is not None:
        arrays["labels"] = np.zeros((0, num_classes), np.uint8)
    return codes_folder.shard_bytes(arrays)


def _shard_entries(
    building: str, splits: Sequence[str], layout: ModelLayout, num_classes: int | None
) -> dict[str, list[dict]]:
    """The manifest's shard entries of each split, after writing the shards that no row
    hashed to (empty), so that a split's files are numbered 0..count-1 without gaps."""
    found = {split: {} for split in splits}
    for name in os.listdir(building):
        match = _SHARD_FILE.fullmatch(name)
        if match and match.group(1) in found:
            found[match.group(1)][int(match.group(2))] = int(match.group(3))
    entries = {}
    for split in splits:
        counts = set(found[split].values())
        if len(counts) > 1:
            raise RuntimeError(f"{building}: {split} shards of several counts {sorted(counts)}.")
        count = counts.pop() if counts else 1
        entries[split] = []
        for number in range(count):
            name = codes_folder.shard_name(split, number, count)
            path = os.path.join(building, name)
            if number not in found[split]:
                atomic_files.write_bytes(path, _empty_shard(layout, split, num_classes))
            with open(path, "rb") as f:
                data = f.read()
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                num_items = len(npz["ids"])
            entries[split].append(
                {"file": name, "num_items": num_items, "sha256": codes_folder.sha256_bytes(data)}
            )
    return entries


def _finish_folder(
    building: str,
    layout: ModelLayout,
    splits: Sequence[str],
    num_classes: int | None,
    metadata: dict,
) -> dict:
    """Empty shards, codebooks, failed.jsonl and, last, the signed manifest."""
    entries = _shard_entries(building, splits, layout, num_classes)
    failed_path = os.path.join(building, codes_folder.FAILED_FILE)
    if not os.path.exists(failed_path):
        atomic_files.write_bytes(failed_path, b"")
    with open(failed_path, "rb") as f:
        failed_data = f.read()
    failed = {
        "file": codes_folder.FAILED_FILE,
        "num_items": failed_data.count(b"\n"),
        "sha256": codes_folder.sha256_bytes(failed_data),
    }
    codebooks = None
    if layout.codebooks is not None:
        data = codes_folder.codebooks_bytes(layout.codebooks)
        codebooks = codes_folder.write_file(building, codes_folder.CODEBOOKS_FILE, data)
    manifest = codes_folder.make_manifest(
        scorer=layout.scorer,
        bits=layout.bits,
        splits=entries,
        failed=failed,
        codebooks=codebooks,
        num_classes=num_classes,
        model_fingerprint=layout.fingerprint,
        metadata=metadata,
    )
    atomic_files.write_json(os.path.join(building, codes_folder.MANIFEST), manifest)
    return manifest


@dataclasses.dataclass
class EncodeJob:
    """What to encode and how (the command's flags; `encode_to_folder` runs it).

    output: the codes folder to write (local).
    model_dir: the exported SavedModel (`python -m wsdhash.export`).
    images: a file pattern, or
    items: a dataset's items (`dataset_items`); num_classes: its label columns.
    batch_size, num_shards: see `build_pipeline`.
    staging_dir: where remote workers write (module doc); None: the local temporary
        folder (local runners) or `<temp_location>/wsdhash-encode-<random>`.
    metadata: more manifest entries (the source, ...).
    """

    output: str
    model_dir: str
    images: str | None = None
    items: Sequence[Item] = ()
    num_classes: int | None = None
    batch_size: int = 64
    num_shards: int = 0
    staging_dir: str | None = None
    metadata: dict = dataclasses.field(default_factory=dict)


def _staging_for(job: EncodeJob, options, building: str) -> str:
    from wsdhash.beam import runner as beam_runner

    if job.staging_dir:
        staging = job.staging_dir.rstrip("/") + "/" + _STAGING_PREFIX + uuid.uuid4().hex[:12]
        if _is_local(staging):
            os.makedirs(staging)
        return staging
    if beam_runner.is_local(options):
        return building
    temp = beam_runner.temp_location(options)
    if not temp:
        raise DestinationError(
            "the runner's workers cannot write the local output folder: pass "
            "--staging_dir=gs://BUCKET/PATH (or --temp_location) for the shards."
        )
    return temp.rstrip("/") + "/" + _STAGING_PREFIX + uuid.uuid4().hex[:12]


def _run_pipeline(job: EncodeJob, layout: ModelLayout, options, staging: str) -> None:
    pipeline = beam.Pipeline(options=options)
    build_pipeline(
        pipeline,
        model_dir=job.model_dir,
        layout=layout,
        staging=staging,
        images=job.images,
        items=job.items,
        batch_size=job.batch_size,
        num_shards=job.num_shards,
    )
    result = pipeline.run()
    state = result.wait_until_finish()
    if state is not None and state != PipelineState.DONE:
        raise RuntimeError(f"the Beam pipeline ended in state {state}.")


def encode_to_folder(
    job: EncodeJob,
    layout: ModelLayout,
    options,
    progress: Callable[[str], None] = lambda line: None,
) -> dict:
    """Runs the pipeline and writes the codes folder `job.output` (module doc).

    Args:
        job: what to encode.
        layout: `model_layout` of the export.
        options: Beam's `PipelineOptions` (wsdhash/beam/runner.py).
        progress: called with a line at each stage.

    Returns:
        The manifest.

    Raises:
        LockedError: another run writes this output.
        DestinationError: the output is a folder that is not a codes folder, or a
            remote runner without a staging folder.
    """
    output = os.path.abspath(job.output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    check_destination(output)
    splits = sorted({item.split for item in job.items}, reverse=True) or ["database"]
    with file_lock.exclusive(output, "codes folder", folder=False):
        check_destination(output)
        atomic_files.remove_leftover_folders(output)
        building = atomic_files.building_folder(output)
        try:
            staging = _staging_for(job, options, building)
            progress(f"running the Beam pipeline (shards staged in {staging})")
            _run_pipeline(job, layout, options, staging)
            if staging != building:
                progress(f"copying the shards from {staging}")
                _collect_staged(staging, building)
                if _is_local(staging):
                    shutil.rmtree(staging, ignore_errors=True)
            manifest = _finish_folder(building, layout, splits, job.num_classes, job.metadata)
            codes_folder.read_manifest(building)  # the reader's own checks, before the rename
            atomic_files.replace_folder(building, output)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    return manifest
