"""Input pipeline throughput: 256x256 JPEG files -> decoded, cropped to 224, normalised.

Run by hand: `python bench/input_pipeline.py [--images=2000] [--batch_size=64]`.
Prints images/s for the training pipeline (random crop + flip) and the evaluation
pipeline (centre crop), with and without the in-memory cache. Target: >= 1,000
images/s for the training pipeline on 2 cores.

Then (unless --noshards) it writes the training split as TFRecord shards with the
public command (`python -m wsdhash.pipeline tfrecords`, DirectRunner) and prints the
training pipeline's images/s reading the images from the files, from the shards by
record lookup (`--data_format=tfrecord`: the files' order) and from the shards
streamed (`--data_format=tfrecord_stream`), with the ratio to files. Every file and
shard is in the page cache here (just written), so the ratio measures the CPU cost of
each reader, not the per-file latency of network storage that shards avoid.

Every iterator is deleted (and garbage collected) as soon as its measurement ends, and
nothing that iterates outlives `main`: an infinite iterator left to the interpreter's
shutdown is destroyed with OpenCV decodes (`tf.numpy_function`) still in flight, whose
threads can no longer take the GIL then, and its destructor waits for them forever (one
run in 13 hung so; tensorflow/tensorflow#21277).
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import machine_info  # bench/ is on the path
import numpy as np
import results
import tensorflow as tf
from absl import app, flags

from wsdhash.data import builtin, list_files, pipeline, tfrecords

FLAGS = flags.FLAGS
flags.DEFINE_integer("images", 2000, "Number of 256x256 JPEG images to generate.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("epochs", 2, "Passes timed after one warm-up pass.")
flags.DEFINE_string("workdir", None, "Where the JPEG files go (default: a temp folder).")
flags.DEFINE_bool("shards", True, "Also time reading the images from TFRecord shards.")
flags.DEFINE_integer("rounds", 3, "Shards comparison: interleaved rounds (median).")
flags.DEFINE_bool("base_rows", True, "Time the file pipelines' variants (cache, eval).")


def images_per_second(dataset: tf.data.Dataset, images: int) -> float:
    iterator = iter(dataset)
    try:
        steps = images // FLAGS.batch_size
        for _ in range(steps):  # Warm-up: fills caches, autotunes parallelism.
            next(iterator)
        start = time.perf_counter()
        for _ in range(steps * FLAGS.epochs):
            next(iterator)
        return steps * FLAGS.epochs * FLAGS.batch_size / (time.perf_counter() - start)
    finally:
        # Destroy the (infinite) iterator now, while its in-flight decodes can finish:
        # its destructor cancels the prefetch and parallel-map threads and waits for them.
        del iterator
        gc.collect()


def main(argv):
    del argv
    root = FLAGS.workdir or tempfile.mkdtemp(prefix="wsdhash_bench_")
    info = builtin.generate_builtin(
        root,
        image_size=256,
        image_format="jpg",
        num_train=FLAGS.images,
        num_query=FLAGS.batch_size,
        num_database=FLAGS.batch_size,
    )
    split = list_files.read_wsdhq_split(root, root, split="train", tag_vocab="tag_vocab.txt")
    print(f"machine: {machine_info.describe()}")
    print(f"data: {len(split)} JPEG files, 256x256, from {info.root}")
    rows = []
    variants = (
        (True, False, "torch_imagenet"),
        (True, False, None),
        (True, True, "torch_imagenet"),
        (False, False, "torch_imagenet"),
        (False, False, None),
    )
    for training, cache, normalization in variants if FLAGS.base_rows else ():
        config = pipeline.PipelineConfig(256, 224, normalization=normalization)
        dataset = pipeline.make_dataset(
            split, config, training=training, batch_size=FLAGS.batch_size, cache=cache
        )
        if not training:
            dataset = dataset.repeat()
        rate = images_per_second(dataset, len(split))
        del dataset
        rows.append((("train" if training else "eval"), cache, normalization, rate))
    gc.collect()
    measured = shard_rows(root, split) if FLAGS.shards else []
    if rows:
        print(f"{'pipeline':<10}{'cache':<8}{'output':<24}{'images/s':>10}")
    for name, cache, normalization, rate in rows:
        output = f"float32 {normalization}" if normalization else "uint8 (model normalises)"
        print(f"{name:<10}{cache!s:<8}{output:<24}{rate:>10.0f}")
        results.record("input pipeline", f"{name}, cache={cache}, {output}", rate, "images/s")
    for _, _cache, normalization, rate in rows[:2]:
        verdict = "meets" if rate >= 1000 else "MISSES"
        print(
            f"training, no cache, normalization={normalization}: {rate:.0f} images/s "
            f"({verdict} the 1,000/s target)"
        )
    if measured:
        print_shard_rows(measured)


def write_shards(root: str) -> str:
    """The training split as TFRecord shards, written by the public command."""
    output = os.path.join(root, "shards")
    command = [
        sys.executable,
        "-m",
        "wsdhash.pipeline",
        "tfrecords",
        "--dataset=wsdhq",
        f"--data_dir={root}",
        "--splits=train",
        f"--tfrecords_dir={output}",
        "--runner=DirectRunner",
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    print(f"shards: {output}, written in {time.perf_counter() - started:.1f} s")
    return output


def shard_rows(root: str, split) -> list[tuple[str, float]]:
    """images/s of the training pipeline (float32 output) per source of the images:
    the median of --rounds measurements, the sources interleaved round by round (the
    machine's load drifts; interleaving spreads it over all of them)."""
    shards = write_shards(root)
    _, images = tfrecords.open_split(shards, split)
    rows = np.arange(len(split))
    config = pipeline.PipelineConfig(256, 224)

    def source(name: str) -> dict:
        if name == "tfrecord (lookup)":
            return {"image_reader": images.reader(rows)}
        if name == "tfrecord_stream":
            return {"stream": tfrecords.stream_records(images, split, rows, seed=0)}
        return {}

    names = ("files", "tfrecord (lookup)", "tfrecord_stream")
    rates = {name: [] for name in names}
    for _ in range(FLAGS.rounds):
        for name in names:
            dataset = pipeline.make_dataset(
                split, config, training=True, batch_size=FLAGS.batch_size, **source(name)
            )
            rates[name].append(images_per_second(dataset, len(split)))
            del dataset
            gc.collect()
    images.close()
    return [(name, float(np.median(rates[name]))) for name in names]


def print_shard_rows(measured: list[tuple[str, float]]) -> None:
    files = measured[0][1]
    print(f"\n{'training images from':<22}{'images/s':>10}{'vs files':>10}")
    for name, rate in measured:
        print(f"{name:<22}{rate:>10.0f}{rate / files:>9.2f}x")
        results.record("input pipeline", f"train from {name}", rate, "images/s")


if __name__ == "__main__":
    app.run(main)
