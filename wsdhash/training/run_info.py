"""What a run records about itself (configuration, code version, package versions),
and whether a run folder may be resumed with a given configuration."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

from wsdhash import atomic_files, settings
from wsdhash.methods import METHODS
from wsdhash.training.config import TrainConfig, to_flat_dict, upgrade_recorded

# TrainConfig's fields that hold a dict of options (compared entry by entry).
_DICT_FIELDS = ("dataset_options", "method_options")

PACKAGES = ("wsdhash", "tensorflow", "keras", "numpy", "h5py", "opencv-python-headless", "absl-py")


def git_commit() -> str | None:
    """The commit of the wsdhash checkout, with `-dirty` when it has local changes."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def read_resumes(workdir: str) -> list[dict]:
    """The "resumes" history of an existing `run_info.json` ([] when there is none)."""
    path = os.path.join(workdir, "run_info.json")
    try:
        with open(path) as f:
            return list(json.load(f).get("resumes", []))
    except (OSError, ValueError):
        return []


def write_run_info(workdir: str, config, resumes: list[dict] | None = None) -> None:
    """Writes `run_info.json`: the resolved configuration, git commit and versions.

    Args:
        resumes: the resumes that changed settings (`--resume_with_changes`), oldest
            first, each {"step": the step resumed at, "changes": {field: [old, new]}};
            "config" is then the latest settings.
    """
    info = {
        "config": to_flat_dict(config),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    if resumes:
        info["resumes"] = resumes
    atomic_files.write_json(os.path.join(workdir, "run_info.json"), info)


# -----------------------------------------------------------------------------
# Resuming
# -----------------------------------------------------------------------------

# The resume policy of each `TrainConfig` setting, by its key in the flat form (the
# fields' metadata, `wsdhash.settings`; a dict field's policy covers its entries,
# "method_options.*").
_POLICIES = settings.resume_policies(TrainConfig)
# Fields that do not change what a run computes: a resumed run may differ in them.
RESUME_FREE_FIELDS = tuple(f for f, policy in _POLICIES.items() if policy == settings.FREE)
# Settings added after runs had been recorded without them, with the value every such
# run used: a stored run that lacks one is compared as if it had recorded that value
# (other unrecorded fields are not compared).
UNRECORDED_DEFAULTS = settings.unrecorded_defaults(TrainConfig)
# Fields compared as paths: one file spelled differently is one setting.
_PATH_FIELDS = tuple(f for f, policy in _POLICIES.items() if policy == settings.PATH)
# Fields a resumed run may change when the caller allows it: the schedule and the
# hyperparameters of the optimiser and the loss. `steps` may only grow; then the
# learning-rate boundaries may grow with it (the earlier ones unchanged).
RESUME_CHANGEABLE = tuple(
    f"{f}.*" if f in _DICT_FIELDS else f
    for f, policy in _POLICIES.items()
    if policy == settings.CHANGEABLE
)


def _policy(field: str, method: str | None = None) -> str:
    """The resume policy of a flattened field: a method option's
    ("method_options.quantizer") is its `Option.resume` when `method` is given,
    another dict entry's its dict's."""
    if field in _POLICIES:
        return _POLICIES[field]
    head, _, entry = field.partition(".")
    if head == "method_options" and method in METHODS:
        option = METHODS.get(method).option(entry)
        if option is not None:
            return option.resume
    return _POLICIES.get(head, settings.MUST_MATCH)


@dataclasses.dataclass(frozen=True)
class SettingChange:
    """A `TrainConfig` setting (its key: "bits", "optimizer.learning_rate") whose
    value differs from the stored run's; `changeable`: whether `check_resume` can
    allow it."""

    field: str
    stored: Any
    new: Any
    changeable: bool = True

    @staticmethod
    def show(value) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)):
            return ",".join(SettingChange.show(v) for v in value) or "()"
        return "none" if value is None else str(value)

    def __str__(self) -> str:
        return f"{self.field}: {self.show(self.stored)} -> {self.show(self.new)}"


class ResumeMismatchError(ValueError):
    """The workdir holds a run with other settings; `changes` lists them."""

    def __init__(self, workdir: str, changes: list[SettingChange]):
        self.workdir, self.changes = workdir, changes
        hint = ""
        if all(change.changeable for change in changes):
            hint = " (or allow the changes: train(allow_changes=...), --resume_with_changes)"
        super().__init__(
            f"{workdir} holds a run with other settings ({'; '.join(map(str, changes))}); "
            f"resume it with its own settings or use another workdir{hint}."
        )


def _flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _same_setting(field: str, stored, new) -> bool:
    if stored == new:
        return True
    if isinstance(stored, float) and isinstance(new, float):
        return math.isnan(stored) and math.isnan(new)
    if _policy(field) == settings.PATH and isinstance(stored, str) and isinstance(new, str):
        return os.path.realpath(stored) == os.path.realpath(new)
    return False


def resume_differences(stored: dict, config) -> list[SettingChange]:
    """How `config` differs from a stored run's `run_info.json` "config", leaving out
    `RESUME_FREE_FIELDS` and the fields the stored run did not record (except those of
    `UNRECORDED_DEFAULTS`, compared with the value such a run used)."""
    old = {**UNRECORDED_DEFAULTS, **_flatten(upgrade_recorded(stored))}
    new = _flatten(json.loads(json.dumps(to_flat_dict(config))))
    changes = []
    for field in sorted(set(old) & set(new)):
        policy = _policy(field, config.method.name)
        if policy == settings.FREE or _same_setting(field, old[field], new[field]):
            continue
        changeable = policy == settings.CHANGEABLE
        if field == "steps" and new[field] < old[field]:
            changeable = False  # a run cannot be shortened after the fact
        changes.append(SettingChange(field, old[field], new[field], changeable))
    return changes


def _allowed(change: SettingChange, allow: Iterable[str], stored: dict) -> bool:
    allow = set(allow)
    if not change.changeable:
        return False
    if change.field == "optimizer.boundaries" and "steps" in allow:
        # A longer schedule adds boundaries after the stored run's last step.
        earlier = [b for b in change.new if b < stored["steps"]]
        if list(change.stored) == earlier:
            return True
    return change.field in allow or (
        change.field.startswith("method_options.") and "method_options.*" in allow
    )


def resumable(output_dir: str) -> bool:
    """Whether `output_dir` holds checkpoints and the settings they were trained with."""
    return os.path.exists(os.path.join(output_dir, "checkpoints", "checkpoint")) and (
        os.path.exists(os.path.join(output_dir, "run_info.json"))
    )


def check_resume(
    config, output_dir: str, allow: Iterable[str] = ()
) -> tuple[dict, list[SettingChange]] | None:
    """Compares `config` with the run `output_dir` holds, when it holds one to resume.

    Args:
        allow: fields (`RESUME_CHANGEABLE`; "method_options.*" for all of the loss's)
            that may differ.

    Returns:
        None when there is nothing to resume, else (the stored config, the allowed
        changes).

    Raises:
        ResumeMismatchError: other differences, each listed.
    """
    if not resumable(output_dir):
        return None
    with open(os.path.join(output_dir, "run_info.json")) as f:
        stored = json.load(f).get("config")
    if not stored:
        return None
    changes = resume_differences(stored, config)
    refused = [change for change in changes if not _allowed(change, allow, stored)]
    if refused:
        raise ResumeMismatchError(output_dir, refused)
    return stored, changes
