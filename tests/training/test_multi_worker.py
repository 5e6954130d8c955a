"""A real 2-process MultiWorkerMirroredStrategy run on localhost trains and checkpoints."""

import json
import os
import socket
import subprocess

import tensorflow as tf
from train_helpers import read_json, train_command

from wsdhash.data.builtin import generate_builtin


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_and_the_chief_checkpoints(tmp_path):
    data_dir, workdir = tmp_path / "builtin", tmp_path / "run"
    # Generated once up front: two workers must not race to generate it.
    generate_builtin(data_dir, image_size=32, num_train=160, num_query=30, num_database=80)
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="2",
            CUDA_VISIBLE_DEVICES="",
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        command = train_command(data_dir, workdir, "--steps=4", "--strategy=multi_worker")
        processes.append(
            subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    for process in processes:
        # A guard against a collective that never completes, far above any busy
        # machine's time for 4 steps (about 15 s on a quiet one).
        _, stderr = process.communicate(timeout=3600)
        assert process.returncode == 0, stderr[-3000:]

    latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    assert latest is not None and latest.endswith("ckpt-4")
    metrics = read_json(workdir / "metrics.json")
    assert metrics["steps"] == 4 and 0.0 <= metrics["map"] <= 1.0
    # The non-chief worker kept its outputs out of the chief's way.
    assert (workdir / ".worker_1" / "checkpoints").is_dir()
    info = read_json(workdir / "run_info.json")
    assert info["config"]["steps"] == 4
