"""What every command-line entry point shares: one-line errors, `--verbose`, a log file.

A user-facing command that fails prints one line on stderr, `<command>: error: <what>`,
naming the flag, file or value at fault, and exits non-zero: 2 for bad usage (a flag,
an argument, an input file the user named: `UsageError`), 1 for anything else. The
traceback goes to the command's log file (`--log_file`, else the run folder the command
set with `set_log_file`, else `<tmp>/wsdhash-logs/<command>.log`) and, with
`--verbose`, to stderr as well. Every numeric flag is checked against its range
(wsdhash/flag_bounds.py) right after parsing, before the command starts.

Native logs: TensorFlow's C++ start-up lines (oneDNN, CUDA, CPU features), absl's C++
logging and anything else written to file descriptor 2 by a library go to the log file
while a command runs; the command's own lines (`sys.stderr`: errors, warnings,
progress) still reach the terminal (`native_logs_to_file`). `--verbose` leaves them on
stderr. Processes the command starts inherit the redirection.

Entry points call `run(main, name)` instead of `absl.app.run(main)`. It expands
`--flagfile=` itself (wsdhash/flagfiles.py), so that a flagfile named inside another
is found beside the file that names it, whatever the working directory.

TensorFlow settings: `run` sets `TF_ENABLE_ONEDNN_OPTS=1` (oneDNN's CPU kernels, off
by TensorFlow's default on some CPUs) before the command imports TensorFlow, unless the
user's environment already sets it: `TF_ENABLE_ONEDNN_OPTS=0 wsdhash-train ...` keeps
TensorFlow's own kernels. On a 2-core AMD EPYC, oneDNN trained CaffeNet, AlexNet and
ResNet-18 1.44-2.0x and encoded 1.25-2.1x faster (bench/train_speed.py --compare;
issue 15 had measured 1.18-1.35x and 1.13-1.32x); it changes float rounding (codes agree
to about 2e-6 of their scale, not bit for bit, with the other kernels). Every entry
module imports TensorFlow only inside `main`, after `run` has set the variable.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import tempfile
import traceback
from collections.abc import Callable

from absl import app, flags
from absl import logging as absl_logging

from wsdhash import flag_bounds, flagfiles

FLAGS = flags.FLAGS


def define_run_flags() -> None:
    """--verbose and --log_file, which `run` gives every command (defined by `run`, not
    at import: a library module that imports this one defines no flags)."""
    if "verbose" not in FLAGS:
        flags.DEFINE_bool("verbose", False, "On an error, also print its traceback on stderr.")
    if "log_file" not in FLAGS:
        flags.DEFINE_string(
            "log_file", None, "Where tracebacks of errors are appended (default: see wsdhash.cli)."
        )


def _flag(name: str):
    """A parsed `run` flag's value; None before parsing or outside `run`."""
    return getattr(FLAGS, name) if FLAGS.is_parsed() and name in FLAGS else None


EXIT_ERROR = 1
EXIT_USAGE = 2

# Environment defaults for TensorFlow, applied before it is imported (module doc).
TENSORFLOW_ENVIRONMENT_DEFAULTS = {"TF_ENABLE_ONEDNN_OPTS": "1"}


def set_tensorflow_defaults() -> None:
    """Sets `TENSORFLOW_ENVIRONMENT_DEFAULTS` where the environment does not set them.

    Effective only before TensorFlow is imported (it reads them at import)."""
    for name, value in TENSORFLOW_ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)


class UsageError(app.UsageError):
    """Bad input from the user: a flag value, a file or its contents. The message names
    the flag or file and says what to do; it is printed as one line."""

    def __init__(self, message: str, exitcode: int = EXIT_USAGE):
        super().__init__(message, exitcode)


_log_file: str | None = None


def set_log_file(path: str) -> None:
    """Tracebacks of this process's errors go to `path` (e.g. `<workdir>/errors.log`)."""
    global _log_file
    _log_file = path


def log_file_path(name: str) -> str:
    if _flag("log_file"):
        return _flag("log_file")
    if _log_file:
        return _log_file
    return os.path.join(tempfile.gettempdir(), "wsdhash-logs", f"{name}.log")


def one_line(error: BaseException) -> str:
    """The error's message on one line (whitespace runs, newlines included, become one
    space); the exception type is named when the message does not speak for itself."""
    text = " ".join(str(error).split())
    if isinstance(error, (app.UsageError, flags.Error)):
        return text
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = str(error.args[0])
    name = type(error).__name__
    return f"{name}: {text}" if text else name


def _write_traceback(name: str, error: BaseException) -> str | None:
    path = log_file_path(name)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            f.write(f"--- {stamp} {name} {' '.join(sys.argv[1:])}\n")
            f.write("".join(traceback.format_exception(error)))
    except OSError:
        return None
    return path


def report_error(name: str, error: BaseException) -> int:
    """Prints the one-line error (and, with --verbose, the traceback); returns the exit
    status."""
    usage = isinstance(error, (app.UsageError, flags.Error))
    path = _write_traceback(name, error)
    line = f"{name}: error: {one_line(error)}"
    verbose = bool(_flag("verbose"))
    if verbose:
        traceback.print_exception(error, file=sys.stderr)
    elif not usage and path:
        line += f" (traceback in {path}; --verbose prints it)"
    print(line, file=sys.stderr, flush=True)
    if usage:
        return getattr(error, "exitcode", EXIT_USAGE) or EXIT_USAGE
    return EXIT_ERROR


@contextlib.contextmanager
def native_logs_to_file(name: str):
    """File descriptor 2 appended to the command's log file inside the block, with
    `sys.stderr` kept on the terminal (module doc); a no-op where fd 2 cannot be
    duplicated or the log file opened."""
    path = log_file_path(name)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    except OSError:
        yield
        return
    try:
        terminal = os.dup(2)
    except OSError:
        os.close(log)
        yield
        return
    previous = sys.stderr
    previous.flush()
    encoding = getattr(previous, "encoding", None) or "utf-8"
    # Closed in the finally below (a `with` cannot span the yield's caller).
    sys.stderr = open(
        terminal,
        "w",
        buffering=1,
        encoding=encoding,  # noqa: SIM115
        errors="backslashreplace",
        closefd=False,
    )
    os.dup2(log, 2)
    os.close(log)
    # absl's Python handler (the commands' own INFO lines: stages, "Resumed from ...")
    # keeps writing where `sys.stderr` goes.
    handler = absl_logging.get_absl_handler().python_handler
    repointed = handler.stream is previous
    if repointed:
        handler.stream = sys.stderr
    try:
        yield
    finally:
        sys.stderr.flush()
        if repointed and handler.stream is sys.stderr:
            handler.stream = previous
        os.dup2(terminal, 2)
        sys.stderr.close()
        os.close(terminal)
        sys.stderr = previous


def help_from_command_module(main: Callable) -> None:
    """Makes `--help` show the docstring and flags of the module that defines `main`,
    however the command was started: absl's help shows the `__main__` module's, which is
    a shim (`python -m wsdhash.train`, wsdhash/train.py) or a console script
    (`wsdhash-train`), not the command module in wsdhash/commands/."""
    module = sys.modules.get(getattr(main, "__module__", ""))
    entry = sys.modules.get("__main__")
    if module is None or entry is None or module is entry:
        return
    if module.__doc__:
        entry.__doc__ = module.__doc__
    for flag in FLAGS.get_key_flags_for_module(module.__name__):
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run(
    main: Callable[[list[str]], int | None], name: str, pass_unknown_flags: bool = False
) -> None:
    """`absl.app.run(main)` with one-line errors for bad flags and failures, after
    `set_tensorflow_defaults()`.

    With `pass_unknown_flags`, a `--flag` the command does not define is not an error:
    it stays in the `argv` that `main` gets, in order (with its value when that is the
    next argument), for `main` to hand on (`python -m wsdhash.pipeline` gives them to
    Beam, which checks them). The command's own flags are parsed and bounded as ever,
    flagfiles included."""
    set_tensorflow_defaults()
    define_run_flags()
    help_from_command_module(main)

    def parse(argv: list[str]) -> list[str]:
        try:
            rest = FLAGS(flagfiles.expand(argv), known_only=pass_unknown_flags)
            flag_bounds.check(FLAGS)
        except flags.Error as error:
            sys.exit(report_error(name, error))
        except ValueError as error:  # a number out of its range
            sys.exit(report_error(name, UsageError(str(error))))
        return rest

    def guarded(argv: list[str]) -> int | None:
        try:
            if FLAGS.verbose:
                return main(argv)
            with native_logs_to_file(name):
                return main(argv)
        except SystemExit:
            raise
        except KeyboardInterrupt:
            print(f"{name}: interrupted", file=sys.stderr)
            sys.exit(130)
        except Exception as error:  # noqa: BLE001 (every failure becomes one line)
            sys.exit(report_error(name, error))

    app.run(guarded, flags_parser=parse)
