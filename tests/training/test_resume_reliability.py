"""Resume and run records: a stop before the best-score record, changed settings, two
trainings on one workdir, a damaged checkpoint, bad images, all-zero labels, and the
training flags' one-line errors. Trainings run in this process (tiny, few steps)."""

import glob
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from absl import flags
from train_helpers import TINY, read_json

from wsdhash import cli, file_lock
from wsdhash.commands import train
from wsdhash.data import datasets
from wsdhash.data.builtin import generate_builtin
from wsdhash.data.preprocessing import CorruptImageError
from wsdhash.methods.base import Method
from wsdhash.training import run_info, trainer
from wsdhash.training.checkpoints import CheckpointKeeper
from wsdhash.training.config import config_from_dict
from wsdhash.training.optimization import OptimizerConfig

FLAGS = flags.FLAGS
SIZES = {"num_train": 96, "num_query": 20, "num_database": 40}
VALIDATION = 16  # validation queries (the test queries are 20)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tiny") / "builtin")
    generate_builtin(path, image_size=32, **SIZES)
    return path


def tiny_config(data_dir, workdir, **overrides):
    values = dict(
        dataset="builtin",
        data_dir=str(data_dir),
        dataset_options=dict(seed=0, image_size=32, **SIZES),
        image_size=32,
        crop_size=28,
        validation_size=VALIDATION,
        batch_size=16,
        bits=16,
        steps=4,
        eval_every=2,
        checkpoint_every=2,
        log_every=2,
        workdir=str(workdir),
    )
    values.update(overrides)
    return config_from_dict(values)  # the flat settings, as run_info.json holds them


def train_in_process(config, **kwargs):
    keras.backend.clear_session()
    return trainer.train(config, **kwargs)


def fake_validation(monkeypatch, scores):
    """Validation mAPs come from `scores` (in call order); test evaluation is real."""
    real = Method.evaluate
    scores = list(scores)

    class Result:
        def __init__(self, value):
            self.map, self.map_name = value, "mAP@1000"

    def evaluate(self, query_features, *args, **kwargs):
        if query_features.shape[0] != VALIDATION:
            return real(self, query_features, *args, **kwargs)
        return Result(scores.pop(0))

    monkeypatch.setattr(Method, "evaluate", evaluate)


class Killed(BaseException):
    """Stands for a kill -9 at a chosen point."""


def test_a_stop_between_the_checkpoint_and_the_best_record_still_selects_the_best(
    data_dir, tmp_path, monkeypatch
):
    config = tiny_config(data_dir, tmp_path / "run")
    fake_validation(monkeypatch, [0.3, 0.6, 0.6])
    offer = CheckpointKeeper.offer_best

    def killed_at_step_4(self, step, score, name):
        if step == 4:
            raise Killed("after checkpoint 4 and its validation, before its best record")
        return offer(self, step, score, name)

    monkeypatch.setattr(CheckpointKeeper, "offer_best", killed_at_step_4)
    with pytest.raises(Killed):
        train_in_process(config)
    monkeypatch.setattr(CheckpointKeeper, "offer_best", offer)

    metrics = train_in_process(config)  # resumed at step 4, which is validated again
    assert metrics["selected_checkpoint"].endswith(os.path.join("best", "ckpt-4"))
    assert metrics["best_selection_score"] == 0.6
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints" / "best")) == [
        "checkpoint",
        "ckpt-4.data-00000-of-00001",
        "ckpt-4.index",
        "score.json",
    ]


def test_an_undecodable_validation_image_keeps_the_last_interval(data_dir, tmp_path):
    lists = tmp_path / "lists"
    shutil.copytree(data_dir, lists)
    config = tiny_config(
        lists, tmp_path / "run", dataset="wsdhq", dataset_options={}, steps=2, eval_every=0
    )
    dataset = datasets.get_dataset("wsdhq", str(lists))
    _, validation, _ = trainer.carve_validation(dataset.split("train"), VALIDATION, 0)
    bad = str(validation.paths[3])
    data = Path(bad).read_bytes()
    Path(bad).write_bytes(data[: len(data) // 2])  # a PNG header, half a body

    with pytest.raises(CorruptImageError) as raised:
        train_in_process(config)
    message = cli.one_line(raised.value)
    latest = os.path.join(str(tmp_path / "run"), "checkpoints", "ckpt-2")
    assert f"Cannot decode image file: {bad};" in message
    assert f"resume from {latest}" in message and "\n" not in str(raised.value)
    assert os.path.exists(latest + ".index")  # written before the final validation

    Path(bad).write_bytes(data)
    metrics = train_in_process(config)
    assert metrics["selected_checkpoint"].endswith(os.path.join("best", "ckpt-2"))


def test_missing_or_non_image_files_stop_the_run_at_start_up(data_dir, tmp_path):
    lists = tmp_path / "lists"
    shutil.copytree(data_dir, lists)
    query = datasets.get_dataset("wsdhq", str(lists)).split("query")
    bad = str(query.paths[0])
    with open(bad, "w") as f:
        f.write("<html>not found</html>")
    config = tiny_config(lists, tmp_path / "run", dataset="wsdhq", dataset_options={})
    with pytest.raises(CorruptImageError, match=f"1 image file.* not an image: {re.escape(bad)};"):
        train_in_process(config)
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_all_zero_training_labels_are_refused(data_dir, tmp_path):
    lists = tmp_path / "lists"
    shutil.copytree(data_dir, lists)
    labels = np.loadtxt(lists / "train_label.txt")
    np.savetxt(lists / "train_label.txt", np.zeros_like(labels), fmt="%d")
    config = tiny_config(lists, tmp_path / "run", dataset="wsdhq", dataset_options={})
    with pytest.raises(
        ValueError,
        match="'wsdhq' .*every item of its training split has all-zero labels.*--supervision=tags",
    ):
        train_in_process(config)


def test_a_damaged_latest_checkpoint_resumes_from_the_previous_one(data_dir, tmp_path, caplog):
    config = tiny_config(data_dir, tmp_path / "run", eval_every=0)
    train_in_process(config)
    (data,) = glob.glob(str(tmp_path / "run" / "checkpoints" / "ckpt-4.data-*"))
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    with caplog.at_level(logging.INFO, logger="absl"):
        metrics = train_in_process(config)
    assert f"{os.path.basename(data)}" in caplog.text and "does not restore" in caplog.text
    assert "Resuming from the previous checkpoint" in caplog.text
    assert "Resumed from" in caplog.text and "ckpt-2 at step 2" in caplog.text
    assert metrics["selected_checkpoint"].endswith(os.path.join("best", "ckpt-4"))


def test_another_training_holding_the_workdir_stops_this_one(data_dir, tmp_path):
    workdir = tmp_path / "run"
    with (
        file_lock.exclusive(str(workdir), "workdir", folder=True),
        pytest.raises(file_lock.LockedError, match="workdir .* is in use"),
    ):
        train_in_process(tiny_config(data_dir, workdir))
    assert not os.path.exists(workdir / "run_info.json")


def test_resume_refuses_other_settings_and_names_them(data_dir, tmp_path):
    workdir = tmp_path / "run"
    stored = tiny_config(data_dir, workdir, optimizer=OptimizerConfig(boundaries=(2,)))
    os.makedirs(workdir / "checkpoints")
    (workdir / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-4"\n')
    run_info.write_run_info(str(workdir), stored)

    def changed(**overrides):
        return tiny_config(data_dir, workdir, optimizer=stored.optimizer, **overrides)

    lr = tiny_config(data_dir, workdir, optimizer=OptimizerConfig(learning_rate=0.02))
    with pytest.raises(run_info.ResumeMismatchError) as raised:
        run_info.check_resume(lr, str(workdir))
    assert [str(c) for c in raised.value.changes] == [
        "optimizer.boundaries: 2 -> ()",
        "optimizer.learning_rate: 0.01 -> 0.02",
    ]
    with pytest.raises(run_info.ResumeMismatchError, match=r"bits: 16 -> 32"):
        run_info.check_resume(changed(bits=32), str(workdir), allow=["steps"])
    # What cannot matter does not block: the path spelled differently, logging periods.
    respelled = os.path.relpath(data_dir)
    same = tiny_config(
        respelled,
        os.path.relpath(workdir),
        optimizer=stored.optimizer,
        log_every=1,
        checkpoint_every=3,
        keep_checkpoints=5,
    )
    assert run_info.check_resume(same, str(workdir)) == (stored_dict(workdir), [])
    # A longer schedule, when allowed; its extra learning-rate boundaries follow.
    longer = changed(steps=8)
    with pytest.raises(run_info.ResumeMismatchError, match="steps: 4 -> 8"):
        run_info.check_resume(longer, str(workdir))
    longer = tiny_config(data_dir, workdir, steps=8, optimizer=OptimizerConfig(boundaries=(2, 6)))
    assert [str(c) for c in run_info.check_resume(longer, str(workdir), ["steps"])[1]] == [
        "optimizer.boundaries: 2 -> 2,6",
        "steps: 4 -> 8",
    ]
    with pytest.raises(run_info.ResumeMismatchError, match="steps: 4 -> 2"):
        run_info.check_resume(changed(steps=2), str(workdir), allow=["steps"])


def stored_dict(workdir):
    return read_json(workdir / "run_info.json")["config"]


# --- The command line ------------------------------------------------------------


@pytest.fixture
def parse(monkeypatch):
    """Parses `wsdhash.train` flags for one test; the flags are reset afterwards."""
    monkeypatch.setattr(cli, "_log_file", None)

    def parse_flags(*args):
        FLAGS.unparse_flags()
        FLAGS(["wsdhash.train", *args])

    yield parse_flags
    FLAGS.unparse_flags()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoint_every=0"], "--checkpoint_every must be >= 1 and <= "),
        (["--log_every=0"], "--log_every must be >= 1 and <= "),
        (["--hash_bit=0"], "--hash_bit must be >= 1 and <= "),
        (["--keep_checkpoints=0"], "--keep_checkpoints must be >= 1 and <= "),
        (
            ["--builtin_sizes=10,5"],
            ("--builtin_sizes must be three positive integers train,query,database, got '10,5'"),
        ),
        (["--builtin_sizes=10,0,5"], "--builtin_sizes must be three positive integers"),
        (["--steps=0", "--epochs=0"], "--epochs must be > 0 when --steps=0"),
        (["--epochs=-1"], "--epochs must be >= 0 and <= 1000000, got -1.0"),
        (["--steps=-2"], "--steps must be >= 0 and <= 1000000000, got -2"),
        (["--topk=-3"], "--topk must be a positive integer or 'all'"),
        (["--resume_with_changes=hash_bit"], "--resume_with_changes: 'hash_bit' cannot"),
    ],
)
def test_bad_flags_are_named_before_any_tensorflow_work(parse, args, message):
    parse(*args)
    with pytest.raises(cli.UsageError, match=message.replace("(", r"\(")):
        train.validate_flags()


def test_resume_with_changes_takes_flag_names(parse):
    parse("--method=hyp2", "--resume_with_changes=steps,lr,hyp2_zeta,lr_decay_every")
    assert train.fields_for_flags(FLAGS.resume_with_changes) == [
        "steps",
        "optimizer.learning_rate",
        "method_options.zeta",
        "optimizer.boundaries",
    ]
    parse("--method=orthohash", "--resume_with_changes=orthohash_codebook")
    assert train.fields_for_flags(FLAGS.resume_with_changes) == ["method_options.codebook_method"]
    # WSDHQ's quantizer period is its option; the quantizer itself must match.
    parse("--method=wsdhq", "--resume_with_changes=quantizer_update_every,wsdhq_gamma")
    assert train.fields_for_flags(FLAGS.resume_with_changes) == [
        "method_options.quantizer_update_every",
        "method_options.gamma",
    ]
    parse("--method=wsdhq", "--resume_with_changes=quantizer")
    with pytest.raises(cli.UsageError, match="'quantizer' cannot change on resume"):
        train.fields_for_flags(FLAGS.resume_with_changes)
    parse("--method=hyp2", "--resume_with_changes=quantizer_update_every")  # not hyp2's
    with pytest.raises(cli.UsageError, match="'quantizer_update_every' cannot change"):
        train.fields_for_flags(FLAGS.resume_with_changes)


def _wsdhq(data_dir, workdir, **options):
    return tiny_config(
        data_dir,
        workdir,
        method="wsdhq",
        supervision="tags",
        method_options={
            "gamma": 1.0,
            "quantizer": "additive",
            "quantizer_update_every": 0,
            **options,
        },
    )


def test_wsdhq_runs_recorded_with_top_level_quantizer_keys_read_and_resume(data_dir, tmp_path):
    """Before the quantizer became WSDHQ's options, run_info.json held "quantizer" and
    "quantizer_update_every" beside "method" for every method's run."""
    workdir = tmp_path / "old"
    os.makedirs(workdir / "checkpoints")
    (workdir / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-4"\n')
    run_info.write_run_info(str(workdir), _wsdhq(data_dir, workdir, quantizer="product"))
    info = read_json(workdir / "run_info.json")
    recorded = info["config"]
    assert recorded["method_options"]["quantizer"] == "product"
    old = dict(recorded, method_options={"gamma": 1.0}, quantizer="product")
    old["quantizer_update_every"] = 0
    info["config"] = old  # as the code before the options wrote it
    (workdir / "run_info.json").write_text(json.dumps(info))

    assert config_from_dict(old) == config_from_dict(recorded)
    assert config_from_dict(old).method.options == {
        "gamma": 1.0,
        "quantizer": "product",
        "quantizer_update_every": 0,
    }
    # Another method's old run recorded the two keys too; they are not its settings.
    other = dict(old, method="hyp2", supervision="labels", method_options={"beta": 0.5})
    assert config_from_dict(other).method.options == {"beta": 0.5}

    same = _wsdhq(data_dir, workdir, quantizer="product")
    assert run_info.check_resume(same, str(workdir))[1] == []
    # The quantizer must match, even with every method option allowed to change.
    with pytest.raises(run_info.ResumeMismatchError) as raised:
        run_info.check_resume(
            _wsdhq(data_dir, workdir), str(workdir), allow=["method_options.*", "steps"]
        )
    assert [str(c) for c in raised.value.changes] == [
        "method_options.quantizer: product -> additive"
    ]
    assert "--resume_with_changes" not in str(raised.value)
    # Its period may change when named, as before.
    faster = _wsdhq(data_dir, workdir, quantizer="product", quantizer_update_every=5)
    with pytest.raises(run_info.ResumeMismatchError, match="quantizer_update_every: 0 -> 5"):
        run_info.check_resume(faster, str(workdir))
    allowed = run_info.check_resume(
        faster, str(workdir), allow=["method_options.quantizer_update_every"]
    )
    assert [str(c) for c in allowed[1]] == ["method_options.quantizer_update_every: 0 -> 5"]


def test_the_command_line_refuses_other_settings_and_a_held_workdir(parse, tmp_path):
    data_dir, workdir = str(tmp_path / "builtin"), str(tmp_path / "run")
    tiny = [f"--data_dir={data_dir}", f"--workdir={workdir}", *TINY, "--steps=2"]
    parse(*tiny)
    keras.backend.clear_session()
    train.main(["wsdhash.train"])
    flags_text = Path(workdir, "flags.txt").read_text()

    parse(*tiny, "--hash_bit=32", "--lr=0.02", "--steps=4")
    with pytest.raises(cli.UsageError) as raised:
        train.main(["wsdhash.train"])
    assert str(raised.value) == (
        f"--workdir={workdir} holds a run with other settings (--hash_bit: 16 -> 32; "
        "--lr: 0.01 -> 0.02; --steps: 2 -> 4); rerun it with its own "
        f"(--flagfile={workdir}/flags.txt), use another --workdir."
    )
    assert Path(workdir, "flags.txt").read_text() == flags_text  # untouched

    parse(*tiny, "--steps=4")
    with (
        file_lock.exclusive(workdir, "workdir", folder=True),
        pytest.raises(cli.UsageError, match=f"^--workdir: {workdir} is in use by another"),
    ):
        train.main(["wsdhash.train"])

    parse(*tiny, "--steps=4", "--resume_with_changes=steps")
    keras.backend.clear_session()
    train.main(["wsdhash.train"])
    info = read_json(os.path.join(workdir, "run_info.json"))
    assert info["config"]["steps"] == 4
    assert info["resumes"] == [{"step": 2, "changes": {"steps": [2, 4]}}]
    assert read_json(os.path.join(workdir, "metrics.json"))["steps"] == 4


def test_a_bad_flag_is_one_line_on_stderr_with_exit_status_2(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wsdhash.train",
            f"--workdir={tmp_path / 'run'}",
            "--checkpoint_every=0",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "wsdhash.train: error: --checkpoint_every must be >= 1 and <= 1000000000, got 0."
    )
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "run")  # refused before anything is written


# --- The training augmentation (--augment) ----------------------------------------


def test_augment_reaches_the_training_pipeline_and_is_a_resume_setting(
    parse, tmp_path, monkeypatch
):
    from wsdhash.data import pipeline

    real, seen = pipeline.make_dataset, []

    def recording_make_dataset(split, config, *, training, **kwargs):
        seen.append((training, config))
        return real(split, config, training=training, **kwargs)

    monkeypatch.setattr(pipeline, "make_dataset", recording_make_dataset)
    data_dir, workdir = str(tmp_path / "builtin"), str(tmp_path / "run")
    tiny = [f"--data_dir={data_dir}", f"--workdir={workdir}", *TINY, "--steps=1"]
    parse(*tiny, "--augment=center_crop")
    keras.backend.clear_session()
    train.main(["wsdhash.train"])
    trained = [config for training, config in seen if training]
    assert trained and {config.augment for config in trained} == {"center_crop"}
    assert (trained[0].image_size, trained[0].crop_size) == (32, 28)
    assert read_json(os.path.join(workdir, "run_info.json"))["config"]["augment"] == "center_crop"
    assert "--augment=center_crop\n" in Path(workdir, "flags.txt").read_text()

    parse(*tiny)  # the default, random_crop_flip: another recipe, refused on resume
    with pytest.raises(cli.UsageError, match=r"\(--augment: center_crop -> random_crop_flip\)"):
        train.main(["wsdhash.train"])


def test_an_unknown_augment_is_named(parse, tmp_path):
    parse(f"--workdir={tmp_path / 'run'}", "--augment=jitter")
    with pytest.raises(
        cli.UsageError,
        match=r"^--augment=jitter is not a training "
        r"augmentation; known: center_crop, random_crop_flip, resize, resize_flip",
    ):
        train.main(["wsdhash.train"])


def test_a_run_recorded_before_augment_resumes_with_random_crop_flip(data_dir, tmp_path):
    workdir = tmp_path / "old"
    os.makedirs(workdir / "checkpoints")
    (workdir / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-4"\n')
    run_info.write_run_info(str(workdir), tiny_config(data_dir, workdir))
    info = read_json(workdir / "run_info.json")
    del info["config"]["augment"]  # as written before the field existed
    (workdir / "run_info.json").write_text(json.dumps(info))

    assert config_from_dict(info["config"]).data.augment == "random_crop_flip"
    default = tiny_config(data_dir, workdir)
    assert run_info.check_resume(default, str(workdir))[1] == []
    other = tiny_config(data_dir, workdir, augment="center_crop")
    changed = "augment: random_crop_flip -> center_crop"
    with pytest.raises(run_info.ResumeMismatchError, match=changed):
        run_info.check_resume(other, str(workdir), allow=["steps", "method_options.*"])
