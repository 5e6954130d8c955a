"""Every registered method, same budget and seeds, one Markdown table.

    python bench/methods.py [--bits=16,32,64] [--steps=300] [--seeds=0]
                            [--features=F.h5] [--output=bench_results/methods.md]

Trains each method of `wsdhash.methods.METHODS` (or `--methods`) at each code length
and seed, with the same backbone, batch size, optimiser, steps and validation carve,
and fits the unsupervised baselines (LSH, PCAH, ITQ) on the same training split. Data:
the built-in dataset (a small CNN from scratch on its images; the baselines on its
hand-made image features), or with `--features` a features file from
`python -m wsdhash.extract` (the methods train a head on it; the baselines use the same
features). Methods that train from tags (WSDHQ) use the split's user tags, processed as
`python -m wsdhash.tags --vectors=train` (or `--tag_vectors=ppmi`: `--vectors=ppmi`)
does; they are left out when the split has no tags.

Every row is evaluated by the run's own scorer (Hamming, or AQD for WSDHQ) with the
protocol's R, index-ordered ties and the tie bounds, and gives precision@100 and the
training time. Run by hand; the numbers depend on the budget (`--steps`), so the table
names it.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import results  # noqa: E402  (bench/ is on the path)
from absl import app, flags, logging  # noqa: E402

BENCHMARK = "methods"
FLAGS = flags.FLAGS
flags.DEFINE_list("bits", ["16", "32", "64"], "Code lengths.")
flags.DEFINE_list("methods", [], "Registered methods to train (default: all).")
flags.DEFINE_list("seeds", ["0"], "Seeds; each row is the mean over them.")
flags.DEFINE_integer("steps", 300, "Training steps of every method (batch 64).")
flags.DEFINE_string("features", None, "A features file to train and fit on instead.")
flags.DEFINE_string("data_dir", "data/builtin", "The built-in dataset (generated if needed).")
flags.DEFINE_list("builtin_sizes", ["2000", "200", "2000"], "Built-in train,query,database.")
flags.DEFINE_string("workdir", "bench_results/methods", "Runs go here.")
flags.DEFINE_string("output", "bench_results/methods.md", "The Markdown table.")
flags.DEFINE_enum(
    "tag_vectors",
    "train",
    ["train", "ppmi"],
    "Tag vectors of the tag-supervised methods: word2vec trained on the tag lists, or "
    "PPMI-SVD of their co-occurrence (as `python -m wsdhash.tags --vectors=...`).",
)

# Per-method settings beyond the shared budget: the output layer each method's loss is
# written for (tanh outputs for WSDHQ's embedding; BN for the others, as OrthoHash).
HEADS = {"wsdhq": "tanh"}
SUPERVISION = {"wsdhq": "tags"}


@dataclasses.dataclass
class Row:
    method: str
    bits: int
    map: float
    map_name: str
    low: float
    high: float
    precision_at_100: float
    seconds: float


def _dataset():
    """(dataset name, data_dir, dataset options, backbone) of the benchmark data."""
    if FLAGS.features:
        return "features", FLAGS.features, {}, "features"
    train, query, database = (int(n) for n in FLAGS.builtin_sizes)
    options = dict(seed=0, num_train=train, num_query=query, num_database=database)
    return "builtin", FLAGS.data_dir, options, "small_cnn"


def _process_tags(split, folder: str) -> str:
    """The split's tags processed into `folder` (`--tag_vectors`: word2vec trained on the
    tag lists, or PPMI-SVD of their co-occurrence)."""
    from wsdhash.tagging import ppmi_vectors, process_tags, word_vectors
    from wsdhash.tagging.files import write_outputs

    vocabulary = list(split.tag_names)
    if FLAGS.tag_vectors == ppmi_vectors.PPMI:
        vectors = ppmi_vectors.ppmi_svd_vectors(vocabulary, split.tags)
        source = "PPMI-SVD of the training tags' co-occurrence"
    else:
        sentences = word_vectors.tag_sentences(vocabulary, split.tags)
        vectors = word_vectors.train_word2vec(sentences, seed=0)
        source = "word2vec trained on the training tags"
    result = process_tags(vocabulary, split.tags, vectors, center=True)
    write_outputs(folder, result, source={"vectors": source})
    return folder


def _train(method: str, bits: int, seed: int, tag_dir: str) -> Row:
    from wsdhash.training import trainer
    from wsdhash.training.config import (
        DataConfig,
        MethodConfig,
        ModelConfig,
        OptimizerConfig,
        SamplerConfig,
        ScheduleConfig,
        TrainConfig,
    )

    dataset, data_dir, options, backbone = _dataset()
    workdir = os.path.join(FLAGS.workdir, f"{method}_{bits}_seed{seed}")
    config = TrainConfig(
        data=DataConfig(dataset=dataset, data_dir=data_dir, dataset_options=options),
        model=ModelConfig(backbone=backbone, head=HEADS.get(method, "linear_bn"), bits=bits),
        method=MethodConfig(
            name=method,
            supervision=SUPERVISION.get(method, "labels"),
            tag_dir=tag_dir if SUPERVISION.get(method) == "tags" else "",
            # WSDHQ's quantizer runs before each of the three validations.
            options={"quantizer_update_every": max(FLAGS.steps // 3, 1)}
            if method == "wsdhq"
            else {},
        ),
        sampler=SamplerConfig(batch_size=64),
        optimizer=OptimizerConfig(name="adam", learning_rate=1e-3),
        schedule=ScheduleConfig(
            steps=FLAGS.steps,
            eval_every=max(FLAGS.steps // 3, 1),
            log_every=max(FLAGS.steps // 5, 1),
        ),
        seed=seed,
        workdir=workdir,
    )
    started = time.perf_counter()
    metrics = trainer.train(config)
    seconds = time.perf_counter() - started
    return Row(
        method,
        bits,
        metrics["map"],
        metrics["map_name"],
        metrics.get("map_pessimistic", metrics["map"]),
        metrics.get("map_optimistic", metrics["map"]),
        metrics["precision_at_n"]["100"],
        seconds,
    )


def _baseline_features():
    """{split: (features, labels)} the baselines fit and encode."""
    from wsdhash.data import datasets

    dataset, data_dir, options, _ = _dataset()
    data = datasets.get_dataset(dataset, data_dir, **options)
    splits = {name: data.split(name) for name in ("train", "query", "database")}
    if FLAGS.features:
        return {name: (s.features, s.labels) for name, s in splits.items()}, data.topk
    from wsdhash.baselines.image_features import image_features

    return {
        name: (image_features([str(p) for p in s.paths]), s.labels) for name, s in splits.items()
    }, data.topk


def _baseline(name: str, bits: int, seed: int, features, topk) -> Row:
    from wsdhash.baselines import BASELINES
    from wsdhash.eval import EvalProtocol, HammingScorer, evaluate_retrieval, pack_codes

    started = time.perf_counter()
    model = BASELINES.get(name)(bits, seed=seed).fit(features["train"][0])
    seconds = time.perf_counter() - started
    scorer = HammingScorer(
        pack_codes(model.encode(features["query"][0])),
        pack_codes(model.encode(features["database"][0])),
        bits,
    )
    labels = (features["query"][1], features["database"][1])
    result = evaluate_retrieval(
        scorer, labels, EvalProtocol(topk=topk, tie_bounds=True, radius_curve=False)
    )
    return Row(
        name,
        bits,
        result.map,
        result.map_name,
        result.map_pessimistic,
        result.map_optimistic,
        result.precision_at_n[100],
        seconds,
    )


def _mean(rows: list[Row]) -> Row:
    first = rows[0]
    return Row(
        first.method,
        first.bits,
        *(
            statistics.fmean(getattr(r, f) for r in rows) if f != "map_name" else first.map_name
            for f in ("map", "map_name", "low", "high", "precision_at_100", "seconds")
        ),
    )


def table(rows: list[Row], data: str) -> str:
    name = rows[0].map_name if rows else "mAP"
    lines = [
        f"Data: {data}; {FLAGS.steps} steps of 64, Adam 1e-3, seeds {','.join(FLAGS.seeds)}; "
        "learned rows by their own scorer, baselines by Hamming distance.",
        "",
        f"| method | bits | {name} | tie bounds | P@100 | training time |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.method} | {row.bits} | {row.map:.4f} | {row.low:.4f}..{row.high:.4f} | "
            f"{row.precision_at_100:.4f} | {row.seconds:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    from wsdhash import atomic_files
    from wsdhash.methods import METHODS

    logging.set_verbosity(logging.WARNING)
    methods = FLAGS.methods or METHODS.names()
    bits_list = [int(b) for b in FLAGS.bits]
    seeds = [int(s) for s in FLAGS.seeds]
    dataset, data_dir, options, _ = _dataset()
    if dataset == "builtin":
        from wsdhash.data.builtin import generate_builtin

        generate_builtin(data_dir, **{k: v for k, v in options.items()})
    from wsdhash.data import datasets

    train = datasets.get_dataset(dataset, data_dir, **options).split("train")
    tag_dir = ""
    if any(SUPERVISION.get(m) == "tags" for m in methods):
        if train.tags.shape[1]:
            tag_dir = _process_tags(train, os.path.join(FLAGS.workdir, "tags"))
        else:
            methods = [m for m in methods if SUPERVISION.get(m) != "tags"]
            print("no tags in the training split: tag-supervised methods left out")
    rows = []
    for method in methods:
        for bits in bits_list:
            runs = [_train(method, bits, seed, tag_dir) for seed in seeds]
            rows.append(_mean(runs))
            print(f"{method} {bits} bits: {rows[-1].map:.4f} ({rows[-1].seconds:.0f} s)")
            results.record(BENCHMARK, f"{method} {bits} bits mAP", rows[-1].map, "mAP")
    features, topk = _baseline_features()
    for name in ("lsh", "pcah", "itq"):
        for bits in bits_list:
            rows.append(_mean([_baseline(name, bits, seed, features, topk) for seed in seeds]))
            print(f"{name} {bits} bits: {rows[-1].map:.4f}")
    data = FLAGS.features or f"built-in dataset {','.join(FLAGS.builtin_sizes)} ({data_dir})"
    text = table(rows, data)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    atomic_files.write_text(FLAGS.output, text)
    print("\n" + text + f"\nwritten to {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
