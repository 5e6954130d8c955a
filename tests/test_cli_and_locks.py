"""Entry-point plumbing: one-line errors with exit statuses, tracebacks only in the log
file or with --verbose; exclusive locks that another process sees and that die with
their holder (kill -9 included). No TensorFlow here: these processes start fast."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from wsdhash import file_lock

PROGRAM = textwrap.dedent("""
    import os
    import sys
    from absl import flags
    from wsdhash import cli

    flags.DEFINE_integer("every", 1, "A period.")
    FLAGS = flags.FLAGS

    def main(argv):
        if FLAGS.every < 1:
            raise cli.UsageError(f"--every must be >= 1, got {FLAGS.every}.")
        if FLAGS.every == 7:
            raise ValueError("a library error\\nspread over\\n  three lines")
        if FLAGS.every == 3:  # a library writing to fd 2 (TensorFlow's C++ logs)
            os.write(2, b"I0000 native start-up line\\n")
            print("wsdhash.toy: warning: our own line", file=sys.stderr)
        print("ok")

    cli.run(main, "wsdhash.toy")
""")


def _toy(tmp_path, *args):
    script = tmp_path / "toy.py"
    script.write_text(PROGRAM)
    return subprocess.run(
        [sys.executable, str(script), f"--log_file={tmp_path / 'toy.log'}", *args],
        check=False,
        capture_output=True,
        text=True,
    )


def test_usage_error_is_one_line_with_status_2(tmp_path):
    result = _toy(tmp_path, "--every=0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "wsdhash.toy: error: --every must be >= 1, got 0."
    ]
    assert "Traceback" in (tmp_path / "toy.log").read_text()


def test_bad_flag_value_is_one_line(tmp_path):
    result = _toy(tmp_path, "--every=often")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsdhash.toy: error:") and "often" in lines[0]


def test_failure_is_one_line_and_the_traceback_goes_to_the_log(tmp_path):
    result = _toy(tmp_path, "--every=7")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("wsdhash.toy: error: ValueError: a library error spread over three")
    assert str(tmp_path / "toy.log") in line
    log = (tmp_path / "toy.log").read_text()
    assert "Traceback" in log and "a library error" in log
    verbose = _toy(tmp_path, "--every=7", "--verbose")
    assert verbose.returncode == 1 and "Traceback (most recent call last)" in verbose.stderr


def test_success_prints_only_the_result(tmp_path):
    result = _toy(tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")


def test_native_stderr_goes_to_the_log_and_our_lines_to_the_terminal(tmp_path):
    result = _toy(tmp_path, "--every=3")
    assert result.returncode == 0 and result.stdout == "ok\n"
    assert result.stderr == "wsdhash.toy: warning: our own line\n"
    assert "I0000 native start-up line" in (tmp_path / "toy.log").read_text()
    verbose = _toy(tmp_path, "--every=3", "--verbose")  # everything on the terminal
    assert "I0000 native start-up line" in verbose.stderr


def test_unknown_flags_pass_through_when_the_command_asks(tmp_path):
    script = tmp_path / "relay.py"
    script.write_text(
        PROGRAM.replace('print("ok")', "print(argv[1:], FLAGS.every)").replace(
            'cli.run(main, "wsdhash.toy")', 'cli.run(main, "wsdhash.toy", pass_unknown_flags=True)'
        )
    )
    flagfile = tmp_path / "beam.flags"
    flagfile.write_text("--runner=X\n--every=3\n")

    def relay(*args):
        return subprocess.run(
            [sys.executable, str(script), *args], check=False, capture_output=True, text=True
        )

    result = relay("go", "--num_workers", "2", f"--flagfile={flagfile}", "--zone=z")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "['go', '--num_workers', '2', '--runner=X', '--zone=z'] 3\n"
    bad = relay("go", "--runner=X", "--every=often")  # its own flags are still checked
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert _toy(tmp_path, "--runner=X").returncode == 2  # without the option: an error


HOLDER = textwrap.dedent("""
    import sys, time
    from wsdhash import file_lock
    with file_lock.exclusive(sys.argv[1], "workdir", folder=True):
        print("locked", flush=True)
        time.sleep(600)
""")


def test_lock_is_exclusive_across_processes_and_dies_with_its_holder(tmp_path):
    workdir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(workdir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with (
            pytest.raises(file_lock.LockedError, match=f"pid {holder.pid}"),
            file_lock.exclusive(str(workdir), "workdir"),
        ):
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    # The kernel released the lock with the process; the lock file it left behind
    # blocks no one, and the next holder removes it.
    assert os.path.exists(workdir / ".lock")
    with file_lock.exclusive(str(workdir), "workdir"):
        pass
    assert not os.path.exists(workdir / ".lock")


def test_lock_is_exclusive_within_one_process_and_reusable(tmp_path):
    target = tmp_path / "index"
    with file_lock.exclusive(str(target), "index", folder=False) as lock:
        assert lock == f"{target}.lock" and os.path.exists(lock)
        with (
            pytest.raises(file_lock.LockedError, match="index"),
            file_lock.exclusive(str(target), "index", folder=False),
        ):
            pass
        assert os.path.exists(lock)  # the refused locker did not remove the holder's file
    assert os.listdir(tmp_path) == []  # released: no lock file left next to the target
    with file_lock.exclusive(str(target), "index", folder=False):
        pass
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError), file_lock.exclusive(str(tmp_path), "workdir"):
        raise RuntimeError("the block failed")
    assert os.listdir(tmp_path) == []  # released on an error too


def test_lockers_racing_the_removal_of_the_lock_file_still_exclude_each_other(tmp_path):
    """Threads lock and release one path as fast as they can (each `exclusive` opens its
    own descriptor, so they contend as processes do). A locker that opened the lock file
    just before its holder removed it must not hold the lock at the same time as one
    that created the next file: at most one thread is ever inside."""
    target, inside, overlaps, entered = str(tmp_path / "features.h5"), [], [], [0]
    stop = time.monotonic() + 2.0

    def contend():
        while time.monotonic() < stop:
            try:
                with file_lock.exclusive(target, folder=False):
                    inside.append(1)
                    if len(inside) > 1:
                        overlaps.append(len(inside))
                    entered[0] += 1
                    time.sleep(0)  # let the others run while this one holds the lock
                    inside.pop()
            except file_lock.LockedError:
                pass

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, to widen the race
    try:
        threads = [threading.Thread(target=contend) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert entered[0] > 100 and not overlaps, (entered[0], overlaps[:5])
    assert os.listdir(tmp_path) == []
