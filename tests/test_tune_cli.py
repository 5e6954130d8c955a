"""`python -m wsdhash.tune`: a 2-trial search on a small features file writes its trial
table and a best flagfile that `wsdhash.train` replays, resumes without repeating
finished trials, retries a trial a killed search left running, and refuses settings
that would let it look at the test queries."""

import os
import subprocess
import sys

import optuna
import pytest
from absl import flags
from synthetic_features import write_clustered_features

from wsdhash import cli
from wsdhash.commands import train as train_command
from wsdhash.commands import tune

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def run_tune(*args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", "wsdhash.tune", *args], capture_output=True, text=True, env=ENV
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_trials_then_a_resumed_third(tmp_path):
    features = write_clustered_features(tmp_path / "f.h5")
    study = tmp_path / "study"
    common = [
        "--method=csq",
        "--backbone=features",
        f"--features={features}",
        "--hash_bit=8",
        f"--study_dir={study}",
        "--space=lr=log:1e-4:1e-2,epochs=int:1:3",
        "--batch_size=32",
    ]
    result = run_tune(*common, "--trials=2")
    assert "trial 1/2: --lr=" in result.stdout and "trial 2/2: --lr=" in result.stdout
    assert "recipe features/csq" in result.stdout
    assert "best: trial" in result.stdout
    table = (study / "trials.md").read_text().splitlines()
    assert table[0].startswith("| trial | --lr | --epochs | validation mAP |")
    assert len(table) == 2 + 2
    storage = f"sqlite:///{study / 'study.db'}"
    loaded = optuna.load_study(study_name="wsdhash", storage=storage)
    best = loaded.best_trial
    assert best.value == max(t.value for t in loaded.trials)
    # Each trial's score is its run's validation mAP (never the test queries').
    run = study / "trials" / best.user_attrs["run"]
    metrics = __import__("json").loads((run / "metrics.json").read_text())
    assert metrics["best_selection_score"] == pytest.approx(best.value)
    assert metrics["selected_on"] == "validation"

    # best.flags replays in wsdhash.train with the best trial's values.
    text = (study / "best.flags").read_text()
    assert text.startswith("# Chosen by python -m wsdhash.tune") and "--workdir=" not in text
    flag_values = flags.FLAGS
    try:
        flag_values.unparse_flags()
        flag_values(["train", f"--flagfile={study / 'best.flags'}"])
        assert flag_values.lr == pytest.approx(best.params["lr"])
        assert flag_values.epochs == best.params["epochs"]
        assert flag_values.method == "csq" and flag_values.hash_bit == 8
    finally:
        flag_values.unparse_flags()

    # Resumed with a larger budget: one new trial, the two finished ones kept.
    result = run_tune(*common, "--trials=3")
    assert "2 trials done, 1 to run" in result.stdout
    assert "trial 3/3: " in result.stdout
    assert len(optuna.load_study(study_name="wsdhash", storage=storage).trials) == 3


def test_a_trial_left_running_is_retried_with_its_values(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="wsdhash", storage=storage, direction="maximize")
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    lr = trial.params["lr"]
    assert tune.stale_trials_to_retry(study) == [{"lr": lr}]
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert tune.stale_trials_to_retry(study) == []  # marked once


def test_same_values_same_run_folder():
    assert tune.trial_id({"lr": 0.001, "epochs": 3}) == tune.trial_id({"epochs": 3, "lr": 0.001})
    assert tune.trial_id({"lr": 0.001}) != tune.trial_id({"lr": 0.002})


@pytest.mark.parametrize(
    "space, message",
    [
        ("nope=log:1:2", "'nope' is not a training flag"),
        ("seed=int:1:2", "'seed' is not a training flag"),
        ("lr=cubic:1:2", "kind 'cubic' is not one of"),
        ("lr=log:0:1", "LOW > 0 for log"),
        ("epochs=int:5:5", "LOW < HIGH"),
        ("lr=log:1e-4:1e-2,lr=float:0.1:0.2", "names a flag twice"),
        ("", "names no flag"),
    ],
)
def test_bad_spaces_are_named(space, message):
    with pytest.raises(cli.UsageError, match=message):
        tune.parse_space(space, train_command.training_flag_names())


def test_choice_and_int_dimensions_suggest_their_kinds():
    dims = tune.parse_space(
        "head=choice:tanh:linear_bn,epochs=int:2:4,lr=float:0.1:0.2",
        train_command.training_flag_names(),
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        head, epochs, lr = (d.suggest(trial) for d in dims)
        assert head in ("tanh", "linear_bn") and isinstance(epochs, int) and 2 <= epochs <= 4
        assert 0.1 <= lr <= 0.2
        study.tell(trial, 0.0)


def test_choices_take_their_flags_types():
    """A sampled choice is a string; the flag gets it parsed by its own parser (an int
    flag's "256" was once passed as the string and broke training)."""
    assert tune.flag_value("batch_size", "256") == 256
    assert tune.flag_value("greedyhash_unsupervised_center_features", "false") is False
    assert tune.flag_value("head", "tanh") == "tanh"
    assert tune.flag_value("lr", 0.5) == 0.5  # numbers pass as sampled
    dims = tune.parse_space("batch_size=choice:64:big", train_command.training_flag_names())
    with pytest.raises(cli.UsageError, match="'big' is not a value of --batch_size"):
        tune.check_choices(dims)
    tune.check_choices(
        tune.parse_space("head=choice:tanh:linear_bn", train_command.training_flag_names())
    )


def test_refuses_to_tune_without_validation_queries(tmp_path):
    for flag in ("--select_on=test", "--validation_size=0"):
        result = run_tune(
            "--method=csq",
            "--backbone=features",
            "--features=x.h5",
            flag,
            f"--study_dir={tmp_path}",
            check=False,
        )
        assert result.returncode == 2
        assert "wsdhash.tune: error: The search scores trials on validation" in result.stderr
