"""CheckpointKeeper: the selection state lives inside the checkpoints, so a stop between
any two writes resumes with the right best checkpoint; a damaged latest checkpoint is
named and the previous one restores."""

import glob
import logging
import os
from pathlib import Path

import pytest
import tensorflow as tf

from wsdhash.training.checkpoints import CheckpointKeeper, CheckpointRestoreError


def _keeper(directory):
    weight = tf.Variable(0.0)
    return CheckpointKeeper(str(directory), keep=3, weight=weight), weight


def _evaluate(keeper, weight, step, score):
    """What the trainer does at a validation step: save, validate, offer."""
    weight.assign(float(step))
    keeper.save(step)
    keeper.offer_best(step, score, "validation")


def _best_files(directory):
    return sorted(os.path.basename(p) for p in glob.glob(str(directory / "best" / "ckpt-*.index")))


def test_a_stop_after_the_best_copy_keeps_the_new_best(tmp_path):
    keeper, weight = _keeper(tmp_path)
    _evaluate(keeper, weight, 5, 0.5)
    kept = {p: Path(p).read_bytes() for p in glob.glob(str(tmp_path / "best" / "ckpt-5*"))}
    _evaluate(keeper, weight, 10, 0.9)  # then stopped: no later checkpoint records 10
    # As if stopped between writing best/ckpt-10 and deleting best/ckpt-5.
    for path, data in kept.items():
        Path(path).write_bytes(data)
    assert _best_files(tmp_path) == ["ckpt-10.index", "ckpt-5.index"]

    resumed, weight = _keeper(tmp_path)
    assert resumed.restore_latest().endswith("ckpt-10") and weight.numpy() == 10
    assert (resumed.best_step(), resumed.best_score()) == (10, 0.9)
    assert _best_files(tmp_path) == ["ckpt-10.index"]
    assert tf.train.latest_checkpoint(str(tmp_path / "best")).endswith("ckpt-10")
    weight.assign(-1.0)
    assert resumed.restore_best().endswith("ckpt-10") and weight.numpy() == 10
    # Validating step 10 again (the trainer does on resume) changes nothing.
    assert not resumed.offer_best(10, 0.9, "validation")


def test_a_stop_before_the_best_copy_keeps_the_previous_best(tmp_path):
    keeper, weight = _keeper(tmp_path)
    _evaluate(keeper, weight, 5, 0.5)
    weight.assign(10.0)
    keeper.save(10)  # stopped while validating step 10

    resumed, weight = _keeper(tmp_path)
    assert resumed.restore_latest().endswith("ckpt-10")
    assert (resumed.best_step(), resumed.best_score()) == (5, 0.5)
    assert resumed.offer_best(10, 0.7, "validation")  # the resumed validation
    assert _best_files(tmp_path) == ["ckpt-10.index"]
    resumed.restore_best()
    assert weight.numpy() == 10


def test_a_later_checkpoint_records_the_best_and_worse_scores_do_not_replace_it(tmp_path):
    keeper, weight = _keeper(tmp_path)
    _evaluate(keeper, weight, 5, 0.5)
    _evaluate(keeper, weight, 10, 0.4)
    _evaluate(keeper, weight, 15, 0.3)
    resumed, weight = _keeper(tmp_path)
    resumed.restore_latest()
    assert (resumed.best_step(), resumed.best_score()) == (5, 0.5)
    assert resumed.restore_best().endswith(os.path.join("best", "ckpt-5"))
    assert weight.numpy() == 5


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    keeper, weight = _keeper(tmp_path)
    _evaluate(keeper, weight, 5, 0.5)
    _evaluate(keeper, weight, 10, 0.9)
    weight.assign(15.0)
    keeper.save(15)
    (data,) = glob.glob(str(tmp_path / "ckpt-15.data-*"))
    size = os.path.getsize(data)
    with open(data, "r+b") as f:  # same size, other bytes: only the checksums notice
        f.write(b"\x7f" * size)

    resumed, weight = _keeper(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert resumed.restore_latest().endswith("ckpt-10")
    assert weight.numpy() == 10
    assert f"Checkpoint {tmp_path / 'ckpt-15'} does not restore" in caplog.text
    assert os.path.basename(data) in caplog.text
    assert "Resuming from the previous checkpoint" in caplog.text
    # ckpt-10 was written before step 10 was validated; its best copy is adopted.
    assert (resumed.best_step(), resumed.best_score()) == (10, 0.9)


def test_no_checkpoint_that_restores_is_one_error_naming_them(tmp_path):
    keeper, weight = _keeper(tmp_path)
    weight.assign(5.0)
    keeper.save(5)
    for path in glob.glob(str(tmp_path / "ckpt-5.*")):
        with open(path, "wb") as f:
            f.write(b"")
    with pytest.raises(CheckpointRestoreError, match="No checkpoint in .* restores: .*ckpt-5"):
        _keeper(tmp_path)[0].restore_latest()


def test_a_fresh_start_drops_a_best_copy_left_without_latest_checkpoints(tmp_path):
    keeper, weight = _keeper(tmp_path)
    _evaluate(keeper, weight, 5, 0.5)
    for path in glob.glob(str(tmp_path / "ckpt-5.*")) + [str(tmp_path / "checkpoint")]:
        os.remove(path)
    resumed, _ = _keeper(tmp_path)
    assert resumed.restore_latest() is None
    assert resumed.best_step() is None and _best_files(tmp_path) == []
    assert resumed.offer_best(3, 0.1, "validation")  # not compared with the old 0.5


def test_runs_written_before_the_selection_state_resume(tmp_path):
    legacy_weight = tf.Variable(5.0)
    legacy = tf.train.Checkpoint(weight=legacy_weight)
    tf.train.CheckpointManager(legacy, str(tmp_path), max_to_keep=3).save(checkpoint_number=5)
    tf.train.CheckpointManager(legacy, str(tmp_path / "best"), max_to_keep=1).save(
        checkpoint_number=5
    )
    (tmp_path / "best" / "score.json").write_text(
        '{"score": 0.5, "metric": "validation", "step": 5}'
    )
    resumed, weight = _keeper(tmp_path)
    assert resumed.restore_latest().endswith("ckpt-5") and weight.numpy() == 5
    assert (resumed.best_step(), resumed.best_score()) == (5, 0.5)
