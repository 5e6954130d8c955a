"""`python -m wsdhash.train --backbone=features`: a method's head trains on a features
file (two replicas, resumed, WSDHQ with its quantizer), writes codes.h5 and
metrics.json, and exports a SavedModel that takes features and returns the codes the
run wrote."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from train_helpers import read_json

from wsdhash.data import datasets, features_file, pipeline
from wsdhash.data.builtin import generate_builtin
from wsdhash.eval import read_codes_file
from wsdhash.methods import wsdhq_quantizer as quantized
from wsdhash.models import build_backbone
from wsdhash.models.assembly import with_normalization
from wsdhash.models.encoder import Encoder
from wsdhash.tagging.files import write_final_embeddings, write_merge_map

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
SIZES = {"num_train": 320, "num_query": 30, "num_database": 80}  # > 256 for WSDHQ's k-means


def _run(module, *args, check=True):
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        env=ENV,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """A features file of the tiny built-in dataset (what `python -m wsdhash.extract`
    writes; tests/test_extract_cli.py runs the command itself)."""
    root = tmp_path_factory.mktemp("features_run")
    generate_builtin(root / "builtin", image_size=32, **SIZES)
    dataset = datasets.get_dataset("builtin", str(root / "builtin"), image_size=32, **SIZES)
    spec = build_backbone("small_cnn", weights="none", crop_size=28, seed=0)
    config = pipeline.PipelineConfig(image_size=32, crop_size=28, normalization=None)
    encoder = Encoder(with_normalization(spec.model, spec.normalization), config, 64)
    settings = {
        "backbone": "small_cnn",
        "weights": "none",
        "image_size": 32,
        "crop_size": 28,
        "normalization": spec.normalization,
        "ten_crop": False,
        "dataset": "builtin",
        "data_dir": str(root / "builtin"),
        "topk": 1000,
        "feature_dim": 128,
        "wsdhash_version": "test",
    }
    path = features_file.extract_dataset(
        str(root / "features.h5"),
        dataset,
        ("train", "query", "database"),
        encoder.batches,
        settings,
    )
    return root, path


def test_orthohash_head_on_two_replicas_evaluates_and_exports_features(features):
    root, path = features
    workdir, exported = root / "orthohash", root / "exported"
    result = _run(
        "wsdhash.train",
        "--backbone=features",
        f"--features={path}",
        "--method=orthohash",
        "--steps=0",
        "--epochs=0.5",
        "--batch_size=32",
        "--validation_size=32",
        "--hash_bit=16",
        "--strategy=mirrored",
        "--cpu_replicas=2",
        "--ten_crop",
        "--crop_size=28",
        f"--workdir={workdir}",
    )
    # Image flags (e.g. from a published flagfile) are reported and left to the file.
    assert "--backbone=features ignores --crop_size, --ten_crop" in result.stderr
    # An epoch on a features file is a pass over its training rows, as on the images:
    # 320 rows less 32 validation queries and (the recipe's held-out validation) 32 more.
    assert "An epoch is 8 steps of 32: one pass over the 256 training feature rows" in (
        result.stderr
    )
    metrics = read_json(workdir / "metrics.json")
    assert metrics["map_name"].startswith("mAP@1000")  # the protocol R the file records
    assert metrics["selected_on"] == "validation" and 0 <= metrics["map"] <= 1
    assert metrics["steps"] == 4  # round(0.5 x 9)
    codes = read_codes_file(workdir / "codes.h5")
    assert codes.query.codes.shape == (30, 2) and codes.database.codes.shape == (80, 2)

    _run("wsdhash.export", f"--workdir={workdir}", f"--output={exported}")
    loaded = tf.saved_model.load(str(exported))
    assert list(loaded.signatures) == ["serving_default"]
    _, splits = features_file.read_features_file(path)
    served = loaded.signatures["serving_default"](features=tf.constant(splits["query"].features))
    np.testing.assert_allclose(served["embedding"].numpy(), codes.query.features, atol=1e-5)
    np.testing.assert_array_equal(served["packed_codes"].numpy(), codes.query.codes)


def test_wsdhq_head_on_features_resumes_with_its_quantizer(features):
    root, path = features
    # A tag model as `python -m wsdhash.tags` writes it: every tag its own group.
    num_tags = features_file.read_split(path, "train").tags.shape[1]
    tag_dir = root / "tags"
    tag_dir.mkdir()
    embeddings = np.random.default_rng(0).normal(size=(num_tags, 16))
    write_final_embeddings(tag_dir / quantized.EMBEDDINGS_FILE, embeddings)
    write_merge_map(tag_dir / quantized.MERGE_MAP_FILE, {t: [t] for t in range(num_tags)})
    workdir = root / "wsdhq"
    args = [
        "--backbone=features",
        f"--features={path}",
        "--method=wsdhq",
        "--supervision=tags",
        f"--tag_dir={tag_dir}",
        "--head=tanh",
        "--quantizer_update_every=2",
        "--batch_size=32",
        "--validation_size=32",
        "--hash_bit=16",
        "--checkpoint_every=2",
        f"--workdir={workdir}",
    ]
    _run("wsdhash.train", *args, "--steps=2")
    result = _run("wsdhash.train", *args, "--steps=4", "--resume_with_changes=steps")
    assert "Resumed from" in result.stderr and "at step 2" in result.stderr
    codes = read_codes_file(workdir / "codes.h5")
    assert codes.codebooks.shape == (2, 256, 16) and codes.database.indices.shape == (80, 2)
    metrics = read_json(workdir / "metrics.json")
    assert metrics["steps"] == 4 and 0 <= metrics["map"] <= 1


def test_a_missing_features_file_is_a_usage_error(tmp_path):
    missing = tmp_path / "missing.h5"
    result = _run(
        "wsdhash.train",
        "--backbone=features",
        f"--features={missing}",
        f"--workdir={tmp_path}",
        check=False,
    )
    assert result.returncode != 0
    assert f"--features: Features file not found: {missing}" in result.stderr
