"""Trains several flagfiles in one process, amortising TensorFlow's start-up.

    python flagfile_runner.py SPEC.json
    python flagfile_runner.py --serve   # SPEC dicts on stdin (tests/worker_process.py)

SPEC: {"runs": [{"flagfile": F, "workdir": W, "overrides": [...], "train": true}, ...]}.
For each run it records the flag values the flagfile alone resolves to (no overrides) in
W/flagfile_values.json, then trains `wsdhash.train` with the overrides appended; with
"train": false it only parses the flagfile with the overrides and checks the flags
(`train.validate_flags`).
"""

import json
import os
import sys

import keras
from absl import flags

from wsdhash.commands import train
from wsdhash.methods import METHODS

# The flags recorded: the run's settings and every registered method's options.
RECORDED = (
    "method",
    "hash_bit",
    "head",
    "optimizer",
    "lr",
    "backbone_lr_multiplier",
    "momentum",
    "weight_decay",
    "lr_decay",
    "lr_decay_every",
    "lr_decay_unit",
    "topk",
    "empty",
    "normalization",
    "seed",
    "dataset",
    "data_dir",
    "backbone",
    "weights",
    "image_size",
    "crop_size",
    "augment",
    "batch_size",
    "epochs",
    "sampler",
    "classes_per_batch",
    "images_per_class",
    *(option.flag for name in METHODS.names() for option in METHODS.get(name).options),
)


def main(spec_path):
    with open(spec_path) as f:
        run_spec(json.load(f))


def run_spec(spec: dict) -> None:
    for run in spec["runs"]:
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train", f"--flagfile={run['flagfile']}"])
        values = {name: flags.FLAGS[name].value for name in RECORDED}
        os.makedirs(run["workdir"], exist_ok=True)
        with open(os.path.join(run["workdir"], "flagfile_values.json"), "w") as f:
            json.dump(values, f)
        flags.FLAGS.unparse_flags()
        flags.FLAGS(
            [
                "train",
                f"--flagfile={run['flagfile']}",
                *run["overrides"],
                f"--workdir={run['workdir']}",
            ]
        )
        if not run.get("train", True):
            train.validate_flags()
            continue
        keras.backend.clear_session()
        train.main(["train"])


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from worker_process import serve_requests

        serve_requests(run_spec)
    else:
        main(sys.argv[1])
