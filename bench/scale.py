"""Search at scale: an index of 10 million codes built from a codes folder, against FAISS.

    python bench/scale.py [--num_items=10000000] [--aqd_items=1000000] [--num_queries=100]
    python bench/scale.py --num_items=200000 --aqd_items=50000   # quick, while developing

1. Writes a codes folder (wsdhash/eval/codes_folder.py, the format `python -m
   wsdhash.pipeline encode` writes) of `num_items` random `bits`-bit codes with integer
   ids, in shards of `shard_items`, and an AQD folder of `aqd_items` items (M codebooks
   of 256 x D, random codeword indices) with query features.
2. Each phase runs in its own child process, which imports what it needs, reads its
   resident memory (the start-up baseline), resets the peak (/proc/self/clear_refs)
   and reports the peak above the baseline (VmHWM - baseline) at the end:
   - build: `python -m wsdhash.search build --codes=FOLDER` (in the child, through
     the command's own entry point);
   - load + query: opening the index and answering a batch of queries at k=10 and
     k=1000;
   - FAISS build: the same codes read shard by shard into one IndexBinaryFlat (for AQD:
     an IndexResidualQuantizer given the same codebooks and codeword indices, whose
     LUT search ranks by the same inner products; as bench/aqd_search_speed.py);
   - timing: ours and FAISS loaded side by side, the same query batch at each k timed
     in turn (ours, FAISS, ours, FAISS, ...), medians per query.
3. Prints a table and the ratios against the goals: query time within 1.2x FAISS's,
   peak memory above the baseline at most 2x the codes' own size (N x bits / 8 bytes;
   for AQD N x M bytes).

Only numpy, FAISS, the standard library and wsdhash's command are used. The timings
share the machine's cores with whatever else runs: compare the ratios of one run.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import machine_info
import numpy as np
import results
from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = flags.FLAGS
_KS = (10, 1000)
# Wall time, and the process's CPU time (all its threads): on a machine shared with
# other work the CPU time varies less; with --threads=1 it is the cleaner comparison.
_CLOCKS = ("wall", "cpu")
_PHASE = "--phase"
MB = 1e6


# ---------------------------------------------------------------- measuring a phase
def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def _start_measuring(threads: int) -> int:
    """Imports what the phases run (so the baseline is the started program's) and sets
    FAISS's threads; the resident memory now (bytes), the peak reset to it where Linux
    lets us."""
    import faiss

    import wsdhash.commands.search  # noqa: F401

    if threads:
        faiss.omp_set_num_threads(threads)
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass  # VmHWM then includes the start-up peak: an upper bound
    return 1024 * _status_kib("VmRSS")


def _peak_above(baseline: int) -> int:
    return 1024 * _status_kib("VmHWM") - baseline


def _child(phase: str, **arguments) -> dict:
    """Runs `phase` in a new process of this script (without this script's flags, so
    that the search command's parse); its JSON report."""
    arguments.setdefault("num_queries", FLAGS.num_queries)
    arguments.setdefault("repeats", FLAGS.repeats)
    arguments.setdefault("threads", FLAGS.threads)
    command = [sys.executable, os.path.join(HERE, "scale.py"), _PHASE, phase]
    command.append(json.dumps(arguments))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"phase {phase} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _report(values: dict) -> None:
    print(json.dumps(values))


# ---------------------------------------------------------------- the codes folders
def _write_folder(folder: str, num_items: int, shard_items: int, aqd: bool, seed: int) -> None:
    """A codes folder of random codes (integer ids 0..N-1), written shard by shard."""
    from wsdhash import atomic_files
    from wsdhash.eval import codes_folder as cf

    rng = np.random.default_rng(seed)
    width, books, dim = FLAGS.bits // 8, FLAGS.aqd_codebooks, FLAGS.aqd_dim
    os.makedirs(folder)

    def arrays(first: int, count: int, query: bool) -> dict:
        shard = {
            "ids": np.arange(first, first + count, dtype=np.int64),
            "codes": rng.integers(0, 256, (count, width), dtype=np.uint8),
        }
        if aqd:
            shard["indices"] = rng.integers(0, 256, (count, books), dtype=np.uint8)
            if query:
                shard["features"] = rng.normal(size=(count, dim)).astype(np.float32)
        return shard

    splits = {"database": [], "query": []}
    count = -(-num_items // shard_items)
    for number in range(count):
        first = number * shard_items
        size = min(shard_items, num_items - first)
        data = cf.shard_bytes(arrays(first, size, False))
        entry = cf.write_file(folder, cf.shard_name("database", number, count), data)
        splits["database"].append({**entry, "num_items": size})
    data = cf.shard_bytes(arrays(0, FLAGS.num_queries, True))
    splits["query"].append(
        {
            **cf.write_file(folder, cf.shard_name("query", 0, 1), data),
            "num_items": FLAGS.num_queries,
        }
    )
    codebooks = None
    if aqd:
        books_array = rng.normal(size=(books, 256, dim)).astype(np.float32) / np.sqrt(books)
        codebooks = cf.write_file(folder, cf.CODEBOOKS_FILE, cf.codebooks_bytes(books_array))
    failed = {**cf.write_file(folder, cf.FAILED_FILE, b""), "num_items": 0}
    manifest = cf.make_manifest(
        scorer="aqd" if aqd else "hamming",
        bits=FLAGS.bits,
        splits=splits,
        failed=failed,
        codebooks=codebooks,
        metadata={"source": "bench/scale.py random codes"},
    )
    atomic_files.write_json(os.path.join(folder, cf.MANIFEST), manifest)


def _query_rows(folder: str, aqd: bool) -> np.ndarray:
    from wsdhash.eval import codes_folder as cf

    (shard,) = cf.iter_shards(folder, "query")
    return shard["features" if aqd else "codes"]


def _folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


# ---------------------------------------------------------------- the phases (children)
def _phase_build(folder: str, index: str, threads: int) -> None:
    from wsdhash.commands import search

    baseline = _start_measuring(threads)
    start = time.perf_counter()
    sys.argv = ["wsdhash.search", "build", f"--codes={folder}", f"--output={index}"]
    try:
        search.run()
    except SystemExit as stop:
        if stop.code:
            raise
    seconds = time.perf_counter() - start
    _report({"seconds": seconds, "peak": _peak_above(baseline), "disk": _folder_bytes(index)})


def _phase_load_query(folder: str, index: str, aqd: bool, threads: int) -> None:
    from wsdhash.index.sharded import ShardedIndex

    queries = _query_rows(folder, aqd)
    baseline = _start_measuring(threads)
    start = time.perf_counter()
    loaded = ShardedIndex(index)
    seconds = time.perf_counter() - start
    for k in _KS:
        result = loaded.search(queries, k)
        loaded.ids.take(result.positions)
    _report({"seconds": seconds, "peak": _peak_above(baseline)})


def _faiss_index(folder: str, aqd: bool):
    """FAISS's exact index of the folder's database, read shard by shard: an
    IndexBinaryFlat, or for AQD an IndexResidualQuantizer given the same codebooks and
    codeword indices (its LUT search ranks by the same inner products)."""
    import faiss

    from wsdhash.eval import codes_folder as cf

    manifest = cf.read_manifest(folder)
    total = manifest["splits"]["database"]["num_items"]
    if aqd:
        books = cf.read_codebooks(folder, manifest)
        m, _, dimension = books.shape
        index = faiss.IndexResidualQuantizer(
            dimension, m, 8, faiss.METRIC_INNER_PRODUCT, faiss.AdditiveQuantizer.ST_LUT_nonorm
        )
        faiss.copy_array_to_vector(books.ravel(), index.rq.codebooks)
        index.rq.is_trained = index.is_trained = True
        index.codes.resize(total * m)
        codes = faiss.rev_swig_ptr(index.codes.data(), total * m).reshape(total, m)
        filled = 0
        for shard in cf.iter_shards(folder, "database", manifest):
            codes[filled : filled + len(shard["indices"])] = shard["indices"]
            filled += len(shard["indices"])
            del shard
        index.ntotal = total
        return index
    index = faiss.IndexBinaryFlat(manifest["bits"])
    for shard in cf.iter_shards(folder, "database", manifest):
        index.add(shard["codes"])
        del shard
    return index


def _phase_faiss_build(folder: str, aqd: bool, threads: int) -> None:
    import faiss

    baseline = _start_measuring(threads)
    start = time.perf_counter()
    index = _faiss_index(folder, aqd)
    seconds = time.perf_counter() - start
    data = faiss.serialize_index(index) if aqd else faiss.serialize_index_binary(index)
    _report({"seconds": seconds, "peak": _peak_above(baseline), "disk": int(data.nbytes)})


def _phase_timing(folder: str, index: str, aqd: bool, repeats: int, threads: int) -> None:
    from wsdhash.index.sharded import ShardedIndex

    _start_measuring(threads)
    queries = _query_rows(folder, aqd)
    ours, theirs = ShardedIndex(index), _faiss_index(folder, aqd)
    times = {(name, k, clock): [] for name in ("ours", "faiss") for k in _KS for clock in _CLOCKS}
    for _ in range(repeats):
        for k in _KS:
            for name, search in (("ours", ours.search), ("faiss", theirs.search)):
                wall, cpu = time.perf_counter(), time.process_time()
                search(queries, k)
                times[name, k, "wall"].append(time.perf_counter() - wall)
                times[name, k, "cpu"].append(time.process_time() - cpu)
    per_query = {
        f"{name}@{k}:{clock}": 1000 * statistics.median(values) / len(queries)
        for (name, k, clock), values in times.items()
    }
    _report(per_query)


def _run_phase(phase: str, arguments: dict) -> None:
    folder, index, aqd = arguments["folder"], arguments.get("index"), arguments["aqd"]
    threads = arguments["threads"]
    if phase == "build":
        _phase_build(folder, index, threads)
    elif phase == "load_query":
        _phase_load_query(folder, index, aqd, threads)
    elif phase == "faiss_build":
        _phase_faiss_build(folder, aqd, threads)
    elif phase == "timing":
        _phase_timing(folder, index, aqd, arguments["repeats"], threads)
    else:
        raise ValueError(f"unknown phase {phase!r}")


# ---------------------------------------------------------------- the parent
def _measure(name: str, folder: str, index: str, aqd: bool, codes_bytes: int) -> dict:
    arguments = {"folder": folder, "index": index, "aqd": aqd}
    print(f"{name}: building with wsdhash ...", flush=True)
    built = _child("build", **arguments)
    print(f"{name}: loading and querying ...", flush=True)
    loaded = _child("load_query", **arguments)
    print(f"{name}: FAISS reference ...", flush=True)
    reference = _child("faiss_build", folder=folder, aqd=aqd)
    print(f"{name}: timing queries (interleaved) ...", flush=True)
    timing = _child("timing", **arguments)
    shards = len(codes_folder_manifest(folder)["splits"]["database"]["shards"])
    return {
        "name": f"{name}, {shards} codes shards",
        "codes_bytes": codes_bytes,
        "build": built,
        "load": loaded,
        "faiss": reference,
        "timing": timing,
    }


def codes_folder_manifest(folder: str) -> dict:
    from wsdhash.eval import codes_folder

    return codes_folder.read_manifest(folder)


def _print_table(run: dict, reference: str) -> None:
    codes = run["codes_bytes"]
    build, load, faiss_build = run["build"], run["load"], run["faiss"]
    print(f"\n{run['name']}: codes {codes / MB:.1f} MB")
    print(f"  {'phase':<34}{'time s':>9}{'peak above base MB':>20}{'x codes':>9}{'disk MB':>9}")
    rows = [
        ("wsdhash build --codes=FOLDER", build["seconds"], build["peak"], build["disk"]),
        ("wsdhash load + queries", load["seconds"], load["peak"], None),
        (
            f"FAISS {reference} add",
            faiss_build["seconds"],
            faiss_build["peak"],
            faiss_build["disk"],
        ),
    ]
    for label, seconds, peak, disk in rows:
        disk_text = f"{disk / MB:>9.1f}" if disk is not None else f"{'':>9}"
        print(f"  {label:<34}{seconds:>9.2f}{peak / MB:>20.1f}{peak / codes:>9.2f}{disk_text}")
    timing = run["timing"]
    print(f"  {'query (ms per query, medians)':<34}{'wsdhash':>9}{'FAISS':>9}{'ratio':>9}")
    for clock in _CLOCKS:
        for k in _KS:
            ours, theirs = timing[f"ours@{k}:{clock}"], timing[f"faiss@{k}:{clock}"]
            label = f"k={k}, {clock} time"
            print(f"  {label:<34}{ours:>9.3f}{theirs:>9.3f}{ours / theirs:>9.2f}")
            results.record(
                "scale",
                f"{run['name']} query k={k} vs FAISS ({clock})",
                ours / theirs,
                "x",
                "goal <= 1.2",
            )
    worst = max(build["peak"], load["peak"]) / codes
    slowest = max(timing[f"ours@{k}:wall"] / timing[f"faiss@{k}:wall"] for k in _KS)
    print(
        f"  goals: peak <= 2x codes: {worst:.2f}x {'met' if worst <= 2 else 'MISSED'}; "
        f"query <= 1.2x FAISS (wall): {slowest:.2f}x {'met' if slowest <= 1.2 else 'MISSED'}"
    )
    results.record("scale", f"{run['name']} build", build["seconds"], "s")
    results.record("scale", f"{run['name']} peak memory vs codes", worst, "x", "goal <= 2")
    results.record("scale", f"{run['name']} index on disk", build["disk"] / MB, "MB")


def _define_flags() -> None:
    flags.DEFINE_integer("num_items", 10_000_000, "Binary codes indexed.")
    flags.DEFINE_integer("bits", 64, "Bits per binary code.")
    flags.DEFINE_integer("shard_items", 1_000_000, "Items per codes shard.")
    flags.DEFINE_integer("aqd_items", 1_000_000, "AQD items indexed (0: skip).")
    flags.DEFINE_integer("aqd_shard_items", 100_000, "AQD items per codes shard.")
    flags.DEFINE_integer("threads", 0, "FAISS (OpenMP) threads, ours and FAISS's (0: default).")
    flags.DEFINE_integer("aqd_codebooks", 8, "AQD codebooks M (256 codewords each).")
    flags.DEFINE_integer("aqd_dim", 64, "AQD codeword dimension D.")
    flags.DEFINE_integer("num_queries", 100, "Queries per timed batch.")
    flags.DEFINE_integer("repeats", 5, "Timed rounds (medians are reported).")
    flags.DEFINE_string("workdir", None, "Folder for the data (kept; default: temporary).")


def main(argv):
    del argv
    import faiss

    print(
        f"machine: {machine_info.describe()}; faiss {faiss.__version__}, "
        f"{FLAGS.threads or faiss.omp_get_max_threads()} thread(s)"
    )
    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="wsdhash-scale-")
    try:
        runs = []
        n, width = FLAGS.num_items, FLAGS.bits // 8
        folder = os.path.join(workdir, "binary-codes")
        if not os.path.isdir(folder):
            print(f"writing {n} x {FLAGS.bits}-bit codes in shards of {FLAGS.shard_items} ...")
            _write_folder(folder, n, FLAGS.shard_items, aqd=False, seed=0)
        index = os.path.join(workdir, "binary-index")
        runs.append(
            (
                _measure(f"flat, {n} x {FLAGS.bits} bits", folder, index, False, n * width),
                "IndexBinaryFlat",
            )
        )
        if FLAGS.aqd_items:
            m, books = FLAGS.aqd_items, FLAGS.aqd_codebooks
            folder = os.path.join(workdir, "aqd-codes")
            if not os.path.isdir(folder):
                print(f"writing {m} AQD codes (M={books}, D={FLAGS.aqd_dim}) ...")
                _write_folder(folder, m, FLAGS.aqd_shard_items, aqd=True, seed=1)
            index = os.path.join(workdir, "aqd-index")
            runs.append(
                (
                    _measure(f"aqd, {m} x M={books}", folder, index, True, m * books),
                    "IndexResidualQuantizer",
                )
            )
        for run, reference in runs:
            _print_table(run, reference)
    finally:
        if not FLAGS.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == [_PHASE]:  # a child: no flags of ours (the search command's parse)
        _run_phase(sys.argv[2], json.loads(sys.argv[3]))
    else:
        _define_flags()
        app.run(main)
