"""Search throughput of wsdhash's index layer vs raw FAISS, and approximate recall.

    python bench/search_speed.py [--num_database=1000000] [--num_queries=1000]

1. Exact search on N random 64-bit codes: queries/s of `wsdhash.index` (BinaryIndex
   and a loaded ShardedIndex, which add tie ordering and id mapping) against calling
   FAISS IndexBinaryFlat.search directly on the same codes, timed in interleaved
   rounds (medians; wall and CPU time, with the same FAISS thread count); the overhead
   ratio should be at most 1.2.
2. Recall@10 of the approximate kinds (ivf, hnsw, multihash) on clustered codes, with
   queries drawn from the same clusters; an approximate neighbour counts when it is at
   most as far as the exact 10th neighbour (ties make id sets ambiguous).
"""

from __future__ import annotations

import os
import tempfile
import time

import faiss
import machine_info  # noqa: E402  (bench/ is on the path)
import numpy as np
import results  # noqa: E402
from absl import app, flags

from wsdhash.eval.binary import pack_codes
from wsdhash.index.binary import BinaryIndex, BinaryIndexParams
from wsdhash.index.sharded import ShardedIndex, build_index

_NUM_DATABASE = flags.DEFINE_integer("num_database", 1_000_000, "N random 64-bit codes.")
_NUM_QUERIES = flags.DEFINE_integer("num_queries", 1000, "Queries timed.")
_NUM_CLUSTERED = flags.DEFINE_integer("num_clustered", 200_000, "N for the recall test.")
_K = flags.DEFINE_integer("k", 10, "Neighbours per query.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds (medians).")


def _timed(function, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def _interleaved(functions: dict, rounds: int) -> dict:
    """{name: (median wall seconds, median CPU seconds)}: each round times every
    function once, in turn, so that a change in the machine's load hits all alike."""
    walls = {name: [] for name in functions}
    cpus = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            wall, cpu = time.perf_counter(), time.process_time()
            function()
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
    return {
        name: (float(np.median(walls[name])), float(np.median(cpus[name]))) for name in functions
    }


def _clustered(rng, n, bits=64, centres=1000, flips=4):
    centre_bits = rng.integers(0, 2, (centres, bits), dtype=np.uint8)
    items = centre_bits[rng.integers(0, centres, n)]
    flip = rng.random(items.shape) < flips / bits
    return pack_codes((items ^ flip).astype(np.int8) * 2 - 1)


def main(argv):
    del argv
    print(f"machine: {machine_info.describe()}; faiss {faiss.__version__}")
    rng = np.random.default_rng(0)
    k, n, q = _K.value, _NUM_DATABASE.value, _NUM_QUERIES.value
    database = pack_codes(rng.integers(0, 2, (n, 64)) * 2 - 1)
    queries = pack_codes(rng.integers(0, 2, (q, 64)) * 2 - 1)

    raw = faiss.IndexBinaryFlat(64)
    raw.add(database)
    ours = BinaryIndex("flat", 8).build(database)
    with tempfile.TemporaryDirectory() as temporary:
        folder = os.path.join(temporary, "index")  # its lock file stays inside temporary
        build_index(folder, [(database, np.arange(n).astype(str))], kind="flat")
        loaded = ShardedIndex(folder)
        timings = _interleaved(
            {
                "raw FAISS IndexBinaryFlat": lambda: raw.search(queries, k),
                "wsdhash BinaryIndex": lambda: ours.search(queries, k),
                "wsdhash ShardedIndex (1 shard)": lambda: loaded.search(queries, k),
            },
            _ROUNDS.value,
        )
    threads = faiss.omp_get_max_threads()
    print(
        f"\nexact search, {q} queries x {n} random 64-bit codes, k={k}, {threads} FAISS "
        f"threads for both, medians of {_ROUNDS.value} interleaved rounds:"
    )
    base_wall, base_cpu = timings["raw FAISS IndexBinaryFlat"]
    for name, (wall, cpu) in timings.items():
        print(
            f"  {name:<32}{q / wall:>12.0f} queries/s  overhead {wall / base_wall:.3f}x wall, "
            f"{cpu / base_cpu:.3f}x CPU time"
        )
        results.record("search", f"exact, {name}", q / wall, "queries/s", f"N={n}, k={k}")
    overhead = timings["wsdhash ShardedIndex (1 shard)"][0] / base_wall
    results.record("search", "exact overhead vs raw FAISS", overhead, "x", "target <= 1.2")
    print(f"  target: overhead <= 1.2x: {overhead <= 1.2}")

    items = _clustered(rng, _NUM_CLUSTERED.value + q)
    clustered, clustered_queries = items[:-q], items[-q:]
    exact = BinaryIndex("flat", 8).build(clustered).search(clustered_queries, k)
    params = BinaryIndexParams(nprobe=16, ef_search=128, nhash=4, hash_bits=16, nflip=2)
    print(f"\napproximate, {q} queries x {len(clustered)} clustered 64-bit codes, recall@{k}:")
    for kind in ("ivf", "hnsw", "multihash"):
        start = time.perf_counter()
        index = BinaryIndex(kind, 8, params).build(clustered)
        build_seconds = time.perf_counter() - start
        seconds = _timed(lambda index=index: index.search(clustered_queries, k), repeats=1)
        found = index.search(clustered_queries, k)
        recall = float(np.mean(found.distances <= exact.distances[:, -1:]))
        print(
            f"  {kind:<10} recall {recall:.3f}  {q / seconds:>10.0f} queries/s  "
            f"(build {build_seconds:.1f} s)  target >= 0.95: {recall >= 0.95}"
        )
        results.record("search", f"{kind} recall@{k}", recall, "", f"N={len(clustered)}")
        results.record("search", f"{kind} throughput", q / seconds, "queries/s")


if __name__ == "__main__":
    app.run(main)
