"""`python -m wsdhash.train` end to end: outputs, replay, resume after kill -9, NaN stop,
and 1 replica vs 2 replicas on two logical CPUs."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf
from train_helpers import read_json, run_train, single_label_lists, train_command

from wsdhash.eval import evaluate_retrieval, read_codes_file


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("builtin"))


def test_train_writes_codes_metrics_logs_and_replayable_flags(data_dir, tmp_path):
    workdir = tmp_path / "run"
    result = run_train(data_dir, workdir, "--steps=10", "--method=orthohash")
    assert "mAP@1000[ties=index,empty=zero]" in result.stdout

    metrics = read_json(workdir / "metrics.json")
    codes = read_codes_file(workdir / "codes.h5")
    assert codes.bits == 16 and codes.query.codes.shape == (30, 2)
    assert codes.query.features.shape == (30, 16)
    again = evaluate_retrieval(
        codes.query.labels,
        codes.database.labels,
        query_codes=codes.query.codes,
        database_codes=codes.database.codes,
        topk=1000,
    )
    assert again.map == pytest.approx(metrics["map"], abs=1e-12)
    assert metrics["selected_on"] == "validation" and metrics["selected_checkpoint"]

    info = read_json(workdir / "run_info.json")
    assert info["config"]["steps"] == 10 and info["packages"]["tensorflow"] == tf.__version__
    assert "git_commit" in info
    assert any(name.startswith("events.") for name in os.listdir(workdir / "logs"))

    flags_text = (workdir / "flags.txt").read_text()
    assert "--steps=10" in flags_text and "--method=orthohash" in flags_text
    replay = tmp_path / "replay"
    run_train(data_dir, replay, f"--flagfile={workdir / 'flags.txt'}", f"--workdir={replay}")
    # Same flags, same seed, same machine: the same codes.
    np.testing.assert_array_equal(
        read_codes_file(replay / "codes.h5").query.codes, codes.query.codes
    )


def test_select_on_test_is_labelled(data_dir, tmp_path):
    run_train(data_dir, tmp_path / "run", "--steps=5", "--select_on=test", "--method=hyp2")
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["selected_on"] == "test"
    assert "selected on the test queries" in metrics["note"]


def test_bad_flags_give_clear_errors(data_dir, tmp_path):
    result = run_train(data_dir, tmp_path / "r", "--steps=2", "--topk=-3", check=False)
    assert result.returncode != 0 and "--topk must be a positive integer" in result.stderr
    result = run_train(data_dir, tmp_path / "r", "--steps=2", "--method=nope", check=False)
    assert result.returncode == 2 and "--method=nope: value should be one of" in result.stderr


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path):
    workdir = tmp_path / "run"
    run_train(data_dir, workdir, "--steps=5", "--method=hyp2")
    # Resume the run for 5 more steps with a NaN threshold: the first new step is NaN.
    result = run_train(
        data_dir, workdir, "--steps=10", "--method=hyp2", "--hyp2_zeta=nan",
        "--resume_with_changes=steps,hyp2_zeta", check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "NonFiniteLossError: Loss is nan at step 6; stopping" in result.stderr
    latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    assert latest is not None and latest.endswith("ckpt-5")
    reader = tf.train.load_checkpoint(latest)
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.isfinite(value).all(), name


def test_resume_after_kill_matches_an_uninterrupted_run(data_dir, tmp_path):
    extra = ["--steps=30", "--deterministic", "--method=orthohash"]
    run_train(data_dir, tmp_path / "full", *extra)
    expected = read_json(tmp_path / "full" / "metrics.json")

    workdir = tmp_path / "interrupted"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    process = subprocess.Popen(
        train_command(data_dir, workdir, *extra),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if tf.train.latest_checkpoint(str(workdir / "checkpoints")) and (
            tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith(
                ("ckpt-10", "ckpt-15")
            )
        ):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (workdir / "metrics.json").exists()

    result = run_train(data_dir, workdir, *extra)
    assert "Resumed from" in result.stderr
    resumed = read_json(workdir / "metrics.json")
    assert resumed["map"] == pytest.approx(expected["map"], abs=1e-9)
    np.testing.assert_allclose(
        read_codes_file(workdir / "codes.h5").query.features,
        read_codes_file(tmp_path / "full" / "codes.h5").query.features,
        atol=1e-5,
    )


@pytest.mark.parametrize("method", ["orthohash", "hyp2", "triplet"])
def test_two_replicas_train_like_one_device(data_dir, tmp_path, method):
    common = ["--steps=4", "--cpu_replicas=2", "--deterministic", f"--method={method}"]
    run_train(data_dir, tmp_path / "one", *common, "--strategy=one_device")
    run_train(data_dir, tmp_path / "two", *common, "--strategy=mirrored")
    one = tf.train.load_checkpoint(
        tf.train.latest_checkpoint(str(tmp_path / "one" / "checkpoints"))
    )
    two = tf.train.load_checkpoint(
        tf.train.latest_checkpoint(str(tmp_path / "two" / "checkpoints"))
    )
    names = [n for n in one.get_variable_to_shape_map() if "model/" in n]
    assert names and set(names) <= set(two.get_variable_to_shape_map())
    for name in names:
        a, b = one.get_tensor(name), two.get_tensor(name)
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)


def test_triplet_with_class_balanced_batches_on_single_label_lists(tmp_path):
    from wsdhash.data.builtin import generate_builtin

    images = tmp_path / "builtin"
    generate_builtin(images, image_size=32, num_train=160, num_query=30, num_database=80)
    lists = tmp_path / "lists"
    single_label_lists(images, lists)
    workdir = tmp_path / "run"
    run_train(
        lists, workdir, "--dataset=hashnet", f"--image_root={images}", "--method=triplet",
        "--head=tanh", "--sampler=class_balanced", "--classes_per_batch=4",
        "--images_per_class=4", "--steps=4",
    )  # fmt: skip
    metrics = read_json(workdir / "metrics.json")
    assert metrics["map_name"].startswith("mAP@all")
    bad = run_train(
        lists, tmp_path / "bad", "--dataset=hashnet", f"--image_root={images}",
        "--sampler=class_balanced", "--batch_size=15", "--steps=2", check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "batch_size = classes_per_batch * images_per_class" in bad.stderr


def test_bfloat16_mixed_precision_trains(data_dir, tmp_path):
    run_train(data_dir, tmp_path / "run", "--steps=3", "--mixed_precision=bfloat16")
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert 0.0 <= metrics["map"] <= 1.0
    codes = read_codes_file(tmp_path / "run" / "codes.h5")
    assert codes.query.features.dtype == np.float32
