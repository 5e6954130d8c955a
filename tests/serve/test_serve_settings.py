"""wsdhash.serve's server settings take effect: TensorFlow's thread pools
(--intra_op_threads, --inter_op_threads, set before any op runs) and uvicorn's HTTP
parser and event loop (--http, --loop; auto: httptools and uvloop when installed)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from absl import flags

from wsdhash import cli
from wsdhash.commands import serve


def _start(served_files, tmp_path, *extra):
    _, _, model_dir, index_dir = served_files
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wsdhash.serve",
            f"--model={model_dir}",
            f"--index={index_dir}",
            "--port=0",
            "--check_images=0",
            f"--log_file={tmp_path / 'serve.log'}",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _settings_line(child) -> str:
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break  # the process ended
            if "uvicorn with" in line:
                return line.strip()
        raise AssertionError(f"no settings line; stderr: {child.stderr.read()[-2000:]}")
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def test_thread_flags_reach_tensorflow_and_the_server_names_its_stack(served_files, tmp_path):
    child = _start(
        served_files,
        tmp_path,
        "--intra_op_threads=1",
        "--inter_op_threads=2",
        "--http=h11",
        "--loop=asyncio",
    )
    line = _settings_line(child)
    assert line == (
        "wsdhash.serve: uvicorn with h11 on asyncio; TensorFlow threads: intra-op 1, inter-op 2"
    )


@pytest.mark.slow  # a second server start-up (70 s on 2 cores); the one above covers the flags
def test_default_threads_are_tensorflows_choice(served_files, tmp_path):
    line = _settings_line(_start(served_files, tmp_path))
    assert line.endswith("TensorFlow threads: intra-op auto, inter-op auto"), line
    http, loop = serve.server_choices("auto", "auto")
    assert f"uvicorn with {http} on {loop};" in line


def test_configure_tensorflow_sets_the_pools_in_a_fresh_process():
    code = (
        "from wsdhash.commands import serve\n"
        "print(serve.configure_tensorflow(1, 3))\n"
        "import tensorflow as tf\n"
        "tf.constant(1.0) + 1.0\n"  # an op runs with these settings
        "print(tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads())\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == ["(1, 3)", "1 3"], result.stdout


def test_negative_threads_and_missing_parsers_are_usage_errors(monkeypatch):
    with pytest.raises(cli.UsageError, match="--intra_op_threads must be 0"):
        serve.configure_tensorflow(-1, 0)
    monkeypatch.setattr(serve, "_installed", lambda module: False)
    assert serve.server_choices("auto", "auto") == ("h11", "asyncio")
    with pytest.raises(cli.UsageError, match="--http=httptools: httptools is not installed"):
        serve.server_choices("httptools", "auto")
    with pytest.raises(cli.UsageError, match="--loop=uvloop: uvloop is not installed"):
        serve.server_choices("auto", "uvloop")
    monkeypatch.setattr(serve, "_installed", lambda module: True)
    assert serve.server_choices("auto", "auto") == ("httptools", "uvloop")
    assert serve.server_choices("h11", "asyncio") == ("h11", "asyncio")


def test_the_flags_are_documented():
    for name in ("intra_op_threads", "inter_op_threads", "http", "loop"):
        assert flags.FLAGS[name].help


@pytest.mark.parametrize(
    "name, value",
    [
        ("workers", 0),
        ("workers", 10_000),
        ("max_queue", 0),
        ("max_uploads", -1),
        ("max_header_bytes", 10),
        ("request_timeout_s", float("nan")),
        ("max_batch", 0),
    ],
)
def test_serving_limits_are_bounded_and_name_their_flag(name, value):
    from wsdhash.service.errors import BOUNDS, Limits

    with pytest.raises(ValueError, match=f"--{name} must be"):
        Limits(**{name: value})
    # Every limit is a flag of wsdhash.serve, with the same default.
    for field in BOUNDS:
        assert flags.FLAGS[field].help and flags.FLAGS[field].default == getattr(Limits(), field)
