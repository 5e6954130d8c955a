"""Benchmarks the wsdhash evaluator at NUS-WIDE-21 scale against the common approach.

Data: random clustered 64-bit codes (so there are relevant neighbours and many ties)
and 21-label multi-hot labels, 2,100 queries x 193,734 database items, mAP@5000 with
index-ordered ties.

"Common approach" (as in most published hashing code): float Hamming distances by a
matrix product, 0.5 * (K - B_q B_db^T), then a full argsort of the database per query,
made stable so that ties are in database order, relevance by a label dot product.

Memory: peak resident set size from `resource.getrusage(RUSAGE_SELF).ru_maxrss` (the
whole process, which also holds the generated data), and separately the peak of
memory allocated during the evaluator call as traced by `tracemalloc` (numpy reports
its buffers to it), measured in a second, untimed run.

Usage:
  python bench/eval_speed.py [--common_queries=210] [--num_threads=2]
"""

from __future__ import annotations

import resource
import time
import tracemalloc

import numpy as np
from absl import app, flags

from wsdhash.eval import binary, metrics
import machine_info  # noqa: E402  (bench/ is on the path)
import results  # noqa: E402

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


def common_approach(query_codes, database_codes, query_labels, database_labels, bits, topk):
    """Per-query AP@R by float distances and a full stable argsort per query."""
    query_pm = binary.unpack_codes(query_codes, bits).astype(np.float32)  # (Q, K)
    database_pm = binary.unpack_codes(database_codes, bits).astype(np.float32)  # (N, K)
    query_float = query_labels.astype(np.float32)
    database_float = database_labels.astype(np.float32)
    average_precisions = np.zeros(len(query_pm))
    ranks = np.arange(1, topk + 1)
    block = 64  # Queries per matrix product, so the (block, N) float matrix stays small.
    for start in range(0, len(query_pm), block):
        distances = 0.5 * (bits - query_pm[start : start + block] @ database_pm.T)  # (b, N)
        for offset, row in enumerate(distances):
            query = start + offset
            relevant = database_float @ query_float[query] > 0  # (N,)
            order = np.argsort(row, kind="stable")[:topk]
            top_relevant = relevant[order]
            hits = np.cumsum(top_relevant)
            if hits[-1] > 0:
                average_precisions[query] = (
                    np.sum(hits[top_relevant] / ranks[top_relevant]) / hits[-1]
                )
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
    evaluate_kwargs = {
        "query_codes": query_codes,
        "database_codes": database_codes,
        "topk": topk,
        "ties": "index",
        "empty": "zero",
        "precision_at": (),
        "hamming_radius": None,
        "radius_metrics": False,
        "num_threads": _NUM_THREADS.value or None,
    }

    start = time.perf_counter()
    ours = metrics.evaluate_retrieval(query_labels, database_labels, **evaluate_kwargs)
    ours_seconds = time.perf_counter() - start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    tracemalloc.start()
    metrics.evaluate_retrieval(query_labels, database_labels, **evaluate_kwargs)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # Diagnostics of the data: how much ties matter here.
    distances = binary.hamming_distances(query_codes[:50], database_codes)
    tie_share = np.mean([np.bincount(row).max() / len(row) for row in distances])
    print(
        f"ties: on average the largest equal-distance group holds {100 * tie_share:.1f}% of the database"
    )
    del distances

    print(f"\nours ({ours.map_name}): mAP = {ours.map:.6f}")
    print(f"  wall time: {ours_seconds:.2f} s")
    print(
        f"  peak memory: {rss_after:.0f} MiB process peak RSS (resource.getrusage ru_maxrss; "
        f"{rss_before:.0f} MiB before the call, data included); "
        f"{traced_peak / 2**20:.0f} MiB peak allocated inside the call (tracemalloc)"
    )

    num_common = _COMMON_QUERIES.value or len(query_codes)
    start = time.perf_counter()
    common_aps = common_approach(
        query_codes[:num_common],
        database_codes,
        query_labels[:num_common],
        database_labels,
        bits,
        topk,
    )
    common_seconds = time.perf_counter() - start
    extrapolated = common_seconds * len(query_codes) / num_common
    print("\ncommon approach (float matmul distances + full stable argsort per query):")
    if num_common < len(query_codes):
        print(
            f"  timed on the first {num_common} of {len(query_codes)} queries: {common_seconds:.2f} s; "
            f"EXTRAPOLATED linearly to all queries: {extrapolated:.1f} s"
        )
    else:
        print(f"  wall time: {common_seconds:.2f} s (all queries)")
    ours_subset = ours.average_precisions[:num_common]
    difference = np.abs(common_aps - ours_subset).max()
    common_map, ours_subset_map = common_aps.mean(), ours_subset.mean()
    scope = "all queries" if num_common == len(query_codes) else f"the first {num_common} queries"
    print(f"  mAP on {scope}: common {common_map:.15f}, ours {ours_subset_map:.15f}")
    # Both sum the same terms in a different order, so only the last bits may differ.
    print(
        f"  identical to 1e-12: {bool(difference <= 1e-12)} (largest per-query AP difference "
        f"{difference:.1e}; mAP difference {abs(common_map - ours_subset_map):.1e})"
    )
    print(f"\nspeed-up: {extrapolated / ours_seconds:.1f}x (common / ours)")
    scale = f"{len(query_codes)} x {len(database_codes)}, {bits} bits, mAP@{topk}"
    results.record("evaluator", "wall time", ours_seconds, "s", scale)
    results.record("evaluator", "peak RSS", rss_after, "MiB", scale)
    results.record("evaluator", "speed-up vs matmul + argsort", extrapolated / ours_seconds, "x")
    print(
        f"targets: ours <= 10 s: {ours_seconds <= 10}; <= 2 GiB: {rss_after <= 2048}; "
        f">= 10x faster: {extrapolated / ours_seconds >= 10}"
    )


if __name__ == "__main__":
    app.run(main)
