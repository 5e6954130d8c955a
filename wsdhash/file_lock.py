"""Exclusive locks on what a process is writing: a run folder, an index, a features file.

Two trainings on one workdir (or two builds of one index) would interleave their
checkpoints and records. `exclusive(path)` takes a POSIX advisory lock on a small
lock file (`<path>.lock`, or `<dir>/.lock` for a folder) for the life of the `with`
block. The lock is held by the open file descriptor, so the kernel releases it when
the process ends for any reason (kill -9 included): a stale lock file never blocks a
later run. The file records the holder's pid and host for the error message.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; writing still is atomic.
    fcntl = None


class LockedError(RuntimeError):
    """Another process holds the lock; the message names the path and the holder."""


def lock_path_for(path: str, folder: bool | None = None) -> str:
    folder = os.path.isdir(path) if folder is None else folder
    return os.path.join(path, ".lock") if folder else f"{path}.lock"


@contextlib.contextmanager
def exclusive(path: str, what: str = "", folder: bool | None = None) -> Iterator[str]:
    """Holds an exclusive lock on `path` (a folder or a file, created or not).

    Args:
        path: what is being written.
        what: how the error names it ("workdir", "index", ...).
        folder: whether `path` is a folder (default: whether it is one now).

    Raises:
        LockedError: another live process holds the lock.
    """
    lock = lock_path_for(path, folder)
    os.makedirs(os.path.dirname(os.path.abspath(lock)), exist_ok=True)
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                holder = os.pread(descriptor, 200, 0).decode("utf-8", "replace").strip()
                raise LockedError(
                    f"{what + ' ' if what else ''}{path} is in use by another process"
                    f"{' (' + holder + ')' if holder else ''}; wait for it to finish or "
                    "stop it first."
                ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield lock
    finally:
        os.close(descriptor)
