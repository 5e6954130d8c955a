"""Benchmarks the wsdhash evaluator at NUS-WIDE-21 scale against published evaluation code.

Data: random clustered 64-bit codes (so there are relevant neighbours and many ties)
and 21-label multi-hot labels, 2,100 queries x 193,734 database items, mAP@5000 with
index-ordered ties.

Baselines, both run on the same data, per query:
- DeepHash-pytorch's `CalcTopMap` (utils/tools.py), restated in `peer_map` (the same
  arithmetic, written here), with the inputs it gets there: +-1 float32 codes (`.sign()`
  of the network's float32 output) and int64 labels. Per query: a label dot product,
  float Hamming distances 0.5 * (K - B_q B_db^T), a full `np.argsort` (quicksort, so
  its tie order is not database order and its mAP differs slightly from ours).
- "matmul + stable argsort": the same with a stable argsort, i.e. index-ordered ties,
  whose per-query APs must equal ours (checked to 1e-12).
The baselines are timed on `--common_queries` queries (all by default) and extrapolated
linearly; their timing is interleaved with `--repeats` runs of ours (median reported),
since the machine may be shared.

Also timed once each: ours with the `python -m wsdhash.evaluate` defaults
(precision@100..1000, precision within radius 2, tie bounds) and with the
precision-recall curve over radius (`--pr_curve`) on top.

Memory: peak resident set size from `resource.getrusage(RUSAGE_SELF).ru_maxrss` (the
whole process, which also holds the generated data) after our first run, before any
baseline, and separately the peak of memory allocated during the evaluator call as
traced by `tracemalloc` (numpy reports its buffers to it), in a further untimed run.

Usage:
  python bench/eval_speed.py [--common_queries=210] [--num_threads=2] [--repeats=3]
"""

from __future__ import annotations

import dataclasses
import resource
import time
import tracemalloc

import machine_info  # noqa: E402  (bench/ is on the path)
import numpy as np
import results  # noqa: E402
from absl import app, flags

from wsdhash.eval import binary, metrics
from wsdhash.eval.protocol import EvalProtocol
from wsdhash.eval.scorers import HammingScorer

_NUM_QUERIES = flags.DEFINE_integer("num_queries", 2100, "Q, number of queries.")
_NUM_DATABASE = flags.DEFINE_integer("num_database", 193734, "N, database size.")
_BITS = flags.DEFINE_integer("bits", 64, "K, code length.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 21, "C, number of labels.")
_TOPK = flags.DEFINE_integer("topk", 5000, "R of mAP@R.")
_COMMON_QUERIES = flags.DEFINE_integer(
    "common_queries", 0, "Queries timed for the common approach; 0 = all (then no extrapolation)."
)
_NUM_THREADS = flags.DEFINE_integer("num_threads", 0, "Evaluator threads; 0 = default.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the synthetic data.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs of ours (the median is reported).")

_NUM_CLUSTERS = 60
_FLIP_PROBABILITY = 0.1  # ~6 bits from the cluster centre: many small, tied distances.
_NOISE_FRACTION = 0.25  # Items with random codes and labels.
_GENERATION_ROWS = 16384


def make_split(rng, num_rows, centers, center_labels):
    """Packed codes (rows, K/8) and uint8 labels (rows, C), generated in blocks."""
    bits = centers.shape[1]
    codes = np.empty((num_rows, -(-bits // 8)), dtype=np.uint8)
    labels = np.empty((num_rows, center_labels.shape[1]), dtype=np.uint8)
    for start in range(0, num_rows, _GENERATION_ROWS):
        stop = min(start + _GENERATION_ROWS, num_rows)
        rows = stop - start
        cluster = rng.integers(0, len(centers), rows)
        noise = rng.random(rows) < _NOISE_FRACTION
        block_bits = centers[cluster] ^ (rng.random((rows, bits)) < _FLIP_PROBABILITY)
        block_bits[noise] = rng.random((int(noise.sum()), bits)) < 0.5
        block_labels = center_labels[cluster] | (rng.random((rows, center_labels.shape[1])) < 0.01)
        block_labels[noise] = rng.random((int(noise.sum()), center_labels.shape[1])) < 0.1
        codes[start:stop] = binary.pack_codes(block_bits)
        labels[start:stop] = block_labels
    return codes, labels


def make_data(seed: int):
    rng = np.random.default_rng(seed)
    centers = rng.random((_NUM_CLUSTERS, _BITS.value)) < 0.5
    # Each cluster has one or two of the C labels, so clusters share labels.
    center_labels = np.zeros((_NUM_CLUSTERS, _NUM_CLASSES.value), dtype=bool)
    for cluster in range(_NUM_CLUSTERS):
        chosen = rng.choice(_NUM_CLASSES.value, size=rng.integers(1, 3), replace=False)
        center_labels[cluster, chosen] = True
    query = make_split(rng, _NUM_QUERIES.value, centers, center_labels)
    database = make_split(rng, _NUM_DATABASE.value, centers, center_labels)
    return query, database


def peer_map(database_pm, query_pm, database_labels, query_labels, topk):
    """mAP@topk computed the way DeepHash-pytorch's `CalcTopMap` (utils/tools.py) does
    it, restated here (no code of theirs is copied): for each query in turn, relevance
    by a label dot product, float Hamming distances 0.5 * (K - b_q . B^T) from +-1
    codes, `np.argsort` with numpy's default (unstable) sort, the AP of the first
    `topk` as the mean of (hits so far / rank) over the relevant positions, and queries
    without a relevant item in the first `topk` count as 0 in the mean."""
    bits = database_pm.shape[1]
    total = 0.0
    for query in range(len(query_labels)):
        relevant = (np.dot(query_labels[query], database_labels.T) > 0).astype(np.float32)
        distances = 0.5 * (bits - np.dot(query_pm[query], database_pm.T))
        top = relevant[np.argsort(distances)][:topk]
        found = int(top.sum())
        if found == 0:
            continue
        positions = np.flatnonzero(top == 1) + 1.0
        total += np.mean(np.arange(1, found + 1) / positions)
    return total / len(query_labels)


def stable_argsort_aps(query_pm, database_pm, query_labels, database_labels, bits, topk):
    """Per-query AP@R by float distances and a full stable argsort per query."""
    average_precisions = np.zeros(len(query_pm))
    ranks = np.arange(1, topk + 1)
    for query in range(len(query_pm)):
        relevant = np.dot(query_labels[query], database_labels.T) > 0  # (N,)
        distances = 0.5 * (bits - np.dot(query_pm[query], database_pm.T))  # (N,)
        order = np.argsort(distances, kind="stable")[:topk]
        top_relevant = relevant[order]
        hits = np.cumsum(top_relevant)
        if hits[-1] > 0:
            average_precisions[query] = np.sum(hits[top_relevant] / ranks[top_relevant]) / hits[-1]
    return average_precisions


def main(argv):
    del argv
    bits, topk = _BITS.value, _TOPK.value
    print(f"machine: {machine_info.describe()}")
    start = time.perf_counter()
    (query_codes, query_labels), (database_codes, database_labels) = make_data(_SEED.value)
    print(
        f"data: {len(query_codes)} queries x {len(database_codes)} database items, {bits} bits, "
        f"{query_labels.shape[1]} labels, clustered (generated in {time.perf_counter() - start:.1f} s)"
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB.
    scorer = HammingScorer(query_codes, database_codes)
    labels = (query_labels, database_labels)
    threads = _NUM_THREADS.value or None
    map_protocol = EvalProtocol(
        topk=topk,
        ties="index",
        empty="zero",
        precision_at=(),
        hamming_radius=None,
        radius_curve=False,
    )

    ours_cpu = []  # CPU seconds (all threads) of each timed run of ours

    def run_ours(protocol=map_protocol):
        start, cpu = time.perf_counter(), time.process_time()
        result = metrics.evaluate_retrieval(scorer, labels, protocol, num_threads=threads)
        if protocol is map_protocol:
            ours_cpu.append(time.process_time() - cpu)
        return result, time.perf_counter() - start

    ours, first_seconds = run_ours()
    ours_times = [first_seconds]
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # Baselines' inputs, as DeepHash-pytorch has them: +-1 float32 codes, int64 labels.
    num_common = _COMMON_QUERIES.value or len(query_codes)
    query_pm = binary.unpack_codes(query_codes[:num_common], bits).astype(np.float32)
    database_pm = binary.unpack_codes(database_codes, bits).astype(np.float32)
    query_int = query_labels[:num_common].astype(np.int64)
    database_int = database_labels.astype(np.int64)
    parts = np.array_split(np.arange(num_common), max(1, _REPEATS.value - 1))
    calc_top_map_seconds = stable_seconds = calc_top_map_cpu = 0.0
    calc_top_map_sum = 0.0
    stable_aps = []
    for index, part in enumerate(parts):
        if len(part):
            rows = slice(part[0], part[-1] + 1)
            start, cpu = time.perf_counter(), time.process_time()
            calc_top_map_sum += peer_map(
                database_pm, query_pm[rows], database_int, query_int[rows], topk
            ) * len(part)
            calc_top_map_seconds += time.perf_counter() - start
            calc_top_map_cpu += time.process_time() - cpu
            start = time.perf_counter()
            stable_aps.append(
                stable_argsort_aps(
                    query_pm[rows], database_pm, query_int[rows], database_int, bits, topk
                )
            )
            stable_seconds += time.perf_counter() - start
        if index < _REPEATS.value - 1:
            ours_times.append(run_ours()[1])
    ours_seconds = float(np.median(ours_times))
    calc_top_map_value = calc_top_map_sum / num_common
    stable_aps = np.concatenate(stable_aps)
    del query_pm, database_pm, query_int, database_int

    tracemalloc.start()
    metrics.evaluate_retrieval(scorer, labels, map_protocol, num_threads=threads)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    cli_protocol = dataclasses.replace(
        map_protocol, precision_at=EvalProtocol.precision_at, hamming_radius=2, tie_bounds=True
    )
    _, cli_seconds = run_ours(cli_protocol)
    _, curve_seconds = run_ours(dataclasses.replace(cli_protocol, radius_curve=True))

    # Diagnostics of the data: how much ties matter here.
    distances = binary.hamming_distances(query_codes[:50], database_codes)
    tie_share = np.mean([np.bincount(row).max() / len(row) for row in distances])
    print(
        f"ties: on average the largest equal-distance group holds {100 * tie_share:.1f}% of the database"
    )
    del distances

    print(f"\nours ({ours.map_name}): mAP = {ours.map:.6f}")
    print(
        f"  wall time: {ours_seconds:.2f} s (median of {len(ours_times)}: "
        + ", ".join(f"{t:.2f}" for t in ours_times)
        + ")"
    )
    print(
        f"  with the evaluate CLI's defaults (precision@100..1000, precision within radius 2, "
        f"tie bounds): {cli_seconds:.2f} s; plus the radius curve (--pr_curve): {curve_seconds:.2f} s"
    )
    print(
        f"  peak memory: {rss_after:.0f} MiB process peak RSS (resource.getrusage ru_maxrss; "
        f"{rss_before:.0f} MiB before the call, data included); "
        f"{traced_peak / 2**20:.0f} MiB peak allocated inside the call (tracemalloc)"
    )

    scale_factor = len(query_codes) / num_common
    calc_top_map_all = calc_top_map_seconds * scale_factor
    stable_all = stable_seconds * scale_factor
    extrapolated = " EXTRAPOLATED linearly to all queries" if num_common < len(query_codes) else ""
    scope = "all queries" if num_common == len(query_codes) else f"the first {num_common} queries"
    print(f"\nDeepHash-pytorch CalcTopMap (float32 codes, int64 labels, np.argsort), {scope}:")
    print(f"  wall time: {calc_top_map_seconds:.2f} s;{extrapolated} {calc_top_map_all:.1f} s")
    ours_subset = ours.average_precisions[:num_common]
    print(
        f"  mAP on {scope}: CalcTopMap {calc_top_map_value:.6f} (its own tie order), "
        f"ours {ours_subset.mean():.6f}"
    )
    print(f"\nmatmul + stable argsort (index-ordered ties, as ours), {scope}:")
    print(f"  wall time: {stable_seconds:.2f} s;{extrapolated} {stable_all:.1f} s")
    difference = np.abs(stable_aps - ours_subset).max()
    stable_map, ours_subset_map = stable_aps.mean(), ours_subset.mean()
    print(f"  mAP on {scope}: stable {stable_map:.15f}, ours {ours_subset_map:.15f}")
    # Both sum the same terms in a different order, so only the last bits may differ.
    print(
        f"  identical to 1e-12: {bool(difference <= 1e-12)} (largest per-query AP difference "
        f"{difference:.1e}; mAP difference {abs(stable_map - ours_subset_map):.1e})"
    )
    speedup = calc_top_map_all / ours_seconds
    # Per CPU second: ours may run on several threads, CalcTopMap's numpy on BLAS's.
    cpu_speedup = calc_top_map_cpu * len(query_codes) / num_common / float(np.median(ours_cpu))
    print(
        f"\nspeed-up vs CalcTopMap: {speedup:.1f}x wall ({threads or 'default'} evaluator "
        f"threads), {cpu_speedup:.1f}x per CPU second; vs matmul + stable argsort: "
        f"{stable_all / ours_seconds:.1f}x wall"
    )
    scale = f"{len(query_codes)} x {len(database_codes)}, {bits} bits, mAP@{topk}"
    results.record("evaluator", "wall time", ours_seconds, "s", scale)
    results.record("evaluator", "wall time, evaluate CLI defaults", cli_seconds, "s", scale)
    results.record("evaluator", "wall time, with radius curve", curve_seconds, "s", scale)
    results.record("evaluator", "peak RSS", rss_after, "MiB", scale)
    results.record("evaluator", "speed-up vs DeepHash-pytorch CalcTopMap", speedup, "x")
    results.record("evaluator", "speed-up vs CalcTopMap per CPU second", cpu_speedup, "x")
    results.record(
        "evaluator", "speed-up vs matmul + stable argsort", stable_all / ours_seconds, "x"
    )
    print(
        f"targets: >= 20x CalcTopMap: {speedup >= 20}; <= 2 GiB: {rss_after <= 2048}; "
        f"identical to the stable reference: {bool(difference <= 1e-12)}"
    )


if __name__ == "__main__":
    app.run(main)
