"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

Everything wsdhash writes for others to read (codes files, metrics, generated data,
checkpoints) is written to a temporary file in the destination folder and moved into
place with `os.replace`, which is atomic on POSIX and Windows. The file gets the mode
a plain `open(path, "w")` would give it (0666 less the process's umask), not the 0600
of `tempfile.mkstemp`, so codes, metrics and indexes are as readable as checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # briefly changed: no /proc (macOS, old kernels)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode `open(path, "w")` creates files with: 0666 less the umask."""
    return 0o666 & ~_umask()


def default_dir_mode() -> int:
    """The mode `os.mkdir` creates folders with: 0777 less the umask."""
    return 0o777 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path next to `path`; on success it replaces `path`.

    On an exception the temporary file is removed and `path` is left as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        if hasattr(os, "fchmod"):  # not on Windows, where modes barely apply
            os.fchmod(handle, default_file_mode())
    finally:
        os.close(handle)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes bytes atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as f:
            f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 text atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Writes `value` as indented JSON atomically."""
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


# Folders built beside their destination and renamed into place (an index, a codes
# folder, TFRecord shards): `.<name>.XXXXXXXX.building` while written, the replaced one
# briefly `.<name>.XXXXXXXX.old`. Callers hold the destination's lock (file_lock.py).
_LEFTOVER_SUFFIXES = (".building", ".old")


def building_folder(destination: str) -> str:
    """A new, empty folder beside `destination` to build its replacement in."""
    parent, name = os.path.split(os.path.abspath(destination))
    building = tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".building")
    os.chmod(building, default_dir_mode())
    return building


def remove_leftover_folders(destination: str) -> None:
    """The folders of killed builds of `destination` (its lock is held: none is live)."""
    parent, name = os.path.split(os.path.abspath(destination))
    prefix = f".{name}."
    for entry in os.listdir(parent):
        for suffix in _LEFTOVER_SUFFIXES:
            middle = entry[len(prefix) : -len(suffix)]
            # mkdtemp's 8 random characters: not the folders of an output "<name>.v2".
            ours = entry.startswith(prefix) and entry.endswith(suffix)
            if ours and len(middle) == 8 and "." not in middle:
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def replace_folder(new: str, destination: str) -> None:
    """Moves `new` to `destination`; an old `destination` goes only after `new` is whole.

    Between the two renames (microseconds) `destination` is absent: a reader then finds
    nothing, never a mix; a process killed there leaves the old folder in
    `.<name>.*.old`, removed by `remove_leftover_folders`."""
    if not os.path.exists(destination):
        os.rename(new, destination)
        return
    parent, name = os.path.split(os.path.abspath(destination))
    old = tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".old")
    os.rmdir(old)  # a unique free name for the rename
    os.rename(destination, old)
    os.rename(new, destination)
    shutil.rmtree(old, ignore_errors=True)
