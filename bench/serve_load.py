"""Load on the image-search service over loopback, against the same search without HTTP.

    python bench/serve_load.py [--model=checkpoints/demo/wsdhq_32/saved_model]
        [--index=checkpoints/demo/index] [--clients=4] [--seconds=10] [--k=10]

1. The direct path: the SavedModel and the index in this process
   (`SearchEngine.direct_search`), one query image per call, each query image timed,
   alternating query by query with
2. the service (`python -m wsdhash.serve` in a child process on 127.0.0.1): the same
   images one request at a time (batch 1: the overhead ratio HTTP p50 / direct p50,
   goal under 1.5 with the lean client below, and the median time HTTP adds to a
   query, in ms), then `--clients` concurrent clients for `--seconds` seconds:
   requests/s, p50/p99 latency, errors, and the service's resident memory (VmRSS)
   before and after the load; that rate is its measured capacity.
3. Overload (load shedding): `--overload_threads` lean clients send requests on an
   open-loop schedule at `--overload_factor` (2) times the measured capacity, for at
   most `--overload_seconds` and `--overload_requests` requests. The service must
   refuse what it cannot take at once (503 with Retry-After, from its bounded queue:
   `--serve_flags=--workers=N,--max_queue=M` size it): the report gives the offered and
   answered rates, the share of 503s and how fast they came back (p50/p99), p50/p99 of
   the admitted requests, and one request right after the load stops (it must be
   answered normally, at about the batch-1 latency).

At batch 1 each query goes, interleaved with the direct path, through two clients, each
on one kept-alive connection: the standard library's http.client with a multipart
upload built by hand (the lean client: its ratio is what HTTP and the service add, the
goal's overhead), and httpx (a multipart upload per query, as a Python program would
call the service; httpx itself costs about a millisecond more per request on a 2-core
machine, whose cores the client shares with the service). The concurrent load uses
httpx (a `Client` per thread). `--intra_op_threads` / `--inter_op_threads` apply to both
the direct path and the service; `--serve_flags` passes more flags to the service (e.g.
`--serve_flags=--http=h11,--loop=asyncio`). The report names the service's HTTP parser,
event loop and TensorFlow threads.

The quickest honest model and index: the demo's architecture and data at a few
training steps (speed does not depend on the weights), about 80 s on 2 cores:
`python -m wsdhash.demo --workdir=/tmp/demo --data_dir=/tmp/builtin --bits=32
--methods=lsh --trained=wsdhq --train_steps=20`, then
`--model=/tmp/demo/wsdhq_32/saved_model --index=/tmp/demo/index`.

Run it from the repository root (the service is started as `python -m wsdhash.serve`
in the current folder, so it serves this checkout's code). Only 127.0.0.1 is contacted; every loop is bounded in time and the child is stopped
at the end, so the benchmark stops by itself. The defaults are the main job's outputs
(`python -m wsdhash.demo`).
`bench/run_all.py` runs it among the other benchmarks (`--quick`: 10 query images, one
round, 2 clients for 3 s).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import machine_info
import numpy as np
import results
from absl import app, flags

_MODEL = flags.DEFINE_string("model", "checkpoints/demo/wsdhq_32/saved_model", "SavedModel.")
_INDEX = flags.DEFINE_string("index", "checkpoints/demo/index", "Index folder.")
_IMAGES_ROOT = flags.DEFINE_string("images_root", None, "Database images (default: the index's).")
_CLIENTS = flags.DEFINE_integer("clients", 4, "Concurrent clients.")
_SECONDS = flags.DEFINE_float("seconds", 10.0, "Seconds of concurrent load.")
_K = flags.DEFINE_integer("k", 10, "Neighbours per query.")
_QUERIES = flags.DEFINE_integer("queries", 30, "Query images (database images, spread out).")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Passes over the query images, direct and batch 1.")
_INTRA = flags.DEFINE_integer(
    "intra_op_threads",
    0,
    "TensorFlow's intra-op threads, in this process (the direct path) and the service's "
    "--intra_op_threads alike (0: TensorFlow's choice).",
)
_INTER = flags.DEFINE_integer(
    "inter_op_threads", 0, "TensorFlow's inter-op threads, both sides alike (0: its choice)."
)
_SERVE_FLAGS = flags.DEFINE_list(
    "serve_flags", [], "More flags for the service, e.g. --serve_flags=--http=h11,--loop=asyncio."
)
_OVERLOAD_FACTOR = flags.DEFINE_float(
    "overload_factor", 2.0, "Overload rate as a multiple of the measured capacity (0: skip)."
)
_OVERLOAD_SECONDS = flags.DEFINE_float("overload_seconds", 10.0, "Longest overload, seconds.")
_OVERLOAD_REQUESTS = flags.DEFINE_integer("overload_requests", 5000, "Most overload requests.")
_OVERLOAD_THREADS = flags.DEFINE_integer(
    "overload_threads", 32, "Client threads of the overload (each one connection at a time)."
)
_STARTUP_S = 600  # the service loads TensorFlow and the model: generous on a busy machine
_REQUEST_S = 120  # a single request's ceiling (the service's own limit is 30 s)


def _percentiles(latencies):
    values = np.asarray(latencies) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_service(port: int, log_path: str):
    command = [
        sys.executable,
        "-m",
        "wsdhash.serve",
        f"--model={_MODEL.value}",
        f"--index={_INDEX.value}",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--max_k={max(_K.value, 100)}",
        f"--intra_op_threads={_INTRA.value}",
        f"--inter_op_threads={_INTER.value}",
        *_SERVE_FLAGS.value,
    ]
    if _IMAGES_ROOT.value:
        command.append(f"--images_root={_IMAGES_ROOT.value}")
    log = open(log_path, "w")  # noqa: SIM115 (open for the child's lifetime)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return child, log


def _wait_until_up(client, url: str, child) -> None:
    import httpx

    deadline = time.monotonic() + _STARTUP_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"the service exited ({child.returncode}) while starting")
        try:
            if client.get(url + "healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.5)  # not listening yet
            continue
        time.sleep(0.5)
    raise SystemExit(f"the service did not come up in {_STARTUP_S} s")


def _post(client, url: str, blob: bytes):
    return client.post(url + "search", params={"k": _K.value}, files={"image": ("query.jpg", blob)})


class _PlainClient:
    """The same multipart request through the standard library's http.client on one
    kept-alive connection: what the service itself adds, with a lean client."""

    _BOUNDARY = "wsdhash-serve-load-boundary"

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=_REQUEST_S)

    def post(self, blob: bytes, check: bool = True) -> int:
        """Posts one query; returns the HTTP status (with `check`, anything but 200 ends
        the benchmark)."""
        head = (
            f'--{self._BOUNDARY}\r\nContent-Disposition: form-data; name="image"; '
            'filename="query.jpg"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        body = head.encode() + blob + f"\r\n--{self._BOUNDARY}--\r\n".encode()
        kind = f"multipart/form-data; boundary={self._BOUNDARY}"
        self.connection.request("POST", f"/search?k={_K.value}", body, {"Content-Type": kind})
        response = self.connection.getresponse()
        answer = response.read()
        if check and response.status != 200:
            raise SystemExit(f"http.client: HTTP {response.status}: {answer[:200]!r}")
        if response.will_close:  # a 503 may close the connection: open the next one
            self.connection.close()
        return response.status

    def close(self) -> None:
        self.connection.close()


def _served_by(log_path: str) -> str:
    """The service's start-up line naming its HTTP parser, loop and TensorFlow threads."""
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if "uvicorn with" in line:
                return line.split(": ", 1)[1].strip()
    return "(its start-up line was not found)"


def _load(url: str, blobs: list[bytes]):
    """`--clients` threads posting queries for `--seconds`: (latencies, errors)."""
    import httpx

    latencies, errors, lock = [], [], threading.Lock()
    stop_at = time.monotonic() + _SECONDS.value

    def client_loop(number: int):
        mine, bad = [], []
        with httpx.Client(timeout=_REQUEST_S) as client:
            position = number
            while time.monotonic() < stop_at:
                blob = blobs[position % len(blobs)]
                position += _CLIENTS.value
                started = time.perf_counter()
                try:
                    response = _post(client, url, blob)
                    if response.status_code != 200:
                        bad.append(f"HTTP {response.status_code}: {response.text[:200]}")
                except Exception as error:  # noqa: BLE001 (counted as an error)
                    bad.append(repr(error)[:200])
                mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(_CLIENTS.value)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - started


def _overload(port: int, blobs: list[bytes], rate: float):
    """Open-loop requests at `rate` per second, bounded in time and count: a list of
    (status or error text, seconds) and the seconds the schedule took."""
    answers, lock, counter = [], threading.Lock(), [0]
    started = time.perf_counter()
    stop_at = started + _OVERLOAD_SECONDS.value

    def sender():
        client, mine = _PlainClient(port), []
        while True:
            with lock:
                number = counter[0]
                counter[0] += 1
            due = started + number / rate
            if number >= _OVERLOAD_REQUESTS.value or due >= stop_at:
                break
            time.sleep(max(0.0, due - time.perf_counter()))
            sent = time.perf_counter()
            try:
                status = client.post(blobs[number % len(blobs)], check=False)
            except (OSError, http.client.HTTPException) as error:
                status = repr(error)[:100]
                client.close()
                client = _PlainClient(port)
            mine.append((status, time.perf_counter() - sent))
        client.close()
        with lock:
            answers.extend(mine)

    threads = [threading.Thread(target=sender) for _ in range(_OVERLOAD_THREADS.value)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers, time.perf_counter() - started


def _overload_rows(answers, elapsed, capacity, rate, recovery, batch1_p50):
    admitted = [seconds for status, seconds in answers if status == 200]
    shed = [seconds for status, seconds in answers if status == 503]
    other = [status for status, _ in answers if status not in (200, 503)]
    share = len(shed) / max(1, len(answers))
    admitted_p50, admitted_p99 = _percentiles(admitted) if admitted else (float("nan"),) * 2
    shed_p50, shed_p99 = _percentiles(shed) if shed else (float("nan"),) * 2
    status, seconds = recovery
    rows = [
        (
            f"overload: {_OVERLOAD_FACTOR.value:g}x capacity ({capacity:.0f}/s)",
            (
                f"offered {rate:.0f}/s, sent {len(answers) / elapsed:.0f}/s for {elapsed:.1f} s "
                f"({len(answers)} requests)"
            ),
        ),
        ("  answered 503 (shed)", f"{share:.0%}: p50 {shed_p50:.1f} ms  p99 {shed_p99:.1f} ms"),
        (
            "  admitted (200)",
            (
                f"{len(admitted)} ({len(admitted) / elapsed:.0f}/s): p50 {admitted_p50:.1f} ms  "
                f"p99 {admitted_p99:.1f} ms"
            ),
        ),
        ("  other answers or errors", f"{len(other)} {sorted(set(map(str, other)))[:3]}"),
        (
            "  first request after the load",
            f"HTTP {status} in {seconds * 1000:.1f} ms (batch-1 p50 {batch1_p50:.1f} ms)",
        ),
    ]
    results.record("serve", "overload 503 share", share * 100, "%", f"{rate:.0f}/s offered")
    results.record("serve", "overload 503 p99 latency", shed_p99, "ms")
    results.record("serve", "overload admitted p99 latency", admitted_p99, "ms")
    results.record("serve", "first request after overload", seconds * 1000, "ms", f"HTTP {status}")
    return rows


def main(argv):
    del argv
    import logging

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request

    from wsdhash.service import engine as engine_lib

    print(machine_info.describe())
    for name, path in (("--model", _MODEL.value), ("--index", _INDEX.value)):
        if not os.path.isdir(path):
            raise SystemExit(
                f"serve_load: {name}={path} does not exist: run `python -m wsdhash.demo` "
                "first (it writes both), or pass --model and --index"
            )
    import tensorflow as tf

    # The direct path runs with the service's thread settings: the ratio compares the
    # same model call with and without HTTP.
    if _INTRA.value:
        tf.config.threading.set_intra_op_parallelism_threads(_INTRA.value)
    if _INTER.value:
        tf.config.threading.set_inter_op_parallelism_threads(_INTER.value)
    engine = engine_lib.load(_MODEL.value, _INDEX.value, _IMAGES_ROOT.value, check_images=0)
    count = min(_QUERIES.value, engine.index.num_items)
    positions = np.unique(np.linspace(0, engine.index.num_items - 1, count).astype(int))
    blobs = []
    for position in positions:
        path = engine.item_file(int(position))
        if path:
            with open(path, "rb") as f:
                blobs.append(f.read())
    if not blobs:
        raise SystemExit("no database image can be read: pass --images_root")

    for blob in blobs[:3]:
        engine.direct_search([blob], _K.value)  # warm-up (traces, allocations)

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as scratch:
        child, log = _start_service(port, os.path.join(scratch, "serve.log"))
        try:
            with httpx.Client(timeout=_REQUEST_S) as client:
                _wait_until_up(client, url, child)
                for blob in blobs[:5]:
                    _post(client, url, blob).raise_for_status()  # warm-up
                plain = _PlainClient(port)
                for blob in blobs[:5]:
                    plain.post(blob)  # warm-up
                memory_before = _rss_mib(child.pid)
                # Direct and HTTP alternate query by query, so a change in the machine's
                # load (it is shared) reaches every side of the ratios alike.
                direct, sequential, lean = [], [], []
                for _ in range(_ROUNDS.value):
                    for blob in blobs:
                        started = time.perf_counter()
                        engine.direct_search([blob], _K.value)
                        direct.append(time.perf_counter() - started)
                        started = time.perf_counter()
                        _post(client, url, blob).raise_for_status()
                        sequential.append(time.perf_counter() - started)
                        started = time.perf_counter()
                        plain.post(blob)
                        lean.append(time.perf_counter() - started)
                plain.close()
                served_by = _served_by(os.path.join(scratch, "serve.log"))
            latencies, errors, elapsed = _load(url, blobs)
            memory_after = _rss_mib(child.pid)
            overload = None
            if _OVERLOAD_FACTOR.value > 0 and latencies:
                capacity = len(latencies) / elapsed
                rate = capacity * _OVERLOAD_FACTOR.value
                answers, overload_s = _overload(port, blobs, rate)
                after = _PlainClient(port)  # at once: no pause between the load and it
                sent = time.perf_counter()
                try:
                    status = after.post(blobs[0], check=False)
                except (OSError, http.client.HTTPException) as error:
                    status = repr(error)[:100]
                recovery = (status, time.perf_counter() - sent)
                after.close()
                overload = (answers, overload_s, capacity, rate, recovery)
        finally:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            log.close()

    direct_p50, direct_p99 = _percentiles(direct)
    http_p50, http_p99 = _percentiles(sequential)
    lean_p50, lean_p99 = _percentiles(lean)
    lean_ratio = lean_p50 / direct_p50
    lean_added = float(np.median(np.subtract(lean, direct)) * 1000)
    load_p50, load_p99 = _percentiles(latencies) if latencies else (float("nan"),) * 2
    ratio = http_p50 / direct_p50
    # What HTTP adds to a query (same image, back to back): the ratio alone hides it
    # once the model call is a few milliseconds.
    added = float(np.median(np.subtract(sequential, direct)) * 1000)
    rate = len(latencies) / elapsed
    print(f"\nservice: {served_by}")
    print(
        f"{engine.kind} index of {engine.index.num_items} items, {engine.bits}-bit model, "
        f"{len(blobs)} query images, k={_K.value}"
    )
    rows = [
        (
            "direct (SavedModel + index), batch 1",
            f"p50 {direct_p50:.1f} ms  p99 {direct_p99:.1f} ms",
        ),
        (
            "HTTP (http.client), one client, batch 1",
            f"p50 {lean_p50:.1f} ms  p99 {lean_p99:.1f} ms",
        ),
        ("HTTP overhead (p50 HTTP / p50 direct)", f"{lean_ratio:.2f}x (goal < 1.5x)"),
        ("HTTP time added per query (median)", f"{lean_added:.1f} ms"),
        ("HTTP (httpx), batch 1", f"p50 {http_p50:.1f} ms  p99 {http_p99:.1f} ms"),
        ("  its overhead / time added (median)", f"{ratio:.2f}x / {added:.1f} ms"),
        (
            f"HTTP, {_CLIENTS.value} clients for {_SECONDS.value:g} s",
            f"{rate:.1f} requests/s  p50 {load_p50:.1f} ms  p99 {load_p99:.1f} ms",
        ),
        ("errors", f"{len(errors)} of {len(latencies)}"),
        (
            "service memory (VmRSS)",
            (
                f"{memory_before:.0f} MiB before, {memory_after:.0f} MiB after "
                f"({memory_after - memory_before:+.0f} MiB)"
            ),
        ),
    ]
    if overload is not None:
        rows += _overload_rows(*overload, lean_p50)
    for name, value in rows:
        print(f"  {name:<42} {value}")
    for error in errors[:5]:
        print(f"  error: {error}")
    results.record("serve", "direct p50 latency", direct_p50, "ms")
    results.record("serve", "HTTP p50 latency, batch 1", http_p50, "ms")
    results.record("serve", "HTTP overhead vs direct, http.client", lean_ratio, "x")
    results.record("serve", "HTTP time added per query, http.client", lean_added, "ms")
    results.record("serve", "HTTP overhead vs direct, httpx", ratio, "x")
    results.record("serve", "HTTP time added per query, httpx", added, "ms")
    results.record("serve", "requests/s", rate, "1/s", f"{_CLIENTS.value} clients")
    results.record("serve", "p99 latency under load", load_p99, "ms", f"{_CLIENTS.value} clients")
    results.record("serve", "errors", len(errors), "requests")
    results.record("serve", "memory growth under load", memory_after - memory_before, "MiB")


if __name__ == "__main__":
    app.run(main)
