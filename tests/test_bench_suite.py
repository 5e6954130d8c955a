"""bench/run_all.py: one command runs the benchmarks and writes comparable JSON."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_run_writes_rows_with_the_machine(tmp_path):
    pytest.importorskip("faiss")
    output = tmp_path / "results.json"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "bench", "run_all.py"),
            "--quick",
            "--only=eval_speed,search_speed",
            f"--output={output}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(output.read_text())
    assert report["quick"] and not report["failures"]
    assert "logical cores" in report["machine"] and report["packages"]["numpy"]
    metrics = {(r["benchmark"], r["metric"]) for r in report["rows"]}
    assert ("evaluator", "wall time") in metrics
    assert ("search", "exact overhead vs raw FAISS") in metrics
    assert all(r["value"] >= 0 and r["flags"] for r in report["rows"])
    assert "exact overhead vs raw FAISS" in result.stdout  # the printed table


def test_unknown_benchmark_is_a_usage_error(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "run_all.py"), "--only=nope"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode != 0 and "unknown ['nope']" in result.stderr
