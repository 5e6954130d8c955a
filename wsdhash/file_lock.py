"""Exclusive locks on what a process is writing: a run folder, an index, a features file.

Two trainings on one workdir (or two builds of one index) would interleave their
checkpoints and records. `exclusive(path)` takes a POSIX advisory lock on a small
lock file (`<path>.lock`, or `<dir>/.lock` for a folder) for the life of the `with`
block. The lock is held by the open file descriptor, so the kernel releases it when
the process ends for any reason (kill -9 included): a stale lock file never blocks a
later run. The file records the holder's pid and host for the error message.

The lock file is removed on release, so a finished run leaves nothing behind. Removing
it safely needs care: a second process may have opened the file just before the
holder unlinks it, and would then lock a file that no longer has a name while a third
process creates and locks a new one under the same name (two "holders"). So the
holder unlinks the file while it still holds the lock, and every locker, once it has
the lock, checks that the path still names the file it locked (same device and inode);
if not, it lost that race and tries again on the new file. Only a process killed
while holding the lock leaves the file behind; the next holder removes it.
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

# Tries to lock a file that its holder unlinked meanwhile, before giving up; each lost
# race means another process took and released the lock in between, so a handful is
# plenty.
_MAX_ATTEMPTS = 100


class LockedError(RuntimeError):
    """Another process holds the lock; the message names the path and the holder."""


def lock_path_for(path: str, folder: bool | None = None) -> str:
    folder = os.path.isdir(path) if folder is None else folder
    return os.path.join(path, ".lock") if folder else f"{path}.lock"


def _still_named(descriptor: int, lock: str) -> bool:
    """Whether `lock` still names the file open as `descriptor` (module doc)."""
    try:
        named = os.stat(lock)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _acquire(lock: str, path: str, what: str) -> int:
    """The descriptor of `lock`, opened and exclusively locked (module doc)."""
    for _ in range(_MAX_ATTEMPTS):
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if fcntl is None:
                return descriptor
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
            if _still_named(descriptor, lock):
                return descriptor
        except BaseException:
            os.close(descriptor)
            raise
        os.close(descriptor)  # its holder released and removed it: lock the new one
    raise LockedError(
        f"{what + ' ' if what else ''}{path}: could not lock {lock} in {_MAX_ATTEMPTS} "
        "tries (other processes keep taking it); try again."
    )


@contextlib.contextmanager
def exclusive(path: str, what: str = "", folder: bool | None = None) -> Iterator[str]:
    """Holds an exclusive lock on `path` (a folder or a file, created or not).

    The lock file is removed when the block ends (module doc).

    Args:
        path: what is being written.
        what: how the error names it ("workdir", "index", ...).
        folder: whether `path` is a folder (default: whether it is one now).

    Raises:
        LockedError: another live process holds the lock.
    """
    lock = lock_path_for(path, folder)
    os.makedirs(os.path.dirname(os.path.abspath(lock)), exist_ok=True)
    descriptor = _acquire(lock, path, what)
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield lock
    finally:
        try:
            # Unlinked while still locked, so no one can be holding the new file that a
            # later locker creates under this name (module doc). Without advisory locks
            # (Windows) the file stays: an open file cannot be removed there.
            if fcntl is not None and _still_named(descriptor, lock):
                os.unlink(lock)
        except OSError:  # the folder went away meanwhile: nothing to clean up
            pass
        finally:
            os.close(descriptor)
