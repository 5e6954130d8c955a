"""Every registered method and baseline on real-photo features: one Markdown table.

    python bench/realdata.py [--features=F.h5] [--bits=32,64] [--seeds=0,1,2]
                             [--methods=csq,dpsh] [--output=bench_results/realdata.md]
                             [-- extra flags of python -m wsdhash.train]

Data: a features file from `python -m wsdhash.extract` (`--features`), by default the
shared real CIFAR-10 development features (../shared/realdata, converted once by
bench/shared_features.py; developers and CI have them, users pass their own file).

Each method trains as `python -m wsdhash.train --backbone=features --method=M
--hash_bit=K --seed=S` would, in this process (TensorFlow starts once): with its
features recipe (wsdhash/recipes/features/) unless the extra flags override it, the
checkpoint chosen on validation queries carved from the training rows. Rows: mAP over
the whole database (ties in database order, with the pessimistic..optimistic tie bounds)
and mAP@1000, by the run's own scorer (Hamming; AQD for WSDHQ), the mean over seeds
(with the range when there are several), and the training time. Methods trained from
tags (WSDHQ) need the file to carry the training split's user tags; without them they
are left out and the table says so.

Baselines fitted on the training rows with the same seeds: LSH, PCAH, ITQ and every
other registered baseline, and the raw features' cosine similarity (no codes: what the
frozen features give before any hashing).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import results
import shared_features

BENCHMARK = "realdata"


@dataclasses.dataclass
class Row:
    name: str
    bits: int | None
    map_all: list[float]
    low: list[float]
    high: list[float]
    map_1000: list[float]
    seconds: list[float]
    note: str = ""


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", default=None, help="features file (default: shared)")
    parser.add_argument("--bits", default="32,64")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default="", help="registered methods (default: all)")
    parser.add_argument("--baselines", default="", help="registered baselines (default: all)")
    parser.add_argument("--workdir", default="bench_results/realdata")
    parser.add_argument("--output", default="bench_results/realdata.md")
    return parser.parse_known_args(argv)


def features_path(args) -> tuple[str, str]:
    """(the features file, a line saying where it comes from)."""
    if args.features:
        return args.features, f"features file {args.features}"
    if not shared_features.available():
        sys.exit(
            "bench/realdata.py: no --features given and the shared development features "
            f"({shared_features.NPZ}) are absent; extract your own with "
            "`python -m wsdhash.extract` and pass --features."
        )
    path = shared_features.features_file(os.path.join(args.workdir, "cifar10_mobilenet.h5"))
    return path, shared_features.PROVENANCE


def train_method(path: str, method: str, bits: int, seed: int, workdir: str, extra, tag_dir):
    """(metrics, mAP@1000, seconds, the recipe line) of one training run."""
    import keras
    from absl import flags

    from wsdhash.commands import train as train_command
    from wsdhash.eval import EvalProtocol, read_codes_file
    from wsdhash.eval.file_evaluation import evaluate_codes_file
    from wsdhash.training import trainer

    shutil.rmtree(workdir, ignore_errors=True)
    argv = [
        "train",
        f"--method={method}",
        "--backbone=features",
        f"--features={path}",
        f"--hash_bit={bits}",
        f"--seed={seed}",
        f"--workdir={workdir}",
        "--topk=all",
        *(["--supervision=tags", f"--tag_dir={tag_dir}"] if tag_dir else []),
        *extra,
    ]
    flag_values = flags.FLAGS
    flag_values.unparse_flags()
    flag_values(argv)
    recipe_line = train_command.apply_recipe()
    train_command.validate_flags()
    train_command.use_features_file()
    config = train_command.build_config(workdir)
    os.makedirs(workdir, exist_ok=True)
    train_command.write_replay_flags(workdir)
    keras.backend.clear_session()
    started = time.perf_counter()
    metrics = trainer.train(config)
    seconds = time.perf_counter() - started
    codes = read_codes_file(os.path.join(workdir, "codes.h5"))
    at_1000 = evaluate_codes_file(codes, EvalProtocol(topk=1000, radius_curve=False)).map
    return metrics, at_1000, seconds, recipe_line


def process_tags(path: str, folder: str) -> str:
    """The training split's tags processed for WSDHQ into `folder` ("" without tags)."""
    from wsdhash.data import features_file
    from wsdhash.tagging import process_tags as process
    from wsdhash.tagging import word_vectors
    from wsdhash.tagging.files import write_outputs

    train = features_file.read_split(path, "train")
    if not train.tags.shape[1]:
        return ""
    vocabulary = list(train.tag_names) or [f"tag{i}" for i in range(train.tags.shape[1])]
    sentences = word_vectors.tag_sentences(vocabulary, train.tags)
    vectors = word_vectors.train_word2vec(sentences, seed=0)
    result = process(vocabulary, train.tags, vectors, center=True)
    write_outputs(folder, result, source={"vectors": "word2vec trained on the training tags"})
    return folder


def baseline_rows(path: str, bits_list, seeds, names) -> list[Row]:
    import numpy as np

    from wsdhash.baselines import BASELINES
    from wsdhash.data import features_file
    from wsdhash.eval import EvalProtocol, evaluate_retrieval, pack_codes
    from wsdhash.eval.scorers import FeatureScorer, HammingScorer

    splits = {name: features_file.read_split(path, name) for name in ("train", "query", "database")}
    query, database = splits["query"], splits["database"]
    rows = []
    for name in names:
        for bits in bits_list:
            row = Row(name, bits, [], [], [], [], [])
            for seed in seeds:
                started = time.perf_counter()
                model = BASELINES.get(name)(bits, seed=seed).fit(splits["train"].features)
                row.seconds.append(time.perf_counter() - started)
                codes = {
                    s: pack_codes(model.encode(splits[s].features)) for s in ("query", "database")
                }
                for topk, into in ((None, row.map_all), (1000, row.map_1000)):
                    result = evaluate_retrieval(
                        HammingScorer(codes["query"], codes["database"], bits),
                        (query.labels, database.labels),
                        EvalProtocol(topk=topk, tie_bounds=topk is None, radius_curve=False),
                    )
                    into.append(result.map)
                    if topk is None:
                        row.low.append(result.map_pessimistic)
                        row.high.append(result.map_optimistic)
            rows.append(row)
            print(f"{name} {bits} bits: mAP@all {statistics.fmean(row.map_all):.4f}", flush=True)

    def unit(x):
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    scorer = FeatureScorer(unit(query.features), unit(database.features))
    cosine = Row("raw-feature cosine", None, [], [], [], [], [0.0])
    for topk, into in ((None, cosine.map_all), (1000, cosine.map_1000)):
        result = evaluate_retrieval(
            scorer, (query.labels, database.labels), EvalProtocol(topk=topk, radius_curve=False)
        )
        into.append(result.map)
    cosine.low, cosine.high = cosine.map_all, cosine.map_all
    rows.append(cosine)
    return rows


def shown(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) > 1:
        return f"{mean:.4f} ({min(values):.3f}-{max(values):.3f})"
    return f"{mean:.4f}"


def table(rows: list[Row], data: str, seeds, extra, notes) -> str:
    lines = [
        f"Data: {data}. Seeds {','.join(map(str, seeds))} (mean, range); every method with "
        f"its features recipe{' and ' + ' '.join(extra) if extra else ''}, checkpoint "
        "chosen on validation queries carved from the training rows; baselines fitted on "
        "the training rows. mAP@all: ties in database order (tie bounds pessimistic.."
        "optimistic).",
        "",
        "| method | bits | mAP@all | tie bounds | mAP@1000 | training time |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        bits = str(row.bits) if row.bits else "-"
        bounds = f"{statistics.fmean(row.low):.4f}..{statistics.fmean(row.high):.4f}"
        lines.append(
            f"| {row.name} | {bits} | {shown(row.map_all)} | {bounds} | "
            f"{shown(row.map_1000)} | {statistics.fmean(row.seconds):.0f} s |"
        )
    lines += [f"\n{note}" for note in notes]
    return "\n".join(lines) + "\n"


def main(argv) -> None:
    args, extra = parse_args(argv)
    extra = [e for e in extra if e != "--"]
    from absl import logging

    from wsdhash import atomic_files
    from wsdhash.baselines import BASELINES
    from wsdhash.methods import METHODS

    logging.set_verbosity(logging.WARNING)
    os.makedirs(args.workdir, exist_ok=True)
    path, data = features_path(args)
    bits_list = [int(b) for b in args.bits.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m] or METHODS.names()
    baselines = [b for b in args.baselines.split(",") if b] or BASELINES.names()
    tag_dir = ""
    notes = []
    if "wsdhq" in methods:
        tag_dir = process_tags(path, os.path.join(args.workdir, "tags"))
        if not tag_dir:
            methods = [m for m in methods if m != "wsdhq"]
            notes.append("WSDHQ left out: the features file carries no user tags.")
    rows = []
    for method in methods:
        for bits in bits_list:
            row = Row(METHODS.get(method).name, bits, [], [], [], [], [])
            for seed in seeds:
                workdir = os.path.join(args.workdir, "runs", f"{method}_{bits}_seed{seed}")
                metrics, at_1000, seconds, recipe = train_method(
                    path, method, bits, seed, workdir, extra, tag_dir if method == "wsdhq" else ""
                )
                row.map_all.append(metrics["map"])
                row.low.append(metrics.get("map_pessimistic", metrics["map"]))
                row.high.append(metrics.get("map_optimistic", metrics["map"]))
                row.map_1000.append(at_1000)
                row.seconds.append(seconds)
                print(
                    f"{method} {bits} bits seed {seed}: mAP@all {metrics['map']:.4f} "
                    f"mAP@1000 {at_1000:.4f} ({seconds:.0f} s; {recipe.split(' (')[0]})",
                    flush=True,
                )
            rows.append(row)
            results.record(
                BENCHMARK, f"{method} {bits} bits mAP@all", statistics.fmean(row.map_all), "mAP"
            )
    rows += baseline_rows(path, bits_list, seeds, baselines)
    text = table(rows, data, seeds, extra, notes)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    atomic_files.write_text(args.output, text)
    print("\n" + text + f"\nwritten to {args.output}")


if __name__ == "__main__":
    main(sys.argv[1:])
