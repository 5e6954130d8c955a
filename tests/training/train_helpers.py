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
        sys.executable,
        "-m",
        "wsdhash.train",
        f"--data_dir={data_dir}",
        f"--workdir={workdir}",
        *TINY,
        *extra,
    ]


def run_train(data_dir, workdir, *extra, check=True):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        train_command(data_dir, workdir, *extra),
        capture_output=True,
        text=True,
        env=env,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_json(path):
    with open(path) as f:
        return json.load(f)


def single_label_lists(images, lists):
    """HashNet-format lists of a built-in dataset in `images`, each item keeping only its
    first label (class-balanced batches need single-label data)."""
    import numpy as np

    from wsdhash.data import list_files

    os.makedirs(lists, exist_ok=True)
    for split, name in (
        ("train", "train.txt"),
        ("query", "test.txt"),
        ("database", "database.txt"),
    ):
        data = list_files.read_wsdhq_split(str(images), str(images), split=split)
        one_hot = np.eye(data.num_classes, dtype=int)[data.labels.argmax(1)]
        lines = [
            f"{os.path.relpath(path, images)} {' '.join(map(str, row))}\n"
            for path, row in zip(data.paths, one_hot, strict=True)
        ]
        with open(os.path.join(lists, name), "w") as f:
            f.write("".join(lines))
