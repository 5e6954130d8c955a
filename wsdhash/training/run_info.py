"""What a run records about itself: configuration, code version, package versions."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import subprocess
import sys

from wsdhash import atomic_files

PACKAGES = ("wsdhash", "tensorflow", "keras", "numpy", "h5py", "opencv-python-headless", "absl-py")


def git_commit() -> str | None:
    """The commit of the wsdhash checkout, with `-dirty` when it has local changes."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        commit = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
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


def write_run_info(workdir: str, config) -> None:
    """Writes `run_info.json`: the resolved configuration, git commit and versions."""
    atomic_files.write_json(
        os.path.join(workdir, "run_info.json"),
        {
            "config": dataclasses.asdict(config),
            "git_commit": git_commit(),
            "packages": package_versions(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
    )
