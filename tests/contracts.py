"""Contract tests as helpers: the checks every registered component must pass, written
once and called from each component's tests (keras-hub's `run_layer_test` idea).

    run_method_test(method, tmp_path, data_dir, **config)   # a registered method
    run_loss_test(loss_class, labels_kind=..., **kwargs)      # its loss layer
    run_scorer_test(scorer, reference_distances)              # a scorer
    run_dataset_test(dataset)                                 # a registered dataset

Each takes the component and tiny inputs, and asserts properties that hold for every
component of the family, so a new method, loss, scorer or dataset is covered by one
call.
"""

from __future__ import annotations

import inspect
import json
import os
import sys

import numpy as np
from worker_process import worker

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------

# What a method contract trains: a small CNN on 32 px built-in images, 4 steps of 16,
# validation every 2 steps (so the resumed run validates where the full one does).
CONTRACT_CONFIG = dict(
    dataset="builtin",
    backbone="small_cnn",
    bits=16,
    batch_size=16,
    steps=4,
    eval_every=2,
    checkpoint_every=2,
    log_every=2,
    validation_size=32,
    image_size=32,
    crop_size=28,
)


def run_method_test(method: str, tmp_path, data_dir, sizes=(160, 30, 80), **config) -> dict:
    """Trains `method` on the built-in dataset at `data_dir` (one subprocess,
    tests/method_contract_run.py) and checks what every method must do:

    - two replicas (MirroredStrategy over two logical CPUs) train like one device: the
      network's variables agree to float rounding, the database codes nearly all;
    - a run stopped halfway and resumed ends where the uninterrupted run ends;
    - the exported SavedModel runs in a process without wsdhash and encodes database
      images into what the run's codes file (and so the index) holds for them (for a
      method with learned database codes: the sign of the file's network features);
    - the run's mAP is its codes file's, through the file's scorer, and equals a
      brute-force ranking of the scorer's distances.

    Returns the one-device run's metrics.
    """
    import tensorflow as tf

    from wsdhash.eval import read_codes_file
    from wsdhash.training.config import config_from_dict, to_flat_dict

    train, query, database = sizes
    options = dict(seed=0, num_train=train, num_query=query, num_database=database, image_size=32)
    settings = {
        **CONTRACT_CONFIG,
        "method": method,
        "data_dir": str(data_dir),
        "dataset_options": options,
        **config,
    }
    train_config = config_from_dict(settings)  # flat settings, as run_info.json holds them
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(to_flat_dict(train_config)))
    # One long-lived helper per test process trains every method's contract runs.
    script = os.path.join(HERE, "method_contract_run.py")
    worker("method_contract", [sys.executable, script, "--serve"], env=_helper_env()).call(
        {"config": str(config_path), "output": str(tmp_path)}
    )

    # 1 vs 2 replicas, and resumed vs uninterrupted.
    readers = {
        name: tf.train.load_checkpoint(
            tf.train.latest_checkpoint(str(tmp_path / name / "checkpoints"))
        )
        for name in ("one", "two", "resumed")
    }
    names = [n for n in readers["one"].get_variable_to_shape_map() if n.startswith("model/")]
    assert names, "no model variables in the checkpoint"
    for name in names:
        a = readers["one"].get_tensor(name)
        if not (isinstance(a, np.ndarray) and a.dtype.kind == "f"):
            continue
        np.testing.assert_allclose(
            a,
            readers["two"].get_tensor(name),
            rtol=1e-4,
            atol=1e-5,
            err_msg=f"{method}: 2 replicas, {name}",
        )
        np.testing.assert_allclose(
            a,
            readers["resumed"].get_tensor(name),
            rtol=1e-6,
            atol=1e-6,
            err_msg=f"{method}: resumed, {name}",
        )
    files = {name: read_codes_file(tmp_path / name / "codes.h5") for name in readers}
    held = {name: _index_codes(contents) for name, contents in files.items()}
    np.testing.assert_array_equal(held["one"], held["resumed"], err_msg=f"{method}: resumed")
    agreement = np.mean(held["one"] == held["two"])
    assert agreement >= 0.98, f"{method}: 2 replicas agree on {agreement:.3f} of the codes"

    # Export and serve without wsdhash. A method that learns the database's codes (ADSH)
    # serves the network's codes, so those are what the served model must reproduce.
    contents = files["one"]
    from wsdhash.eval import binarize, pack_codes
    from wsdhash.methods import METHODS

    served_codes = held["one"]
    if METHODS.get(method).learned_database_codes:
        served_codes = pack_codes(binarize(contents.database.features))
    _check_served_codes(tmp_path / "one" / "saved_model", contents, served_codes, tmp_path)
    _check_fingerprints(tmp_path, files)

    # Evaluation through the codes file's scorer, against a brute-force ranking.
    metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    _check_evaluation(contents, metrics)
    return metrics


def _helper_env() -> dict:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def _index_codes(contents) -> np.ndarray:
    """What an index of the codes file's database holds (the scorer kind says)."""
    from wsdhash.eval.scorers import scorer_kind

    return np.asarray(scorer_kind(contents).index_codes(contents.database))


def _check_fingerprints(tmp_path, files: dict) -> None:
    """The codes file's network is the export's, and the run's rebuilt model's for the
    two-replica run too (synchronised batch norm there): the service's provenance check
    (wsdhash/service/engine.py) then accepts an index of these codes with this model."""
    from wsdhash.export import trained_run
    from wsdhash.model_fingerprint import export_fingerprint, weights_fingerprint

    one = files["one"].model_fingerprint
    assert one and export_fingerprint(str(tmp_path / "one" / "saved_model")) == one
    model = trained_run.load_trained_model(str(tmp_path / "two"))[0]
    assert weights_fingerprint(model) == files["two"].model_fingerprint


def _check_served_codes(saved_model, contents, held, tmp_path, count: int = 6) -> None:
    paths = [str(p) for p in contents.database.ids[:count]]
    outputs = tmp_path / "served.npz"
    script = os.path.join(HERE, "serving_check_run.py")  # plain TensorFlow, no wsdhash
    worker("serving_check", [sys.executable, script], env=_helper_env()).call(
        {"saved_model": str(saved_model), "images": paths, "output": str(outputs)}
    )
    served = np.load(outputs)
    assert served["valid"].all()
    key = "quantization_codes" if bool(served["quantized"]) else "packed_codes"
    np.testing.assert_array_equal(served[key], held[:count], err_msg=f"served {key}")
    np.testing.assert_allclose(
        served["embedding"], contents.database.features[:count], rtol=1e-4, atol=1e-4
    )


def _check_evaluation(contents, metrics: dict) -> None:
    from wsdhash.eval.file_evaluation import evaluate_codes_file
    from wsdhash.eval.protocol import EvalProtocol
    from wsdhash.eval.scorers import scorer_for_codes_file

    # The metrics name their conventions: "mAP@1000[ties=index,empty=zero]".
    cutoff = metrics["map_name"].split("@", 1)[1].split("[", 1)[0]
    topk = None if cutoff == "all" else int(cutoff)
    empty = "skip" if "empty=skip" in metrics["map_name"] else "zero"
    again = evaluate_codes_file(contents, EvalProtocol(topk=topk, empty=empty))
    assert again.map_name == metrics["map_name"]
    assert abs(again.map - metrics["map"]) <= 1e-9
    keys = scorer_for_codes_file(contents).keys(0, len(contents.query.labels))
    reference = brute_force_map(keys, contents.query.labels, contents.database.labels, topk, empty)
    assert abs(reference - metrics["map"]) <= 1e-6, (reference, metrics["map"])


def brute_force_map(keys, query_labels, database_labels, topk, empty="zero") -> float:
    """mAP@topk by a plain loop: each query ranks the database by its keys (smaller
    first, ties in database order), relevant = sharing a label (docs/evaluation.md)."""
    aps = []
    for q in range(len(query_labels)):
        order = np.argsort(np.asarray(keys[q]), kind="stable")
        relevant = (database_labels[order] @ query_labels[q]) > 0
        total = relevant.sum()
        if total == 0:
            if empty == "skip":
                continue
            aps.append(0.0)
            continue
        ranked = relevant[: topk or len(relevant)]
        hits = np.cumsum(ranked)
        precision = hits / np.arange(1, len(ranked) + 1)
        found = ranked.sum()
        aps.append(float((precision * ranked).sum() / found) if found else 0.0)
    return float(np.mean(aps)) if aps else 0.0


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------


def run_loss_test(
    loss_class,
    labels_kind: str = "multi",
    bits: int = 16,
    classes: int = 4,
    batch: int = 10,
    keys=None,
    output_dim=None,
    **kwargs,
) -> None:
    """What every loss layer must do for the trainer: (B,) float32 finite terms with a
    "loss" key; references given as (codes, labels) pairs or not at all; the batch
    split into two halves against the whole batch as references (two replicas) gives
    the same per-example values and gradients; config round trip. A loss whose terms
    takes `features` gets random backbone features (and the references' as
    `ref_features`), one that takes `example_index` the rows 0..B-1."""
    import pytest
    import tensorflow as tf

    rng = np.random.default_rng(0)
    # The model's output width: K for binary codes (WSDHQ: its embedding dimension).
    width = output_dim or bits
    codes = tf.Variable(np.tanh(rng.normal(size=(batch, width))).astype(np.float32))
    if labels_kind == "single":
        labels = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, batch)]
    else:
        labels = (rng.random((batch, classes)) < 0.4).astype(np.float32)
        labels[0, :2] = 1
    labels = tf.constant(labels)
    layer = loss_class(bits=bits, num_classes=classes, seed=3, **kwargs)
    # Losses that compare codes with the backbone's features (unsupervised methods)
    # take them as `features`, and the references' as `ref_features`.
    # A loss with per-example state (ADSH's database codes) takes the rows as
    # `example_index`. (Extra inputs are keywords of the loss's `terms`.)
    parameters = inspect.signature(layer.terms).parameters
    features = None
    if "features" in parameters:
        features = tf.constant(rng.normal(size=(batch, 7)).astype(np.float32))
    index = tf.range(batch, dtype=tf.int64) if "example_index" in parameters else None

    def with_features(rows=None):
        extra = {} if index is None else {"example_index": index[rows or slice(None)]}
        if features is None:
            return extra
        if rows is None:
            return {**extra, "features": features}
        return {**extra, "features": features[rows], "ref_features": features}

    with tf.GradientTape() as tape:
        whole = layer(codes, labels, **with_features())
        total = tf.reduce_sum(whole["loss"])
    want = tape.gradient(total, codes).numpy()
    assert "loss" in whole and (keys is None or set(whole) == set(keys)), sorted(whole)
    for value in whole.values():
        assert value.shape == (batch,) and value.dtype == tf.float32
        assert np.all(np.isfinite(value.numpy()))
    with pytest.raises(ValueError, match="both"):
        layer(codes, labels, ref_codes=codes, **with_features())
    half = batch // 2
    with tf.GradientTape() as tape:
        parts = [
            layer(
                codes[s : s + half],
                labels[s : s + half],
                ref_codes=codes,
                ref_labels=labels,
                anchor_offset=s,
                **with_features(slice(s, s + half)),
            )
            for s in (0, half)
        ]
        split_total = tf.reduce_sum([tf.reduce_sum(p["loss"]) for p in parts])
    got = tape.gradient(split_total, codes).numpy()
    for name in whole:
        np.testing.assert_allclose(
            np.concatenate([p[name].numpy() for p in parts]),
            whole[name].numpy(),
            rtol=1e-5,
            atol=1e-6,
            err_msg=name,
        )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    clone = loss_class.from_config(layer.get_config())
    again = clone(codes, labels, **with_features())
    np.testing.assert_allclose(again["loss"].numpy(), whole["loss"].numpy(), rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Scorers
# ---------------------------------------------------------------------------------------


def run_scorer_test(scorer, reference_distances, labels=None, topk=None) -> None:
    """A scorer's ranking keys order every query's items as `reference_distances` (a
    (Q, N) matrix from a slow formula) do, block by block and after a column
    permutation, and the chunked evaluator's mAP over it equals a brute-force one."""
    from wsdhash.eval import EvalProtocol, evaluate_retrieval

    reference = np.asarray(reference_distances, np.float64)
    queries, items = reference.shape
    keys = np.concatenate([scorer.keys(s, min(s + 3, queries)) for s in range(0, queries, 3)])
    assert keys.shape == (queries, items)
    for q in range(queries):
        np.testing.assert_array_equal(
            np.argsort(keys[q], kind="stable"), np.argsort(reference[q], kind="stable")
        )
    permutation = np.random.default_rng(1).permutation(items)
    np.testing.assert_array_equal(
        scorer.permuted(permutation).keys(0, queries), keys[:, permutation]
    )
    if labels is not None:
        query_labels, database_labels = labels
        result = evaluate_retrieval(scorer, labels, EvalProtocol(topk=topk))
        want = brute_force_map(reference, query_labels, database_labels, topk)
        assert abs(result.map - want) <= 1e-9, (result.map, want)


# ---------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------


def run_dataset_test(dataset, check_images: bool = True) -> None:
    """A registered dataset's splits: the protocol's three splits exist, each is a
    `SplitData` whose rows agree, labels are 0/1, query and database share the label
    space, train and query hold different items, and the image files exist."""
    from wsdhash.data.types import SplitData

    for name in ("train", "query", "database"):
        assert name in dataset.splits, (dataset.name, name)
    splits = {name: dataset.split(name) for name in ("train", "query", "database")}
    for name, split in splits.items():
        assert isinstance(split, SplitData) and len(split) > 0, name
        for matrix in (split.labels, split.tags):
            assert matrix.shape[0] == len(split)
            assert set(np.unique(matrix)) <= {0, 1}, name
        if check_images and dataset.image_files:
            assert all(os.path.isfile(p) for p in split.paths), name
    assert splits["query"].num_classes == splits["database"].num_classes > 0
    assert not set(map(str, splits["train"].paths)) & set(map(str, splits["query"].paths))
    if dataset.topk is not None:
        assert 0 < dataset.topk
