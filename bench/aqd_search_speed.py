"""AQD top-k search (`QuantizedIndex.search`) against FAISS on the same codebooks.

Scale: NUS-WIDE-21's, 2,100 queries x 193,734 items, M = 4 codebooks of K = 256
codewords in D = 300 (32-bit codes), k = 10 and 5000. Data: random Gaussian codebooks,
uniformly random codes and Gaussian queries (the search's cost does not depend on what
the codes mean; fitting a quantizer is bench/aqd_speed.py's business).

The peer: `faiss.IndexResidualQuantizer(D, M, 8, METRIC_INNER_PRODUCT,
ST_LUT_nonorm)` whose codebooks are set to the same (M, K, D) codebooks and whose codes
are set to the same (N, M) bytes (nothing is trained or re-encoded), i.e. FAISS's
additive-quantizer LUT search: one (Q, M, K) inner-product table per query batch, then a
scan of the codes summing M table entries per item into a k-heap, OpenMP over queries.
Both rank by <x_q, x_hat_n>, largest first; wsdhash returns -<x_q, x_hat_n>.

Each (implementation, k) runs in its own process, interleaved `--repeats` times
(wsdhash, faiss, wsdhash, ...), and the medians are printed with their ratios. Memory:
the peak resident set size during the search alone (Linux: VmHWM after resetting it
through /proc/self/clear_refs), minus the resident size just before it (data loaded).
A check compares the two top-k: the same items up to float32 rounding (FAISS sums the
M entries in order; wsdhash sums codebook pairs, so near-equal scores can swap).

    python bench/aqd_search_speed.py [--num_queries=2100] [--num_database=193734] [--k=10,5000]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import machine_info
import numpy as np
import results
from absl import app, flags

_NUM_QUERIES = flags.DEFINE_integer("num_queries", 2100, "Q, number of queries.")
_NUM_DATABASE = flags.DEFINE_integer("num_database", 193734, "N, database size.")
_DIMENSION = flags.DEFINE_integer("dimension", 300, "D, feature dimension.")
_NUM_CODEBOOKS = flags.DEFINE_integer("num_codebooks", 4, "M codebooks of 256 codewords.")
_K = flags.DEFINE_list("k", ["10", "5000"], "Neighbours per query.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Interleaved runs of each (medians reported).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the data.")
_THREADS = flags.DEFINE_integer(
    "threads", 0, "Threads of both (QuantizedIndex num_threads, FAISS OpenMP); 0 = defaults."
)
_CHILD = flags.DEFINE_string("child", None, "Internal: 'wsdhash:K' or 'faiss:K', one run.")

HERE = os.path.abspath(__file__)


def make_data():
    rng = np.random.default_rng(_SEED.value)
    m, d = _NUM_CODEBOOKS.value, _DIMENSION.value
    codebooks = (rng.standard_normal((m, 256, d), dtype=np.float32) / np.sqrt(d)).astype(np.float32)
    indices = rng.integers(0, 256, (_NUM_DATABASE.value, m), dtype=np.uint8)
    queries = rng.standard_normal((_NUM_QUERIES.value, d), dtype=np.float32)
    return codebooks, indices, queries


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def child(spec: str) -> dict:
    implementation, k = spec.split(":")
    k = int(k)
    codebooks, indices, queries = make_data()
    if implementation == "wsdhash":
        from wsdhash.index.quantized import QuantizedIndex

        index = QuantizedIndex(codebooks, num_threads=_THREADS.value or None).build(indices)

        def search():
            result = index.search(queries, k)
            return result.positions, -result.distances
    else:
        import faiss

        if _THREADS.value:
            faiss.omp_set_num_threads(_THREADS.value)
        m, dimension = _NUM_CODEBOOKS.value, _DIMENSION.value
        index = faiss.IndexResidualQuantizer(
            dimension,
            m,
            8,
            faiss.METRIC_INNER_PRODUCT,
            faiss.AdditiveQuantizer.ST_LUT_nonorm,
        )
        faiss.copy_array_to_vector(codebooks.ravel(), index.rq.codebooks)
        index.rq.is_trained = True
        index.is_trained = True
        assert index.code_size == m, index.code_size  # one byte per codebook, no norm
        index.codes.resize(indices.size)
        faiss.copy_array_to_vector(indices.ravel(), index.codes)
        index.ntotal = len(indices)

        def search():
            scores, positions = index.search(queries, k)
            return positions, scores

    before = _status_kib("VmRSS")
    exact_peak = _reset_peak()
    start = time.perf_counter()
    positions, scores = search()
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM") if exact_peak else None
    check = min(20, len(queries))
    return {
        "seconds": seconds,
        "peak_mib": None if peak is None or before is None else (peak - before) / 1024,
        "positions": positions[:check].tolist(),
        "scores": scores[:check].tolist(),
    }


def run_child(spec: str) -> dict:
    command = [sys.executable, HERE, f"--child={spec}"]
    for flag in (_NUM_QUERIES, _NUM_DATABASE, _DIMENSION, _NUM_CODEBOOKS, _SEED, _THREADS):
        command.append(f"--{flag.name}={flag.value}")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{spec} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    if _CHILD.value:
        print(json.dumps(child(_CHILD.value)))
        return
    print(f"machine: {machine_info.describe()}")
    try:
        import faiss

        peers = ["wsdhash", "faiss"]
        threads = _THREADS.value or faiss.omp_get_max_threads()
        print(f"faiss {faiss.__version__}, {threads} OpenMP threads")
    except ImportError:
        peers = ["wsdhash"]
        print("faiss is not installed: wsdhash alone")
    scale = (
        f"{_NUM_QUERIES.value} x {_NUM_DATABASE.value}, M={_NUM_CODEBOOKS.value}, "
        f"D={_DIMENSION.value}"
    )
    print(f"AQD top-k search, {scale}, same codebooks and codes; {_REPEATS.value} interleaved runs")
    if _THREADS.value:
        print(f"threads: {_THREADS.value} for both")
    runs = {(p, k): [] for p in peers for k in _K.value}
    for repeat in range(_REPEATS.value):
        for k in _K.value:
            for peer in peers:
                runs[peer, k].append(run_child(f"{peer}:{k}"))
                last = runs[peer, k][-1]
                print(
                    f"  run {repeat + 1}: {peer:<8} k={k:<5} {last['seconds']:.2f} s, "
                    f"peak +{last['peak_mib'] or float('nan'):.0f} MiB",
                    flush=True,
                )
    print(
        f"\n{'k':>6}{'impl':>10}{'median s':>10}{'peak MiB':>10}"
        + ("   time / faiss   peak / faiss" if "faiss" in peers else "")
    )
    for k in _K.value:
        medians = {}
        for peer in peers:
            seconds = statistics.median(r["seconds"] for r in runs[peer, k])
            peaks = [r["peak_mib"] for r in runs[peer, k] if r["peak_mib"] is not None]
            peak = statistics.median(peaks) if peaks else float("nan")
            medians[peer] = (seconds, peak)
            print(f"{k:>6}{peer:>10}{seconds:>10.2f}{peak:>10.0f}")
        ours = medians["wsdhash"]
        results.record("AQD top-k search", f"k={k} wall time", ours[0], "s", scale)
        results.record("AQD top-k search", f"k={k} peak memory", ours[1], "MiB", scale)
        if "faiss" in peers:
            theirs = medians["faiss"]
            print(
                f"{'':>6}{'ratio':>10}{'':>20}   {ours[0] / theirs[0]:>12.2f}   "
                f"{ours[1] / theirs[1]:>12.2f}   (wsdhash / faiss; goal: time <= 1)"
            )
            results.record("AQD top-k search", f"k={k} time vs FAISS", ours[0] / theirs[0], "x")
            results.record("AQD top-k search", f"k={k} peak vs FAISS", ours[1] / theirs[1], "x")
            a, b = runs["wsdhash", k][0], runs["faiss", k][0]
            same = np.mean(
                [len(set(x) & set(y)) / len(x) for x, y in zip(a["positions"], b["positions"])]
            )
            score_difference = np.abs(np.asarray(a["scores"]) - np.asarray(b["scores"])).max()
            print(
                f"{'':>6}check on {len(a['positions'])} queries: {same:.4f} of the top-{k} "
                f"items shared, largest same-rank score difference {score_difference:.1e}"
            )


if __name__ == "__main__":
    app.run(main)
