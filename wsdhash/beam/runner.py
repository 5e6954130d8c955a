"""How `python -m wsdhash.pipeline` runs Beam: options, runner and logging.

Options: the command parses its own flags (absl, bounded, one-line errors) and hands
every other `--flag` to Beam as a pipeline option (`pipeline_options`): `--runner`,
`--direct_num_workers`, `--direct_running_mode`, and any option of Dataflow, Flink or
Spark. A flag that neither the command nor any of Beam's option classes knows (a
misspelt `--batchsize`), a bad value of a Beam option, or a stray argument is a
one-line error, where Beam alone would drop the first with a warning and print its
whole usage for the second.

Runner: without `--runner`, or with `--runner=DirectRunner`, the pipeline runs on
Beam's Python FnApiRunner, the engine behind the DirectRunner's `--direct_num_workers`
and `--direct_running_mode` (in_memory, multi_threading, multi_processing). Beam
2.78's DirectRunner would first try its Go PrismRunner, which it downloads from
GitHub on first use (offline: a failed download, then this same fallback); ask for it
with `--runner=PrismRunner`.

Logging: Beam logs through Python's `logging`, which `log_to_file` sends to the
command's log file (wsdhash/cli.py); `cli.run` sends the process's file descriptor 2
there too (`cli.native_logs_to_file`), so that TensorFlow's C++ lines and the logs of
the worker processes that `multi_processing` starts (they inherit it) land in the file
as well. The terminal shows the command's own lines on stdout (stages,
counts, the output) and, after the file is let go, its one-line error.

Defines no flags.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os

# The runners this module starts itself in place of Beam's DirectRunner (module doc).
_DIRECT = {"directrunner", "direct"}
_DEFAULT_RUNNER = "FnApiRunner"


def _check_arguments(args: list[str]) -> None:
    """A non-flag argument is allowed only as the value of the `--flag` before it."""
    for i, arg in enumerate(args):
        if arg.startswith("-"):
            continue
        previous = args[i - 1] if i else ""
        if not (previous.startswith("--") and "=" not in previous):
            raise ValueError(f"unexpected argument {arg!r} (flags are --name=value).")


def pipeline_options(args: list[str]):
    """Beam's `PipelineOptions` from the flags the command did not define.

    Args:
        args: the leftover command line, e.g. ["--runner=DataflowRunner",
            "--project", "p", "--direct_num_workers=2"].

    Returns:
        The options, with the runner set (module doc).

    Raises:
        ValueError: one line naming a flag that is no Beam option, a bad value of one,
            or a stray argument.
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    _check_arguments(args)
    options = PipelineOptions(args)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):  # argparse prints its usage there
            known = options.get_all_options(retain_unknown_options=False)
            every = options.get_all_options(retain_unknown_options=True)
    except SystemExit:
        lines = [line for line in stderr.getvalue().splitlines() if "error:" in line]
        problem = lines[-1].split("error:", 1)[1].strip() if lines else "bad Beam option"
        raise ValueError(f"Beam pipeline option: {problem}.") from None
    unknown = sorted(set(every) - set(known))
    if unknown:
        raise ValueError(
            f"unknown flag{'s' if len(unknown) > 1 else ''} "
            f"{', '.join('--' + name for name in unknown)}: neither a wsdhash.pipeline flag "
            "nor an Apache Beam pipeline option."
        )
    standard = options.view_as(StandardOptions)
    if standard.runner is None or standard.runner.lower() in _DIRECT:
        standard.runner = _DEFAULT_RUNNER
    return options


def runner_name(options) -> str:
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    return runner if isinstance(runner, str) else type(runner).__name__


def describe(options) -> str:
    """The runner in words: "FnApiRunner (multi_processing, 2 workers)"."""
    from apache_beam.options.pipeline_options import DirectOptions

    name = runner_name(options)
    if name != _DEFAULT_RUNNER:
        return name
    direct = options.view_as(DirectOptions)
    workers = direct.direct_num_workers
    mode = direct.direct_running_mode
    return f"{name} ({mode}, {workers or os.cpu_count()} worker{'s' if workers != 1 else ''})"


def is_local(options) -> bool:
    """Whether the workers run on this machine (they can write its disks)."""
    from apache_beam.options.pipeline_options import StandardOptions

    return runner_name(options) in StandardOptions.LOCAL_RUNNERS


def temp_location(options) -> str | None:
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    return options.view_as(GoogleCloudOptions).temp_location


def log_to_file(path: str) -> None:
    """Sends Python logging (Beam's, TensorFlow's, absl's) to `path` only (module doc)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
