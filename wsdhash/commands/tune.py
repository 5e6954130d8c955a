"""Hyperparameter search for one method against validation mAP: `python -m wsdhash.tune`.

    python -m wsdhash.tune --method=dpsh --backbone=features --features=F.h5 \
        --hash_bit=64 --trials=20 --timeout_s=3600 --study_dir=tune/dpsh \
        [--space=lr=log:1e-4:1e-2,weight_decay=log:1e-6:1e-2,epochs=int:5:60] \
        [any flag of python -m wsdhash.train: the settings every trial starts from]

Every trial is one training run (`wsdhash.training.trainer.train`, in this process:
TensorFlow starts once) with the base flags, the method's recipe where it applies
(`--recipe`, as `wsdhash.train` does) and the trial's values for the flags in
`--space`. Its score is the validation mAP of its selected checkpoint: validation
queries carved from the training split (`--validation_size`), ranked against the rest
of the training split. The test queries are never looked at: the study cannot choose
on them, so `--select_on=test` and `--validation_size=0` are refused.

The search is Optuna's TPE sampler, seeded by `--seed`. Optuna rather than
KerasTuner: wsdhash trains with its own `tf.distribute` loop, not `Model.fit`, which
KerasTuner's tuners are built around; Optuna asks for nothing but an objective
function, stores a study in SQLite (so an interrupted search resumes where it stopped),
and is a small, well-kept dependency.

Bounds: at most `--trials` trials in the study (those finished before a resume count),
and no new trial starts after `--timeout_s` seconds of this run (a trial under way runs
to its end; its training resumes from its checkpoint if the search is killed and
started again: the trial is retried with the same values in the same run folder).

Outputs in `--study_dir`:
    study.db        the Optuna study (resume: the same command again)
    trials/<id>/    each trial's training run (flags.txt, metrics.json, codes.h5, ...)
    trials.md       one row per trial: its values, validation mAP, time, state
    best.flags      the best trial's flags, a flagfile for `python -m wsdhash.train`
    tune.log        the libraries' logs

Space syntax: comma-separated `flag=kind:args`, kinds `log:LOW:HIGH` (float,
log-uniform), `float:LOW:HIGH`, `int:LOW:HIGH`, `choice:A:B:...`; every flag must be a
flag of `wsdhash.train` (e.g. `--space=lr=log:1e-4:1e-2,head=choice:linear_bn:features_bn`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time

from absl import flags, logging

from wsdhash import cli
from wsdhash.commands import train as train_command  # the training flags this command shares

FLAGS = flags.FLAGS

flags.DEFINE_integer("trials", 20, "Trials in the study (finished ones count on resume).")
flags.DEFINE_integer("timeout_s", 0, "No new trial after this many seconds (0: no limit).")
flags.DEFINE_string("study_dir", None, "The study's folder (default: tune/<run name>).")
flags.DEFINE_string(
    "space",
    "lr=log:1e-4:1e-2,weight_decay=log:1e-6:1e-2,epochs=int:5:60",
    "Flags to search, comma-separated flag=kind:args (module doc).",
)

KINDS = ("log", "float", "int", "choice")
OBJECTIVE = "validation mAP"


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched flag: `kind` in KINDS and its bounds or choices (as strings)."""

    flag: str
    kind: str
    args: tuple[str, ...]

    def suggest(self, trial):
        if self.kind == "choice":
            return trial.suggest_categorical(self.flag, list(self.args))
        low, high = self.args
        if self.kind == "int":
            return trial.suggest_int(self.flag, int(low), int(high))
        return trial.suggest_float(self.flag, float(low), float(high), log=self.kind == "log")


def parse_space(text: str, known_flags) -> list[Dimension]:
    """The `--space` value as dimensions.

    Raises:
        cli.UsageError: naming the entry at fault.
    """
    dimensions = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, _, spec = entry.partition("=")
        kind, *args = spec.split(":")
        problem = None
        if name not in known_flags or name in ("seed", "workdir", "method"):
            problem = f"{name!r} is not a training flag the search can set"
        elif kind not in KINDS:
            problem = f"kind {kind!r} is not one of {', '.join(KINDS)}"
        elif kind == "choice" and len(args) < 1:
            problem = "choice needs at least one value"
        elif kind != "choice":
            try:
                low, high = (int(a) if kind == "int" else float(a) for a in args)
            except ValueError:
                low = high = None
            if low is None or not low < high or (kind == "log" and low <= 0):
                problem = f"{kind} needs LOW:HIGH with LOW < HIGH (and LOW > 0 for log)"
        if problem:
            raise cli.UsageError(f"--space: {entry!r}: {problem}.")
        dimensions.append(Dimension(name, kind, tuple(args)))
    if not dimensions:
        raise cli.UsageError("--space names no flag to search.")
    names = [d.flag for d in dimensions]
    if len(set(names)) != len(names):
        raise cli.UsageError(f"--space names a flag twice: {','.join(names)}.")
    return dimensions


def flag_value(name: str, value):
    """`value` as flag `name` holds it: a choice is sampled as its string ("256",
    "true") and parsed by the flag's own parser; numbers pass as sampled."""
    return FLAGS[name].parser.parse(value) if isinstance(value, str) else value


def check_choices(dimensions: list[Dimension]) -> None:
    """Each choice parses as its flag's type (`batch_size=choice:64:x` is refused)."""
    for dimension in dimensions:
        for choice in dimension.args if dimension.kind == "choice" else ():
            try:
                flag_value(dimension.flag, choice)
            except (ValueError, flags.Error) as error:
                raise cli.UsageError(
                    f"--space: {dimension.flag}=choice:{':'.join(dimension.args)}: {choice!r} "
                    f"is not a value of --{dimension.flag} ({error})."
                ) from None


def trial_id(values: dict) -> str:
    """A run folder name for these values: the same values resume the same run."""
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def shown(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trials_table(study, dimensions: list[Dimension]) -> str:
    """Markdown: one row per trial, best first among the finished ones."""
    import optuna

    header = ["trial", *(f"--{d.flag}" for d in dimensions), OBJECTIVE, "seconds", "state"]
    rows = []
    done = optuna.trial.TrialState.COMPLETE
    ordered = sorted(
        study.trials,
        key=lambda t: (t.state != done, -(t.value or 0.0) if t.state == done else t.number),
    )
    for trial in ordered:
        value = f"{trial.value:.4f}" if trial.state == done else ""
        state = trial.user_attrs.get("error", trial.state.name.lower())
        rows.append(
            [
                str(trial.number + 1),
                *(shown(trial.params.get(d.flag, "")) for d in dimensions),
                value,
                shown(trial.user_attrs.get("seconds", "")),
                state,
            ]
        )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def best_flagfile(study, study_dir: str) -> str | None:
    """The best trial's replayable flags (its flags.txt without --workdir), headed by
    where they come from; None before any trial finished."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    run = os.path.join(study_dir, "trials", best.user_attrs["run"])
    with open(os.path.join(run, "flags.txt"), encoding="utf-8") as file:
        lines = [line for line in file if not line.startswith("--workdir=")]
    header = (
        f"# Chosen by python -m wsdhash.tune in {study_dir}: trial {best.number + 1} of "
        f"{len(study.trials)}, {OBJECTIVE} {best.value:.4f} (validation queries carved "
        f"from the training split; the test queries were not used).\n"
    )
    return header + "".join(lines)


def stale_trials_to_retry(study) -> list[dict]:
    """Marks trials left running by a killed search as failed and returns their values,
    so that they run again (their training resumes from its checkpoint)."""
    import optuna

    retry = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state_values(  # no public API for this
            trial._trial_id, optuna.trial.TrialState.FAIL
        )
        retry.append(dict(trial.params))
    return retry


class Objective:
    """One trial: the base flags plus the trial's values -> a training run -> its
    validation mAP. Flags are set for the run and restored after it."""

    def __init__(self, dimensions: list[Dimension], study_dir: str, total: int):
        self.dimensions, self.study_dir, self.total = dimensions, study_dir, total
        self.base = {d.flag: FLAGS[d.flag].value for d in dimensions}

    def __call__(self, trial) -> float:
        from wsdhash.training import trainer

        values = {d.flag: d.suggest(trial) for d in self.dimensions}
        run = trial_id(values)
        trial.set_user_attr("run", run)
        workdir = os.path.join(self.study_dir, "trials", run)
        started = time.perf_counter()
        try:
            for name, value in values.items():
                FLAGS[name].value = flag_value(name, value)
            config = train_command.build_config(workdir)
            os.makedirs(workdir, exist_ok=True)
            train_command.write_replay_flags(workdir)
            metrics = trainer.train(config)
            score = metrics["best_selection_score"]
        except trainer.NonFiniteLossError as error:
            # A diverging setting scores 0 rather than failing, so that the sampler learns
            # to avoid its region.
            trial.set_user_attr("error", "diverged")
            logging.warning("trial %d diverged: %s", trial.number, error)
            score = 0.0
        finally:
            for name, value in self.base.items():
                FLAGS[name].value = value
        seconds = time.perf_counter() - started
        trial.set_user_attr("seconds", round(seconds, 1))
        settings = " ".join(f"--{name}={shown(value)}" for name, value in values.items())
        best = max(
            [score]
            + [t.value for t in trial.study.get_trials(deepcopy=False) if t.value is not None]
        )
        print(
            f"trial {trial.number + 1}/{self.total}: {settings} -> {OBJECTIVE} {score:.4f} "
            f"(best {best:.4f}), {seconds:.0f} s",
            flush=True,
        )
        return score


def write_outputs(study, dimensions: list[Dimension], study_dir: str) -> str | None:
    from wsdhash import atomic_files

    atomic_files.write_text(os.path.join(study_dir, "trials.md"), trials_table(study, dimensions))
    text = best_flagfile(study, study_dir)
    if text is None:
        return None
    path = os.path.join(study_dir, "best.flags")
    atomic_files.write_text(path, text)
    return path


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.trials < 1:
        raise cli.UsageError(f"--trials must be a positive integer, got {FLAGS.trials}.")
    if FLAGS.timeout_s < 0:
        raise cli.UsageError(f"--timeout_s must be >= 0, got {FLAGS.timeout_s}.")
    if FLAGS.select_on != "validation" or FLAGS.validation_size == 0:
        raise cli.UsageError(
            "The search scores trials on validation queries carved from the training "
            "split: it needs --select_on=validation and --validation_size other than 0."
        )
    if FLAGS.workdir:
        raise cli.UsageError("--workdir: each trial has its own in --study_dir; drop it.")
    recipe_line = train_command.apply_recipe()
    dimensions = parse_space(FLAGS.space, train_command.training_flag_names())
    check_choices(dimensions)
    train_command.validate_flags()
    study_dir = FLAGS.study_dir or os.path.join("tune", train_command.run_name())
    os.makedirs(study_dir, exist_ok=True)
    cli.set_log_file(os.path.join(study_dir, "errors.log"))
    logging.get_absl_handler().use_absl_log_file("tune", study_dir)
    logging.set_verbosity(logging.INFO)
    logging.set_stderrthreshold(logging.ERROR)
    if recipe_line:
        print(recipe_line, flush=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up lines

    import optuna

    from wsdhash import file_lock

    optuna.logging.disable_default_handler()  # its INFO lines go to the log file
    optuna.logging.enable_propagation()
    if FLAGS.backbone == "features":
        train_command.use_features_file()
    try:
        lock = file_lock.exclusive(study_dir, "study", folder=True)
        lock.__enter__()
    except file_lock.LockedError as error:
        raise cli.UsageError(f"--study_dir: {error}") from None
    try:
        storage = f"sqlite:///{os.path.abspath(os.path.join(study_dir, 'study.db'))}"
        study = optuna.create_study(
            study_name="wsdhash",
            storage=storage,
            direction="maximize",
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=FLAGS.seed),
        )
        for values in stale_trials_to_retry(study):
            study.enqueue_trial(values)
        finished = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        remaining = FLAGS.trials - finished
        print(
            f"study {study_dir}: {finished} trials done, {max(remaining, 0)} to run "
            f"(--trials={FLAGS.trials}{f', --timeout_s={FLAGS.timeout_s}' if FLAGS.timeout_s else ''}); "
            f"searching {', '.join(f'--{d.flag}' for d in dimensions)} on {OBJECTIVE}",
            flush=True,
        )
        if remaining > 0:
            study.optimize(
                Objective(dimensions, study_dir, FLAGS.trials),
                n_trials=remaining,
                timeout=FLAGS.timeout_s or None,
                catch=(),
                callbacks=[lambda s, _t: write_outputs(s, dimensions, study_dir)],
            )
        best = write_outputs(study, dimensions, study_dir)
    finally:
        lock.__exit__(None, None, None)
    if best is None:
        print("no trial finished; nothing to report.")
        return
    trial = study.best_trial
    settings = " ".join(f"--{k}={shown(v)}" for k, v in trial.params.items())
    print(f"best: trial {trial.number + 1}, {settings}: {OBJECTIVE} {trial.value:.4f}")
    print(f"flagfile: {best}  table: {os.path.join(study_dir, 'trials.md')}")


def run():
    cli.run(main, "wsdhash.tune")


if __name__ == "__main__":
    sys.exit(run())
