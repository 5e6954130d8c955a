"""Distributed jobs on Apache Beam: `python -m wsdhash.pipeline <command>`.

    python -m wsdhash.pipeline encode ...      codes of many images (wsdhash/beam/encode.py)
    python -m wsdhash.pipeline tfrecords ...   a prepared dataset as TFRecord shards
                                               (wsdhash/beam/tfrecords.py)

Flags this module does not define are Beam pipeline options and pass through to
Beam (`--runner`, `--direct_num_workers`, `--direct_running_mode`, and any option of
Dataflow, Flink or Spark).
"""

from __future__ import annotations

import os
import shutil

from absl import flags

from wsdhash import cli
from wsdhash.commands import flag_groups

FLAGS = flags.FLAGS

COMMANDS = ("encode", "tfrecords")

# --- encode flags ---
flags.DEFINE_integer("batch_size", 64, "encode: images per model call.")
flags.DEFINE_string(
    "images", None, "encode: a file pattern ('photos/**/*.jpg', gs://..., s3://...)."
)
flags.DEFINE_string("model", None, "encode: the exported SavedModel (python -m wsdhash.export).")
flag_groups.define_output("encode: the codes folder to write (replaced atomically).")
flags.DEFINE_integer("num_shards", 0, "encode: shards per split (0: one per 100,000 items).")
flags.DEFINE_string(
    "staging_dir", None, "encode: where remote workers write shards (default: --temp_location)."
)
# Without --images, encode reads a dataset's query and database lists (the same flags
# as tfrecords and wsdhash.train; keep one copy of each when both are defined here).
flag_groups.define_dataset()
flag_groups.define_seed("Built-in dataset: its seed (as wsdhash.train's --seed).")
flags.DEFINE_list("splits", [], "Splits to read (encode default: query,database).")


def _dataset_splits() -> dict:
    """{split: SplitData} of the dataset flags' query and database splits."""
    from wsdhash.data import datasets

    splits = FLAGS.splits or ["query", "database"]
    wrong = [split for split in splits if split not in ("query", "database")]
    if wrong or len(set(splits)) != len(splits):
        raise cli.UsageError(f"--splits: encode writes query and/or database, got {splits}.")
    options = flag_groups.dataset_options()
    try:  # a missing image becomes a dead letter, not an error before the run
        dataset = datasets.get_dataset(FLAGS.dataset, FLAGS.data_dir, check_files=False, **options)
        return {split: dataset.split(split) for split in splits}
    except (OSError, ValueError, KeyError) as error:
        raise cli.UsageError(
            f"--dataset={FLAGS.dataset} --data_dir={FLAGS.data_dir}: {cli.one_line(error)}"
        ) from None


def _encode_job():
    """The EncodeJob of the flags (inputs, output, sharding)."""
    import numpy as np

    from wsdhash.beam import encode

    if not FLAGS.model or not FLAGS.output:
        raise cli.UsageError("encode needs --model=EXPORTED_SAVEDMODEL and --output=FOLDER.")
    try:  # before anything is loaded (checked again under the output's lock)
        encode.check_destination(os.path.abspath(FLAGS.output))
    except encode.DestinationError as error:
        raise cli.UsageError(f"--output={FLAGS.output}: {error}") from None
    job = encode.EncodeJob(
        output=FLAGS.output,
        model_dir=FLAGS.model,
        batch_size=FLAGS.batch_size,
        num_shards=FLAGS.num_shards,
        staging_dir=FLAGS.staging_dir,
        metadata={"model": FLAGS.model if "://" in FLAGS.model else os.path.abspath(FLAGS.model)},
    )
    dataset_flags = [n for n in ("dataset", "data_dir", "image_root", "splits") if FLAGS[n].present]
    if FLAGS.images:
        if dataset_flags:
            raise cli.UsageError(f"encode takes --images or --{dataset_flags[0]}, not both.")
        from apache_beam.io.filesystems import FileSystems

        try:
            [matched] = FileSystems.match([FLAGS.images], limits=[1])
        except Exception as error:  # noqa: BLE001 (BeamIOError, no filesystem for a scheme)
            raise cli.UsageError(f"--images={FLAGS.images}: {cli.one_line(error)}") from None
        if not matched.metadata_list:
            raise cli.UsageError(f"--images={FLAGS.images}: no file matches.")
        job.images = FLAGS.images
        job.metadata["source"] = {"images": FLAGS.images}
        return job
    splits = _dataset_splits()
    classes = {data.labels.shape[1] for data in splits.values()}
    if len(classes) != 1 or not classes.pop():
        raise cli.UsageError(f"--dataset={FLAGS.dataset}: the splits have no common labels.")
    try:
        job.items = encode.dataset_items(splits)
    except ValueError as error:
        raise cli.UsageError(f"--dataset={FLAGS.dataset}: {error}") from None
    job.num_classes = int(next(iter(splits.values())).labels.shape[1])
    job.metadata["source"] = {
        "dataset": FLAGS.dataset,
        "data_dir": os.path.abspath(FLAGS.data_dir),
        "splits": {name: int(np.asarray(data.paths).shape[0]) for name, data in splits.items()},
    }
    return job


def encode_command(beam_args: list[str]) -> None:
    """`encode`: parse, run the pipeline, print what was written."""
    from wsdhash.beam import runner

    log = cli.log_file_path("wsdhash.pipeline")
    runner.log_to_file(log)  # before Beam logs a line
    try:
        options = runner.pipeline_options(beam_args)
    except ValueError as error:
        raise cli.UsageError(str(error)) from None
    job = _encode_job()
    manifest = _run_encode(job, options)
    counts = ", ".join(
        f"{name} {part['num_items']} in {len(part['shards'])} shards"
        for name, part in manifest["splits"].items()
    )
    print(f"encoded: {counts}", flush=True)
    failed = manifest["failed"]["num_items"]
    where = f" (ids, paths and reasons in {job.output}/failed.jsonl)" if failed else ""
    print(f"failed: {failed}{where}", flush=True)
    print(f"codes folder: {job.output}", flush=True)


def _run_encode(job, options) -> dict:
    import tensorflow as tf

    from wsdhash import file_lock
    from wsdhash.beam import encode, runner

    try:
        local = encode.local_model_dir(job.model_dir)  # a gs:// export: copied here
        layout = encode.model_layout(tf.saved_model.load(local), local)
        if local != job.model_dir:
            shutil.rmtree(local, ignore_errors=True)  # loaded: the copy is not needed
    except (OSError, ValueError) as error:
        raise cli.UsageError(f"--model={job.model_dir}: {cli.one_line(error)}") from None
    what = (
        f"{len(job.items)} images of {job.metadata['source'].get('dataset')}"
        if job.items
        else f"the files matching {job.images}"
    )
    kind = "AQD" if layout.scorer == "aqd" else "binary"
    print(
        f"encoding {what} with {job.model_dir} ({kind} codes, {layout.bits} bits) on "
        f"{runner.describe(options)}",
        flush=True,
    )
    try:
        return encode.encode_to_folder(
            job, layout, options, progress=lambda line: print(line, flush=True)
        )
    except (file_lock.LockedError, encode.DestinationError) as error:
        raise cli.UsageError(f"--output={job.output}: {cli.one_line(error)}") from None


# --- tfrecords flags ---
# With the dataset flags above (--dataset, --data_dir, --image_root, --builtin_sizes,
# --builtin_image_size, --seed, --splits; tfrecords' default: every split).
flags.DEFINE_integer("records_per_shard", 1000, "tfrecords: mean records per shard.")
flags.DEFINE_string("tfrecords_dir", None, "tfrecords: the output folder of shards.")


def tfrecords_command(beam_args: list[str]) -> None:
    """`tfrecords`: a dataset's splits as TFRecord shards (wsdhash/beam/tfrecords.py)."""
    from wsdhash import file_lock
    from wsdhash.beam import runner

    if not FLAGS.tfrecords_dir:
        raise cli.UsageError("tfrecords needs --tfrecords_dir=OUTPUT_FOLDER.")
    log = cli.log_file_path("wsdhash.pipeline")
    runner.log_to_file(log)  # before Beam is imported and logs a line
    from wsdhash.beam import tfrecords

    try:
        runner.pipeline_options(beam_args)  # checked before any work
    except ValueError as error:
        raise cli.UsageError(str(error)) from None
    options = flag_groups.dataset_options()
    try:
        manifest = tfrecords.write_tfrecords(
            FLAGS.tfrecords_dir,
            dataset=FLAGS.dataset,
            data_dir=FLAGS.data_dir,
            dataset_options=options,
            splits=FLAGS.splits,
            records_per_shard=FLAGS.records_per_shard,
            pipeline_args=beam_args,
            progress=lambda line: print(line, flush=True),
        )
    except (file_lock.LockedError, tfrecords.DestinationError) as error:
        raise cli.UsageError(f"--tfrecords_dir={FLAGS.tfrecords_dir}: {error}") from None
    for name, entry in manifest["splits"].items():
        print(f"{name}: {entry['num_items']} records in {len(entry['shards'])} shards")
    print(f"shards: {FLAGS.tfrecords_dir}  manifest: {FLAGS.tfrecords_dir}/tfrecords.json")


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        raise cli.UsageError(f"usage: python -m wsdhash.pipeline {{{'|'.join(COMMANDS)}}} [flags]")
    if argv[1] == "encode":
        return encode_command(argv[2:])
    if argv[1] == "tfrecords":
        return tfrecords_command(argv[2:])
    raise cli.UsageError(f"wsdhash.pipeline {argv[1]} is not built yet.")


def run():
    cli.run(main, "wsdhash.pipeline", pass_unknown_flags=True)


if __name__ == "__main__":
    run()
