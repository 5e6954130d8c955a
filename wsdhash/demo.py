"""The main job on the built-in dataset: build it, train, evaluate, export, compare.

    python -m wsdhash.demo [--data_dir=data/builtin] [--workdir=checkpoints/demo]

1. Generates the built-in dataset (no download).
2. Trains OrthoHash (a small CNN from scratch, on the training labels) and selects the
   checkpoint on validation queries carved from the training split.
3. Runs the unsupervised baselines (LSH, PCAH, ITQ) on hand-made image features, next
   to two references: random codes (chance) and the unhashed features.
4. Exports the trained model as a SavedModel and prints one table.

Each method's codes go to `<workdir>/<method>_<bits>.h5` (evaluate one with
`python -m wsdhash.evaluate`), the training run to `<workdir>/orthohash_<bits>/`, the
SavedModel to `<workdir>/orthohash_<bits>/saved_model/`, all metrics to
`<workdir>/metrics.json`.
"""

from __future__ import annotations

import os
import time

from absl import app, flags
import numpy as np

from wsdhash import atomic_files
from wsdhash.baselines import BASELINES
from wsdhash.baselines.image_features import image_features
from wsdhash.data import datasets
from wsdhash.eval import CodesFile, CodesSplit, evaluate_retrieval, pack_codes, write_codes_file

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "data/builtin", "Where the built-in dataset is (or is generated).")
flags.DEFINE_string("workdir", "checkpoints/demo", "Where codes files and metrics go.")
flags.DEFINE_list("bits", ["16", "32", "64"], "Code lengths.")
flags.DEFINE_list("methods", ["lsh", "pcah", "itq"], "Baselines to run (see wsdhash.baselines).")
flags.DEFINE_integer("seed", 0, "Seeds the dataset and every baseline.")
flags.DEFINE_integer("num_train", 5000, "Built-in dataset: training images.")
flags.DEFINE_integer("num_query", 500, "Built-in dataset: query images.")
flags.DEFINE_integer("num_database", 5000, "Built-in dataset: database images.")
flags.DEFINE_string("ties", "index", "Tie policy of the evaluation.")
flags.DEFINE_string("empty", "zero", "Zero-relevant query policy of the evaluation.")
flags.DEFINE_integer("train_bits", 32, "Code length of the trained model (0: skip training).")
flags.DEFINE_integer("train_steps", 400, "Training steps (batch 64).")


def _evaluate(query, database, topk, **ranking):
    return evaluate_retrieval(
        query.labels,
        database.labels,
        topk=topk,
        ties=FLAGS.ties,
        empty=FLAGS.empty,
        seed=FLAGS.seed,
        tie_bounds=True,
        **ranking,
    )


def _train_and_export(topk):
    """Trains OrthoHash on the built-in dataset, exports it, and evaluates its codes."""
    from wsdhash import serving
    from wsdhash.eval import read_codes_file
    from wsdhash.training import trainer

    workdir = os.path.join(FLAGS.workdir, f"orthohash_{FLAGS.train_bits}")
    config = trainer.TrainConfig(
        dataset="builtin",
        data_dir=FLAGS.data_dir,
        dataset_options=dict(
            seed=FLAGS.seed,
            num_train=FLAGS.num_train,
            num_query=FLAGS.num_query,
            num_database=FLAGS.num_database,
        ),
        backbone="small_cnn",
        head="linear_bn",
        bits=FLAGS.train_bits,
        method="orthohash",
        method_options=dict(multiclass=True),
        batch_size=64,
        steps=FLAGS.train_steps,
        seed=FLAGS.seed,
        workdir=workdir,
        eval_every=max(FLAGS.train_steps // 4, 1),
        validation_size=min(500, FLAGS.num_train // 5),
        log_every=max(FLAGS.train_steps // 10, 1),
    )
    trainer.train(config)
    model, _, pipeline_config = serving.load_trained_model(workdir)
    exported = serving.export_saved_model(
        model, pipeline_config, os.path.join(workdir, "saved_model"), overwrite=True
    )
    print(f"trained model exported to {exported}")
    codes = read_codes_file(os.path.join(workdir, "codes.h5"))
    return _evaluate(
        codes.query,
        codes.database,
        topk,
        query_codes=codes.query.codes,
        database_codes=codes.database.codes,
        bits=codes.bits,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    bits_list = [int(b) for b in FLAGS.bits]
    started = time.perf_counter()
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
    features = {name: image_features(list(s.paths)) for name, s in splits.items()}
    # Standardise with training statistics so that no feature group dominates.
    mean, std = features["train"].mean(0), features["train"].std(0) + 1e-6
    features = {name: (f - mean) / std for name, f in features.items()}
    query, database = splits["query"], splits["database"]
    topk = dataset.topk

    rows = []
    if FLAGS.train_bits:
        rows.append(("orthohash (trained, small_cnn)", FLAGS.train_bits, _train_and_export(topk)))
    reference = _evaluate(query, database, topk, scores=features["query"] @ features["database"].T)
    rows.append(("features, inner product (no hashing)", features["query"].shape[1], reference))
    rng = np.random.default_rng(FLAGS.seed)
    for bits in bits_list:
        random_codes = {
            name: pack_codes(rng.integers(0, 2, (len(splits[name]), bits)))
            for name in ("query", "database")
        }
        result = _evaluate(
            query,
            database,
            topk,
            query_codes=random_codes["query"],
            database_codes=random_codes["database"],
            bits=bits,
        )
        rows.append(("random codes", bits, result))
        for method in FLAGS.methods:
            model = BASELINES.get(method)(bits, seed=FLAGS.seed).fit(features["train"])
            codes = {
                name: pack_codes(model.encode(features[name])) for name in ("query", "database")
            }
            write_codes_file(
                os.path.join(FLAGS.workdir, f"{method}_{bits}.h5"),
                CodesFile(
                    bits=bits,
                    query=CodesSplit(codes["query"], query.labels, ids=query.paths),
                    database=CodesSplit(codes["database"], database.labels, ids=database.paths),
                ),
            )
            result = _evaluate(
                query,
                database,
                topk,
                query_codes=codes["query"],
                database_codes=codes["database"],
                bits=bits,
            )
            rows.append((method, bits, result))

    name = rows[0][2].map_name
    assert all(result.map_name == name for _, _, result in rows)
    print(f"\n{'method':<38}{'bits':>6}{name:>36}{'P@100':>8}{'P(r<=2)':>9}")
    for method, bits, result in rows:
        within = result.precision_within_radius
        bounds = ""
        if result.tie_bounds_matter():
            bounds = f"  (ties: {result.map_pessimistic:.4f}..{result.map_optimistic:.4f})"
        print(
            f"{method:<38}{bits:>6}{result.map:>36.4f}{result.precision_at_n[100]:>8.4f}"
            f"{'' if within is None else f'{within:.4f}':>9}{bounds}"
        )
    atomic_files.write_json(
        os.path.join(FLAGS.workdir, "metrics.json"),
        [
            {"method": method, "bits": bits, **result.to_dict(include_radius_curve=False)}
            for method, bits, result in rows
        ],
    )
    print(
        f"\ncodes files and metrics.json in {FLAGS.workdir} ({time.perf_counter() - started:.0f} s)"
    )


def run():
    app.run(main)


if __name__ == "__main__":
    run()
