"""Machine-readable benchmark results, next to each benchmark's printed report.

Each benchmark calls `record(...)` for its headline numbers. When the environment
variable WSDHASH_BENCH_RESULTS names a file (bench/run_all.py sets it), every record is
appended to it as one JSON line; otherwise `record` does nothing, so each benchmark
still runs on its own and prints as before.
"""

from __future__ import annotations

import json
import os

ENV = "WSDHASH_BENCH_RESULTS"


def record(benchmark: str, metric: str, value: float, unit: str, notes: str = "") -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    row = {"benchmark": benchmark, "metric": metric, "value": float(value), "unit": unit}
    if notes:
        row["notes"] = notes
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
