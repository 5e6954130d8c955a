"""Distributed jobs on Apache Beam: `python -m wsdhash.pipeline <command>`.

    python -m wsdhash.pipeline encode ...      codes of many images (wsdhash/beam/encode.py)
    python -m wsdhash.pipeline tfrecords ...   a prepared dataset as TFRecord shards
                                               (wsdhash/beam/tfrecords.py)

Flags this module does not define are Beam pipeline options and pass through to
Beam (`--runner`, `--direct_num_workers`, `--direct_running_mode`, and any option of
Dataflow, Flink or Spark).
"""

from __future__ import annotations

from absl import flags

from wsdhash import cli

FLAGS = flags.FLAGS

COMMANDS = ("encode", "tfrecords")

# --- encode flags ---
flags.DEFINE_integer("batch_size", 64, "encode: images per model call.")

# --- tfrecords flags ---


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        raise cli.UsageError(f"usage: python -m wsdhash.pipeline {{{'|'.join(COMMANDS)}}} [flags]")
    raise cli.UsageError(f"wsdhash.pipeline {argv[1]} is not built yet.")


def run():
    cli.run(main, "wsdhash.pipeline")


if __name__ == "__main__":
    run()
