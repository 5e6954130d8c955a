"""Weak tags: WSDHQ against the tags-as-labels baselines and the unsupervised ones.

    python bench/weak_tags.py [--data=builtin,cifar10] [--bits=32] [--steps=600]
                              [--p_drop=0.3 --p_swap=0.1 --noise_mean=3 --noise_vocabulary=100]
                              [--output=bench_results/weak_tags.md]

Every learned row trains a head on a features file, from tags only, through
`wsdhash.training.trainer.train`; the unsupervised rows (raw-feature cosine, LSH, PCAH,
ITQ) use the same features. All rows are ranked by mAP@all on the ground-truth labels
of the query and database splits, which no learned row sees.

Data:

* `builtin`: the built-in dataset's noisy user tags (1-3 of 16 shape concepts per
  image, synonyms, colour words, spurious and content-free tags). Its features are the
  hand-made image features of `wsdhash.baselines.image_features` (thumbnails and a
  colour histogram, standardised with the training split's statistics), written once
  into a features file; `--builtin_features=F.h5` takes another features file of it.
* `cifar10`: the shared real CIFAR-10 MobileNet features (`bench/shared_features.py`;
  skipped when absent) with simulated user tags (`bench/simulated_tags.py`): every
  true label tag dropped with `--p_drop`, swapped for another class's tag with
  `--p_swap`, plus Poisson(`--noise_mean`) Zipf-distributed noise tags from
  `--noise_vocabulary` words; seed `--tag_seed`.

Rows (`--rows` picks some):

* `wsdhq_w2v` / `wsdhq_ppmi`: WSDHQ with the tags processed as
  `python -m wsdhash.tags --vectors=train` (word2vec trained on the tag lists) or
  `--vectors=ppmi` (PPMI-SVD of their co-occurrence) does, centred, tanh head, AQD.
* `idhn_raw`, `csq_raw`: IDHN and CSQ on the raw multi-hot tag matrix
  (`--supervision=tags`); `idhn_merged`, `csq_merged`: the same on the tags the tag
  pipeline left (`--tag_dir` of the PPMI run: synonyms merged, dropped tags gone).
* `csq_labels`: CSQ on the true labels, a reference for what the features allow.

No validation queries are carved (`--validation_size=0`, as the WSDHQ flagfiles): the
training split's ground-truth labels would otherwise choose the checkpoint. Run by
hand; one row per setting and seed, means over `--seeds`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import results  # noqa: E402  (bench/ is on the path)
import shared_features  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from simulated_tags import simulated_tags  # noqa: E402

BENCHMARK = "weak_tags"
LEARNED = (
    "wsdhq_w2v",
    "wsdhq_ppmi",
    "idhn_raw",
    "idhn_merged",
    "csq_raw",
    "csq_merged",
    "csq_labels",
)
UNSUPERVISED = ("cosine", "lsh", "pcah", "itq")

FLAGS = flags.FLAGS
flags.DEFINE_list("data", ["builtin", "cifar10"], "Datasets: builtin, cifar10.")
flags.DEFINE_list("rows", list(LEARNED + UNSUPERVISED), "Rows to run.")
flags.DEFINE_integer("bits", 32, "Code length (WSDHQ: 8 bits per codebook).")
flags.DEFINE_list("seeds", ["0"], "Training seeds; each row is the mean over them.")
flags.DEFINE_integer("steps", 600, "Training steps of every learned row (batch 64).")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate of every learned row.")
flags.DEFINE_float(
    "wsdhq_quantization_weight", 1e-4, "WSDHQ lambda (the published 1e-4 by default)."
)
flags.DEFINE_integer("tag_dim", 100, "Dimension of the word2vec and PPMI-SVD tag vectors.")
flags.DEFINE_string("builtin_dir", "data/builtin", "The built-in dataset (generated if needed).")
flags.DEFINE_list("builtin_sizes", ["5000", "500", "5000"], "Built-in train,query,database.")
flags.DEFINE_string("builtin_features", None, "A features file of the built-in dataset.")
flags.DEFINE_enum(
    "builtin_backbone",
    "features",
    ["features", "small_cnn"],
    "builtin: learned rows train a head on the features file, or the small CNN from "
    "scratch on the images (as bench/methods.py; the unsupervised rows keep the features).",
)
flags.DEFINE_string(
    "cifar10_npz",
    shared_features.NPZ,
    "cifar10: the shared features (../shared/realdata/ beside the repository by default).",
)
flags.DEFINE_float("p_drop", 0.3, "cifar10: probability a true label tag is dropped.")
flags.DEFINE_float("p_swap", 0.1, "cifar10: probability it is swapped for another class's.")
flags.DEFINE_float("noise_mean", 3.0, "cifar10: mean number of noise tags per image.")
flags.DEFINE_integer("noise_vocabulary", 100, "cifar10: number of noise words.")
flags.DEFINE_integer("tag_seed", 0, "cifar10: seed of the simulated tags.")
flags.DEFINE_string("workdir", "bench_results/weak_tags", "Features, tags and runs go here.")
flags.DEFINE_string("output", "bench_results/weak_tags.md", "The Markdown tables.")

TITLES = {
    "wsdhq_w2v": "WSDHQ, word2vec tag vectors (AQD)",
    "wsdhq_ppmi": "WSDHQ, PPMI-SVD tag vectors (AQD)",
    "idhn_raw": "IDHN on the raw tags",
    "idhn_merged": "IDHN on the processed tags",
    "csq_raw": "CSQ on the raw tags",
    "csq_merged": "CSQ on the processed tags",
    "csq_labels": "CSQ on the true labels (reference)",
    "cosine": "raw features, cosine (no hashing)",
    "lsh": "LSH",
    "pcah": "PCAH",
    "itq": "ITQ",
}


@dataclasses.dataclass
class Row:
    name: str
    map: float
    map_name: str
    seconds: float


# --- Data ---------------------------------------------------------------------------


def builtin_features_file(folder: str) -> str:
    """The built-in dataset with standardised hand-made image features, as a features
    file (made once)."""
    if FLAGS.builtin_features:
        return FLAGS.builtin_features
    from wsdhash.baselines.image_features import image_features
    from wsdhash.data import datasets
    from wsdhash.data.builtin import generate_builtin

    train, query, database = (int(n) for n in FLAGS.builtin_sizes)
    sizes = dict(num_train=train, num_query=query, num_database=database)
    path = os.path.join(folder, f"builtin_{train}_{query}_{database}.h5")
    if os.path.exists(path):
        return path
    generate_builtin(FLAGS.builtin_dir, seed=0, **sizes)
    dataset = datasets.get_dataset("builtin", FLAGS.builtin_dir, seed=0, **sizes)
    splits = {name: dataset.split(name) for name in ("train", "query", "database")}
    features = {n: image_features([str(p) for p in s.paths]) for n, s in splits.items()}
    mean, std = features["train"].mean(0), features["train"].std(0) + 1e-6
    data = {
        name: {"features": (features[name] - mean) / std, "labels": s.labels, "paths": s.paths}
        for name, s in splits.items()
    }
    tags = {name: s.tags for name, s in splits.items()}
    os.makedirs(folder, exist_ok=True)
    return shared_features.write_features_file(
        path,
        data,
        splits["train"].label_names,
        tags=tags,
        tag_names=splits["train"].tag_names,
        description="hand-made image features (wsdhash.baselines.image_features), standardised",
    )


def cifar10_features_file(folder: str) -> str:
    """The shared CIFAR-10 features with simulated tags on the training rows."""
    name = (
        f"cifar10_drop{FLAGS.p_drop}_swap{FLAGS.p_swap}_noise{FLAGS.noise_mean}x"
        f"{FLAGS.noise_vocabulary}_seed{FLAGS.tag_seed}.h5"
    )
    path = os.path.join(folder, name)
    if os.path.exists(path):
        return path
    arrays = shared_features.load(FLAGS.cifar10_npz)
    data = shared_features.splits(arrays)
    label_names = arrays["label_names"].astype(str)
    train_tags, tag_names = simulated_tags(
        data["train"]["labels"],
        label_names,
        p_drop=FLAGS.p_drop,
        p_swap=FLAGS.p_swap,
        noise_mean=FLAGS.noise_mean,
        noise_vocabulary=FLAGS.noise_vocabulary,
        seed=FLAGS.tag_seed,
    )
    tags = {
        "train": train_tags,
        "query": np.zeros((len(data["query"]["paths"]), 0), np.uint8),
        "database": np.zeros((len(data["database"]["paths"]), 0), np.uint8),
    }
    os.makedirs(folder, exist_ok=True)
    return shared_features.write_features_file(
        path, data, label_names, tags=tags, tag_names=tag_names
    )


def process_tags(train, folder: str, vectors: str) -> str:
    """The training split's tags processed into `folder` as `python -m wsdhash.tags
    --vectors=train|ppmi` does with its defaults (centred vectors)."""
    from wsdhash.tagging import ppmi_vectors, word_vectors
    from wsdhash.tagging import process_tags as run_processing
    from wsdhash.tagging.files import write_outputs

    vocabulary = list(train.tag_names)
    if vectors == "ppmi":
        keyed = ppmi_vectors.ppmi_svd_vectors(vocabulary, train.tags, dim=FLAGS.tag_dim)
    else:
        sentences = word_vectors.tag_sentences(vocabulary, train.tags)
        keyed = word_vectors.train_word2vec(sentences, vector_size=FLAGS.tag_dim, seed=0)
    result = run_processing(vocabulary, train.tags, keyed, center=True)
    write_outputs(folder, result, source={"vectors": vectors})
    print(f"  tags ({vectors}): {len(vocabulary)} raw -> {len(result.merge_map)} processed")
    return folder


# --- Rows ---------------------------------------------------------------------------


def training_data(data: str, path: str) -> tuple:
    """What the learned rows train on: (the `DataConfig`, the backbone)."""
    from wsdhash.training.config import DataConfig

    if data == "builtin" and FLAGS.builtin_backbone == "small_cnn":
        train, query, database = (int(n) for n in FLAGS.builtin_sizes)
        options = dict(seed=0, num_train=train, num_query=query, num_database=database)
        settings = DataConfig(
            dataset="builtin", data_dir=FLAGS.builtin_dir, dataset_options=options
        )
        return settings, "small_cnn"
    return DataConfig(dataset="features", data_dir=path), "features"


def train_row(name: str, data: tuple, tag_dirs: dict, folder: str, seed: int, topk) -> Row:
    from wsdhash.training import trainer
    from wsdhash.training.config import (
        EvaluationConfig,
        MethodConfig,
        ModelConfig,
        OptimizerConfig,
        SamplerConfig,
        ScheduleConfig,
        TrainConfig,
    )

    method, _, targets = name.partition("_")
    supervision = "labels" if targets == "labels" else "tags"
    tag_dir = tag_dirs.get("ppmi" if targets == "merged" else targets, "")
    steps = FLAGS.steps
    options = {}
    if method == "wsdhq":
        options = {
            "quantization_weight": FLAGS.wsdhq_quantization_weight,
            "quantizer_update_every": max(steps // 3, 1),
        }
    data_settings, backbone = data
    config = TrainConfig(
        data=data_settings,
        model=ModelConfig(
            backbone=backbone, head="tanh" if method == "wsdhq" else "linear_bn", bits=FLAGS.bits
        ),
        method=MethodConfig(
            name=method,
            options=options,
            supervision=supervision,
            tag_dir=tag_dir,
        ),
        sampler=SamplerConfig(batch_size=64),
        optimizer=OptimizerConfig(name="adam", learning_rate=FLAGS.learning_rate),
        schedule=ScheduleConfig(steps=steps, log_every=max(steps // 5, 1), checkpoint_every=steps),
        evaluation=EvaluationConfig(validation_size=0, topk=topk),
        seed=seed,
        workdir=os.path.join(folder, f"{name}_{backbone}_{FLAGS.bits}_seed{seed}"),
    )
    # A bench run starts from scratch: an earlier run with other settings would refuse
    # to resume.
    shutil.rmtree(config.workdir, ignore_errors=True)
    started = time.perf_counter()
    metrics = trainer.train(config)
    return Row(name, metrics["map"], metrics["map_name"], time.perf_counter() - started)


def unsupervised_row(name: str, splits, seed: int, topk) -> Row:
    from wsdhash.baselines import BASELINES
    from wsdhash.eval import EvalProtocol, evaluate_retrieval, pack_codes
    from wsdhash.eval.scorers import HammingScorer, MatrixScorer

    query, database = splits["query"], splits["database"]
    started = time.perf_counter()
    if name == "cosine":
        q = query.features / np.linalg.norm(query.features, axis=1, keepdims=True)
        d = database.features / np.linalg.norm(database.features, axis=1, keepdims=True)
        scorer = MatrixScorer(scores=q @ d.T)
    else:
        model = BASELINES.get(name)(FLAGS.bits, seed=seed).fit(splits["train"].features)
        scorer = HammingScorer(
            pack_codes(model.encode(query.features)),
            pack_codes(model.encode(database.features)),
            FLAGS.bits,
        )
    result = evaluate_retrieval(
        scorer,
        (query.labels, database.labels),
        EvalProtocol(topk=topk or None, radius_curve=False),
    )
    return Row(name, result.map, result.map_name, time.perf_counter() - started)


def _mean(rows: list[Row]) -> Row:
    return Row(
        rows[0].name,
        statistics.fmean(r.map for r in rows),
        rows[0].map_name,
        statistics.fmean(r.seconds for r in rows),
    )


def run_dataset(data: str) -> tuple[str, list[Row]]:
    from wsdhash.data import features_file

    folder = os.path.join(FLAGS.workdir, data)
    path = builtin_features_file(folder) if data == "builtin" else cifar10_features_file(folder)
    _, splits = features_file.read_features_file(path)
    train = splits["train"]
    print(f"{data}: {path}: {len(train)} training rows, {train.tags.shape[1]} raw tags")
    tag_dirs = {}
    if any(row in FLAGS.rows for row in ("wsdhq_w2v",)):
        tag_dirs["w2v"] = process_tags(train, os.path.join(folder, "tags_w2v"), "w2v")
    if any(row in FLAGS.rows for row in ("wsdhq_ppmi", "idhn_merged", "csq_merged")):
        tag_dirs["ppmi"] = process_tags(train, os.path.join(folder, "tags_ppmi"), "ppmi")
    seeds = [int(s) for s in FLAGS.seeds]
    topk = 0  # mAP@all
    rows = []
    learned_data = training_data(data, path)
    for name in FLAGS.rows:
        if name in LEARNED:
            runs = [train_row(name, learned_data, tag_dirs, folder, seed, topk) for seed in seeds]
        else:
            runs = [unsupervised_row(name, splits, seed, topk) for seed in seeds]
        rows.append(_mean(runs))
        print(f"  {name}: {rows[-1].map:.4f} ({rows[-1].seconds:.0f} s)")
        results.record(BENCHMARK, f"{data} {name} mAP", rows[-1].map, "mAP")
    if data == "builtin":
        source = (
            f"built-in dataset {','.join(FLAGS.builtin_sizes)}, its user tags; learned rows on "
            + (
                "the small CNN from scratch"
                if FLAGS.builtin_backbone == "small_cnn"
                else "the hand-made features"
            )
            + ", unsupervised rows on the hand-made features"
        )
    else:
        source = (
            f"shared CIFAR-10 MobileNet features, simulated tags (p_drop {FLAGS.p_drop}, "
            f"p_swap {FLAGS.p_swap}, {FLAGS.noise_mean} noise tags of {FLAGS.noise_vocabulary}, "
            f"seed {FLAGS.tag_seed})"
        )
    return source, rows


def table(source: str, rows: list[Row]) -> str:
    name = rows[0].map_name if rows else "mAP"
    lines = [
        (
            f"Data: {source}; {FLAGS.bits} bits; learned rows: {FLAGS.steps} steps of 64, Adam "
            f"{FLAGS.learning_rate}, seeds {','.join(FLAGS.seeds)}, no validation carve."
        ),
        "",
        f"| codes | {name} on the true labels | time |",
        "|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: -r.map):
        lines.append(f"| {TITLES[row.name]} | {row.map:.4f} | {row.seconds:.0f} s |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    from wsdhash import atomic_files

    logging.set_verbosity(logging.WARNING)
    unknown = sorted(set(FLAGS.rows) - set(LEARNED + UNSUPERVISED))
    if unknown:
        raise app.UsageError(f"--rows: unknown {unknown}; choose from {LEARNED + UNSUPERVISED}.")
    tables = []
    for data in FLAGS.data:
        if data == "cifar10" and not shared_features.available(FLAGS.cifar10_npz):
            print(f"cifar10: {FLAGS.cifar10_npz} absent, skipped (--cifar10_npz)")
            continue
        if data not in ("builtin", "cifar10"):
            raise app.UsageError(f"--data: unknown {data!r}; choose builtin, cifar10.")
        tables.append(table(*run_dataset(data)))
    text = "\n".join(tables)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    atomic_files.write_text(FLAGS.output, text)
    print("\n" + text + f"\nwritten to {FLAGS.output}")


if __name__ == "__main__":
    app.run(main)
