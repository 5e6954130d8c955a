"""`python -m wsdhash.train` end to end: outputs, replay, resume after kill -9, NaN stop,
validation carving. (1 replica vs 2 and resume equality of every method:
tests/methods/test_method_contracts.py.)"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from train_helpers import read_json, run_train, single_label_lists, train_command

from wsdhash.eval import EvalProtocol, HammingScorer, evaluate_retrieval, read_codes_file


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
        HammingScorer(codes.query.codes, codes.database.codes),
        (codes.query.labels, codes.database.labels),
        EvalProtocol(topk=1000),
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
    # The command refuses --hyp2_zeta=nan up front (wsdhash/flag_bounds.py), so the
    # range check is switched off in this process to reach the training loop's guard.
    command = train_command(
        data_dir,
        workdir,
        "--steps=10",
        "--method=hyp2",
        "--hyp2_zeta=nan",
        "--resume_with_changes=steps,hyp2_zeta",
    )
    unchecked = (
        "import runpy, sys; from wsdhash import flag_bounds; "
        "flag_bounds.check = lambda flag_values: None; sys.argv[0] = 'wsdhash.train'; "
        "runpy.run_module('wsdhash.train', run_name='__main__', alter_sys=True)"
    )
    result = subprocess.run(
        [sys.executable, "-c", unchecked, *command[3:]],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode != 0
    assert (
        "NonFiniteLossError: Loss is nan at step 6; stopping (the last good checkpoint"
        in result.stderr
    )
    assert "To fix: lower --lr (now " in result.stderr
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
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 3600  # only a hung run reaches it
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


def test_triplet_with_class_balanced_batches_on_single_label_lists(tmp_path):
    from wsdhash.data.builtin import generate_builtin

    images = tmp_path / "builtin"
    generate_builtin(images, image_size=32, num_train=160, num_query=30, num_database=80)
    lists = tmp_path / "lists"
    single_label_lists(images, lists)
    workdir = tmp_path / "run"
    run_train(
        lists,
        workdir,
        "--dataset=hashnet",
        f"--image_root={images}",
        "--method=triplet",
        "--head=tanh",
        "--sampler=class_balanced",
        "--classes_per_batch=4",
        "--images_per_class=4",
        "--steps=4",
    )
    metrics = read_json(workdir / "metrics.json")
    assert metrics["map_name"].startswith("mAP@all")
    bad = run_train(
        lists,
        tmp_path / "bad",
        "--dataset=hashnet",
        f"--image_root={images}",
        "--sampler=class_balanced",
        "--batch_size=15",
        "--steps=2",
        check=False,
    )
    assert bad.returncode != 0 and "batch_size = classes_per_batch * images_per_class" in bad.stderr


def test_bfloat16_mixed_precision_trains(data_dir, tmp_path):
    run_train(data_dir, tmp_path / "run", "--steps=3", "--mixed_precision=bfloat16")
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert 0.0 <= metrics["map"] <= 1.0
    codes = read_codes_file(tmp_path / "run" / "codes.h5")
    assert codes.query.features.dtype == np.float32


def test_no_validation_keeps_the_final_weights_and_epochs_are_passes(data_dir, tmp_path):
    """--validation_size=0: nothing is selected, and the metrics say so; --epochs=1 is
    one pass over the 160 training items (10 steps of 16), as the log says."""
    workdir = tmp_path / "run"
    result = run_train(
        data_dir, workdir, "--validation_size=0", "--steps=0", "--epochs=1", "--eval_every=0"
    )
    metrics = read_json(workdir / "metrics.json")
    assert metrics["selected_on"] == "final" and metrics["selected_checkpoint"] is None
    assert metrics["steps"] == 10 and "(selected on final)" in result.stdout
    assert "An epoch is 10 steps of 16: one pass over the 160 training items" in result.stderr


def test_a_heldout_validation_database_is_carved_besides_the_same_queries():
    """--validation_database=heldout: the same queries as the default carve, and as many
    more items, none of them trained on, as their database."""
    from wsdhash.data.types import SplitData
    from wsdhash.training.config import carved_count
    from wsdhash.training.trainer import carve_validation

    n = 1000
    split = SplitData(
        "train",
        np.array([f"{i}.png" for i in range(n)]),
        np.eye(2, dtype=np.uint8)[np.arange(n) % 2],
        np.zeros((n, 0)),
    )
    _, queries, _ = carve_validation(split, -1, seed=3)
    train, heldout_queries, database = carve_validation(split, -1, seed=3, database="heldout")
    assert list(heldout_queries.paths) == list(queries.paths)
    assert (len(train), len(queries), len(database)) == (800, 100, 100)
    assert carved_count(n, -1, "heldout") == 200 and carved_count(n, -1, "train") == 100
    parts = [set(train.paths), set(queries.paths), set(database.paths)]
    assert sum(map(len, parts)) == n and len(set.union(*parts)) == n  # disjoint, complete
    with pytest.raises(ValueError, match=r"as many held-out database items\) would leave"):
        carve_validation(split, 300, seed=0, database="heldout")


def test_validation_carve_scales_with_the_split_and_keeps_half(data_dir, tmp_path):
    from wsdhash.data.types import SplitData
    from wsdhash.training.trainer import carve_validation

    def split(n):
        return SplitData(
            "train",
            np.array([f"{i}.png" for i in range(n)]),
            np.eye(2, dtype=np.uint8)[np.arange(n) % 2],
            np.zeros((n, 0)),
        )

    # -1: a tenth of the split, at most 500 (the 530-image split once lost 500 to it).
    train, validation, database = carve_validation(split(530), -1, seed=0)
    assert (len(train), len(validation), database) == (477, 53, None)
    assert len(carve_validation(split(20000), -1, seed=0)[1]) == 500
    assert not set(train.paths) & set(validation.paths)
    assert carve_validation(split(530), 0, seed=0)[1] is None
    with pytest.raises(ValueError, match=r"--validation_size=500 would leave 30 of the 530"):
        carve_validation(split(530), 500, seed=0)
    assert len(carve_validation(split(530), 265, seed=0)[1]) == 265  # exactly half is kept
    result = run_train(data_dir, tmp_path / "r", "--validation_size=100", "--steps=1", check=False)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("wsdhash.train: error: --validation_size=100 would leave 60 of the 160")
    )
