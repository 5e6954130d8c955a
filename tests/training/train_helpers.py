"""Runs `python -m wsdhash.train` in a subprocess on a tiny built-in dataset."""

import json
import os
import subprocess
import sys

TINY = [
    "--builtin_sizes=160,30,80",
    "--builtin_image_size=32",
    "--image_size=32",
    "--crop_size=28",
    "--validation_size=32",
    "--batch_size=16",
    "--log_every=5",
    "--checkpoint_every=5",
    "--hash_bit=16",
]


def train_command(data_dir, workdir, *extra):
    return [
        sys.executable, "-m", "wsdhash.train",
        f"--data_dir={data_dir}", f"--workdir={workdir}", *TINY, *extra,
    ]  # fmt: skip


def run_train(data_dir, workdir, *extra, timeout=600, check=True):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        train_command(data_dir, workdir, *extra),
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_json(path):
    with open(path) as f:
        return json.load(f)
