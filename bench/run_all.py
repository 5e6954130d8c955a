"""Runs every benchmark, prints one table and writes the results to JSON.

    python bench/run_all.py [--quick] [--only=eval_speed,search_speed] [--output=FILE]

Each benchmark runs in its own process (so memory peaks are its own) with
WSDHASH_BENCH_RESULTS pointing at a scratch file its `results.record` calls append to.
The JSON (default `bench_results/<UTC time>.json`) holds the machine description, the
git commit, package versions, the flags and every row, so runs can be compared over
time. `--quick` runs each benchmark at a small size (a smoke test; the numbers are not
the published-scale ones).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time

import machine_info  # noqa: E402  (bench/ is on the path)
import results  # noqa: E402
from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
# name -> (full-scale flags, quick flags)
BENCHMARKS = {
    "input_pipeline": ([], ["--images=200", "--epochs=1", "--rounds=1"]),
    "train_speed": (
        ["--backbones=small_cnn,resnet18,resnet50"],
        ["--backbones=small_cnn", "--steps=3"],
    ),
    "eval_speed": (
        ["--common_queries=100"],
        ["--num_queries=200", "--num_database=20000", "--common_queries=20"],
    ),
    "aqd_speed": (
        [],
        ["--num_queries=100", "--num_database=20000", "--num_train=1000", "--check_queries=10"],
    ),
    "search_speed": (
        [],
        ["--num_database=20000", "--num_queries=100", "--num_clustered=10000"],
    ),
    "scale": (
        [],
        [
            "--num_items=200000",
            "--shard_items=50000",
            "--aqd_items=50000",
            "--aqd_shard_items=10000",
            "--repeats=3",
        ],
    ),
    "features_training": ([], ["--quick"]),
    "adsh_update": ([], ["--num_database=20000", "--num_samples=500"]),
    "methods": (
        [],
        [
            "--steps=4",
            "--bits=16",
            "--builtin_sizes=300,30,100",
            "--data_dir=bench_results/quick_builtin",
            "--workdir=bench_results/quick_methods",
            "--output=bench_results/quick_methods.md",
        ],
    ),
    # Needs the main job's model and index (python -m wsdhash.demo).
    "serve_load": ([], ["--queries=10", "--rounds=1", "--clients=2", "--seconds=3"]),
}

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Small sizes: a smoke run, not the reference numbers.")
flags.DEFINE_list("only", [], f"Benchmarks to run (default: all of {list(BENCHMARKS)}).")
flags.DEFINE_string("output", None, "JSON file (default: bench_results/<UTC time>.json).")
flags.DEFINE_integer("timeout", 3600, "Seconds per benchmark.")


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("wsdhash", "tensorflow", "keras", "numpy", "faiss-cpu", "h5py"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def main(argv):
    del argv
    names = FLAGS.only or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise app.UsageError(f"--only: unknown {unknown}; known: {list(BENCHMARKS)}.")
    started = datetime.datetime.now(datetime.UTC)
    report = {
        "machine": machine_info.describe(),
        "git_commit": _git_commit(),
        "packages": _versions(),
        "started_utc": started.isoformat(timespec="seconds"),
        "quick": FLAGS.quick,
        "rows": [],
        "failures": [],
    }
    print(f"machine: {report['machine']}")
    for name in names:
        full, quick = BENCHMARKS[name]
        extra = quick if FLAGS.quick else full
        with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as scratch:
            path = scratch.name
        env = dict(os.environ, **{results.ENV: path}, TF_CPP_MIN_LOG_LEVEL="2")
        start = time.perf_counter()
        try:
            done = subprocess.run(
                [sys.executable, os.path.join(HERE, f"{name}.py"), *extra],
                capture_output=True,
                text=True,
                env=env,
                timeout=FLAGS.timeout,
            )
            failed = done.returncode != 0
            reason = done.stderr.strip().splitlines()[-1:] if failed else []
        except subprocess.TimeoutExpired:
            failed, reason = True, [f"timed out after {FLAGS.timeout} s"]
        seconds = time.perf_counter() - start
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        os.unlink(path)
        for row in rows:
            row["flags"] = extra
        report["rows"].extend(rows)
        if failed:
            report["failures"].append({"benchmark": name, "reason": " ".join(reason)})
        status = "FAILED: " + " ".join(reason) if failed else f"{len(rows)} results"
        print(f"{name}: {status} ({seconds:.0f} s)")
    print(f"\n{'benchmark':<16}{'metric':<52}{'value':>14}  unit")
    for row in report["rows"]:
        print(f"{row['benchmark']:<16}{row['metric'][:51]:<52}{row['value']:>14.4g}  {row['unit']}")
    output = FLAGS.output or os.path.join(
        "bench_results", started.strftime("%Y%m%dT%H%M%SZ") + ".json"
    )
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output + ".tmp", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    os.replace(output + ".tmp", output)
    print(f"\nresults written to {output}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    app.run(main)
