"""Long-lived helper processes for tests that need a fresh interpreter (logical CPU
devices configured before TensorFlow starts, or no wsdhash importable), so that each
such test pays TensorFlow's start-up once per test process instead of once per test.

Test side:

    result = worker("contract", [sys.executable, SCRIPT, "--serve"]).call({"x": 1})

Helper side (the script, when given --serve):

    serve_requests(handle)   # handle(request dict) -> result dict

One JSON request per line on the helper's stdin, one JSON answer per line on a private
copy of its stdout; whatever the helper prints (progress, logs) goes to its stderr,
kept in a temporary file whose tail is shown when the helper fails or dies. A failed
request raises AssertionError with the helper's traceback, and the helper stays up for
the next request; a dead helper is started again by the next `worker` call. There are
no timeouts (a busy machine must not fail a test).

This module imports neither TensorFlow nor wsdhash.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import traceback

_WORKERS: dict[str, Worker] = {}


class Worker:
    """One helper process (module doc)."""

    def __init__(self, argv: list[str], env: dict | None = None, cwd: str | None = None):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="worker_", suffix=".log")
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
            cwd=cwd,
            bufsize=1,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, size: int = 4000) -> str:
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            return f.read()[-size:]

    def call(self, request: dict) -> dict:
        """Sends one request and waits for its answer (no timeout)."""
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise AssertionError(f"helper process died (exit {code}):\n{self.log_tail()}")
        answer = json.loads(line)
        if "error" in answer:
            raise AssertionError(f"{answer['error']}\n--- helper log ---\n{self.log_tail()}")
        return answer

    def close(self) -> None:
        if self.alive():
            self.process.stdin.close()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


def worker(name: str, argv: list[str], env: dict | None = None, cwd: str | None = None) -> Worker:
    """The test process's helper `name`, started on first use (or again after it died)."""
    current = _WORKERS.get(name)
    if current is None or not current.alive():
        if current is not None:
            current.close()
        current = _WORKERS[name] = Worker(argv, env, cwd)
    return current


@atexit.register
def _close_all() -> None:
    for current in _WORKERS.values():
        current.close()
    _WORKERS.clear()


def serve_requests(handle) -> None:
    """The helper's loop (module doc): answers each stdin line with handle's result."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # prints now go to the log
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = handle(json.loads(line)) or {}
        except BaseException:  # noqa: BLE001 - reported to the test, the helper stays up
            answer = {"error": traceback.format_exc()[-6000:]}
        sys.stdout.flush()
        answers.write(json.dumps(answer) + "\n")
