"""`python -m wsdhash.extract` then `--backbone=features`: any method's head trains on the
features file, evaluates, and exports a SavedModel that takes features."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from train_helpers import read_json

from wsdhash.data import features_file
from wsdhash.eval import read_codes_file

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def _run(module, *args):
    result = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=600,
        env=ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("features_run")
    data_dir, output = root / "builtin", root / "features.h5"
    _run(
        "wsdhash.extract", "--dataset=builtin", f"--data_dir={data_dir}",
        "--builtin_sizes=320,30,80", "--builtin_image_size=32", "--image_size=32",
        "--crop_size=28", f"--output={output}", "--batch_size=64",
    )  # fmt: skip
    return root, data_dir, output


def test_orthohash_head_trains_evaluates_and_exports_on_features(extracted):
    root, _, features = extracted
    workdir, exported = root / "orthohash", root / "exported"
    _run(
        "wsdhash.train", "--backbone=features", f"--features={features}", "--method=orthohash",
        "--steps=4", "--batch_size=32", "--validation_size=32", "--hash_bit=16",
        f"--workdir={workdir}",
    )  # fmt: skip
    metrics = read_json(workdir / "metrics.json")
    assert metrics["map_name"].startswith("mAP@1000")  # the built-in protocol's R
    codes = read_codes_file(workdir / "codes.h5")
    _run("wsdhash.export", f"--workdir={workdir}", f"--output={exported}")
    loaded = tf.saved_model.load(str(exported))
    assert list(loaded.signatures) == ["serving_default"]
    _, splits = features_file.read_features_file(str(features))
    served = loaded.signatures["serving_default"](features=tf.constant(splits["query"].features))
    np.testing.assert_allclose(served["embedding"].numpy(), codes.query.features, atol=1e-5)
    np.testing.assert_array_equal(served["packed_codes"].numpy(), codes.query.codes)


def test_wsdhq_head_trains_on_features_from_tags(extracted):
    root, data_dir, features = extracted
    tag_dir = root / "tags"
    _run(
        "wsdhash.tags", f"--vocab={data_dir / 'tag_vocab.txt'}",
        f"--tag_matrix={data_dir / 'train_tag.txt'}", "--vectors=train", "--w2v_dim=16",
        "--w2v_epochs=3", f"--output_dir={tag_dir}",
    )  # fmt: skip
    workdir = root / "wsdhq"
    _run(
        "wsdhash.train", "--backbone=features", f"--features={features}", "--method=wsdhq",
        "--supervision=tags", f"--tag_dir={tag_dir}", "--head=tanh", "--steps=4",
        "--quantizer_update_every=2", "--batch_size=32", "--validation_size=32",
        "--hash_bit=16", f"--workdir={workdir}",
    )  # fmt: skip
    codes = read_codes_file(workdir / "codes.h5")
    assert codes.codebooks.shape[:2] == (2, 256) and codes.database.indices.shape == (80, 2)
    assert 0 <= read_json(workdir / "metrics.json")["map"] <= 1


def test_features_flags_are_checked(extracted, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "wsdhash.train", "--backbone=features", f"--workdir={tmp_path}"],
        capture_output=True, text=True, timeout=300, env=ENV,
    )  # fmt: skip
    assert result.returncode != 0 and "--backbone=features needs --features" in result.stderr
