"""Benchmarks AQD mAP@5000 at NUS-WIDE-21 scale: 2,100 queries x 193,734 items.

Data: clustered random features in D = 300 (60 cluster centres on the sphere, items
= centre + Gaussian noise, a quarter of the items pure noise), 21-label multi-hot
labels shared between clusters. An `AdditiveQuantizer` (M = 4, K = 256, Euclidean
ICM) is fitted on 10,500 database items (NUS-WIDE-21's training size) and encodes the
database; the timed part is `aqd_evaluate` alone: lookup tables, table gathers and
the evaluator, in query chunks. A check on the first queries compares the chunked
AQD APs with one evaluator call on naively computed scores <x_q, x_hat_n>.

Memory: peak resident set size of the process (`ru_maxrss`, data included), and the
peak allocated inside the timed call as traced by `tracemalloc` (second, untimed run).

Usage:
  python bench/aqd_speed.py [--num_threads=2] [--empty=skip]
"""

from __future__ import annotations

import resource
import time
import tracemalloc

import machine_info
import numpy as np
import results
from absl import app, flags

from wsdhash.eval import aqd_metrics, metrics
from wsdhash.eval.protocol import EvalProtocol
from wsdhash.eval.scorers import MatrixScorer
from wsdhash.quantization.additive import AdditiveQuantizer

_NUM_QUERIES = flags.DEFINE_integer("num_queries", 2100, "Q, number of queries.")
_NUM_DATABASE = flags.DEFINE_integer("num_database", 193734, "N, database size.")
_DIMENSION = flags.DEFINE_integer("dimension", 300, "D, feature dimension.")
_NUM_CODEBOOKS = flags.DEFINE_integer("num_codebooks", 4, "M codebooks (8M bits).")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 10500, "Items the quantizer is fitted on.")
_TOPK = flags.DEFINE_integer("topk", 5000, "R of mAP@R.")
_EMPTY = flags.DEFINE_enum("empty", "skip", ["zero", "skip"], "Empty-query policy.")
_NUM_THREADS = flags.DEFINE_integer("num_threads", 0, "Chunks evaluated at once; 0 = default.")
_CHECK_QUERIES = flags.DEFINE_integer("check_queries", 100, "Queries checked against naive scores.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the data and the quantizer.")

_NUM_CLASSES = 21
_NUM_CLUSTERS = 60
_NOISE_STD = 0.045  # Per dimension; about the centre distance's scale, so ranks mix.
_NOISE_FRACTION = 0.25


def make_split(rng, num_rows, centres, centre_labels):
    """Float32 features (rows, D) and uint8 labels (rows, C)."""
    cluster = rng.integers(0, len(centres), num_rows)
    noise = rng.random(num_rows) < _NOISE_FRACTION
    features = centres[cluster] + _NOISE_STD * rng.standard_normal(
        (num_rows, centres.shape[1]), dtype=np.float32
    )
    features[noise] = 0.06 * rng.standard_normal((int(noise.sum()), centres.shape[1]))
    labels = centre_labels[cluster] | (rng.random((num_rows, _NUM_CLASSES)) < 0.01)
    labels[noise] = rng.random((int(noise.sum()), _NUM_CLASSES)) < 0.1
    return np.tanh(features).astype(np.float32), labels.astype(np.uint8)


def main(argv):
    del argv
    print(f"machine: {machine_info.describe()}")
    rng = np.random.default_rng(_SEED.value)
    dimension = _DIMENSION.value
    centres = rng.standard_normal((_NUM_CLUSTERS, dimension)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    centre_labels = np.zeros((_NUM_CLUSTERS, _NUM_CLASSES), dtype=bool)
    for cluster in range(_NUM_CLUSTERS):
        chosen = rng.choice(_NUM_CLASSES, size=rng.integers(1, 3), replace=False)
        centre_labels[cluster, chosen] = True
    start = time.perf_counter()
    query_features, query_labels = make_split(rng, _NUM_QUERIES.value, centres, centre_labels)
    database_features, database_labels = make_split(
        rng, _NUM_DATABASE.value, centres, centre_labels
    )
    print(
        f"data: {len(query_features)} queries x {len(database_features)} database items, "
        f"D={dimension}, {_NUM_CLASSES} labels, clustered "
        f"(generated in {time.perf_counter() - start:.1f} s)"
    )

    start = time.perf_counter()
    quantizer = AdditiveQuantizer(_NUM_CODEBOOKS.value, seed=_SEED.value).fit(
        database_features[: _NUM_TRAIN.value]
    )
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    database_indices = quantizer.encode(database_features)  # (N, M) uint8
    encode_seconds = time.perf_counter() - start
    codebooks = quantizer.codebooks  # (M, 256, D)
    print(
        f"quantizer: M={quantizer.num_codebooks} x 256 ({8 * quantizer.num_codebooks} bits); "
        f"fit on {_NUM_TRAIN.value} items {fit_seconds:.1f} s, ICM encoding of the database "
        f"{encode_seconds:.1f} s (not part of the timed search)"
    )

    protocol = EvalProtocol(topk=_TOPK.value, ties="index", empty=_EMPTY.value, precision_at=())
    labels = (query_labels, database_labels)
    threads = _NUM_THREADS.value or None
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB.
    start = time.perf_counter()
    result = aqd_metrics.aqd_evaluate(
        query_features, database_indices, codebooks, labels, protocol, num_threads=threads
    )
    seconds = time.perf_counter() - start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    tracemalloc.start()
    aqd_metrics.aqd_evaluate(
        query_features,
        database_indices,
        codebooks,
        labels,
        protocol,
        num_threads=threads,
    )
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    print(
        f"\nAQD {result.map_name}: mAP = {result.map:.6f} "
        f"({result.num_scored_queries} of {len(query_features)} queries scored)"
    )
    print(f"  wall time: {seconds:.2f} s (query chunks sized by the evaluator's memory budget)")
    print(
        f"  peak memory: {rss_after:.0f} MiB process peak RSS (ru_maxrss; {rss_before:.0f} MiB "
        f"before the call, data included); {traced_peak / 2**20:.0f} MiB peak allocated inside "
        "the call (tracemalloc)"
    )

    # Check: the chunked AQD APs equal one evaluator call on naive scores.
    checked = _CHECK_QUERIES.value
    reconstruction = quantizer.reconstruct(database_indices)  # Only for this check.
    naive_scores = query_features[:checked] @ reconstruction.T  # (checked, N)
    del reconstruction
    naive = metrics.evaluate_retrieval(
        MatrixScorer(scores=naive_scores),
        (query_labels[:checked], database_labels),
        protocol,
        num_threads=threads,
    )
    difference = np.nanmax(np.abs(naive.average_precisions - result.average_precisions[:checked]))
    print(
        f"check on the first {checked} queries against naive <x_q, x_hat_n> scores: largest "
        f"per-query AP difference {difference:.1e} (float32 rounding can swap near-equal scores)"
    )
    print(f"target: <= 20 s: {seconds <= 20}")
    scale = f"{len(query_features)} x {len(database_indices)}, M={_NUM_CODEBOOKS.value}"
    results.record("AQD search", f"mAP@{_TOPK.value} wall time", seconds, "s", scale)
    results.record("AQD search", "peak RSS", rss_after, "MiB", scale)


if __name__ == "__main__":
    app.run(main)
