"""bench/realdata.py and bench/shared_features.py: the real-features table is made by the
same commands a user runs (recipes, validation selection, the evaluator), and the shared
development features convert into a features file with their protocol intact."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from synthetic_features import write_clustered_features

from wsdhash.data import features_file
from wsdhash.eval import EvalProtocol, read_codes_file
from wsdhash.eval.file_evaluation import evaluate_codes_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))


def test_table_rows_are_the_runs_own_metrics(tmp_path):
    features = write_clustered_features(tmp_path / "f.h5")
    output, workdir = tmp_path / "table.md", tmp_path / "runs"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "bench", "realdata.py"),
            f"--features={features}",
            "--bits=8",
            "--seeds=0",
            "--methods=csq,bihalf",
            "--baselines=itq",
            f"--workdir={workdir}",
            f"--output={output}",
            "--",
            "--epochs=2",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = output.read_text()
    for name in ("csq", "bihalf", "itq", "raw-feature cosine"):
        assert f"| {name} |" in table, name
    assert "with its features recipe and --epochs=2" in table
    assert "recipe features/csq" in result.stdout
    for method in ("csq", "bihalf"):
        run = workdir / "runs" / f"{method}_8_seed0"
        metrics = json.loads((run / "metrics.json").read_text())
        row = next(line for line in table.splitlines() if line.startswith(f"| {method} |"))
        assert row.split("|")[3].strip() == f"{metrics['map']:.4f}"
        codes = read_codes_file(run / "codes.h5")
        at_1000 = evaluate_codes_file(codes, EvalProtocol(topk=1000)).map
        assert row.split("|")[5].strip() == f"{at_1000:.4f}"
        flags_text = (run / "flags.txt").read_text()
        assert "--epochs=2" in flags_text and "--recipe=auto" in flags_text
    assert (
        "--bihalf_center_features"
        in (workdir / "runs" / "bihalf_8_seed0" / "flags.txt").read_text()
    )


def test_shared_features_convert_with_their_protocol(tmp_path):
    import shared_features

    if not shared_features.available():
        pytest.skip(f"the shared development features are absent ({shared_features.NPZ})")
    arrays = shared_features.load()
    path = shared_features.features_file(str(tmp_path / "cifar.h5"))
    train = features_file.read_split(path, "train")
    database = features_file.read_split(path, "database")
    query = features_file.read_split(path, "query")
    assert (len(train), len(query), len(database)) == (5000, 1000, 20000)
    rows = arrays["train_rows"]
    np.testing.assert_array_equal(train.features, database.features[rows])
    np.testing.assert_array_equal(train.paths, database.paths[rows])
    np.testing.assert_array_equal(query.labels.argmax(1), arrays["query_labels"])
    assert query.labels.sum(axis=1).tolist() == [1] * 1000
    assert features_file.read_attributes(path)["topk"] == -1  # the whole database
