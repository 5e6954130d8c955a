"""`python -m wsdhash.baselines`: a baseline fitted on a features file's training split
writes a codes file equal to the library's codes, that `wsdhash.evaluate` reads; bad
input is one line. No TensorFlow in these processes."""

import json
import subprocess
import sys
import types

import numpy as np
import pytest

from wsdhash.baselines import BASELINES
from wsdhash.data import features_file
from wsdhash.data.types import SplitData
from wsdhash.eval import pack_codes, read_codes_file

SETTINGS = {
    "backbone": "toy",
    "weights": "none",
    "seed": 0,
    "image_size": 1,
    "crop_size": 1,
    "normalization": "none",
    "ten_crop": False,
    "dataset": "toy",
    "data_dir": "x",
    "dataset_options": "{}",
    "topk": -1,
    "feature_dim": 24,
    "wsdhash_version": "test",
}


def _split(name, n, rng, with_labels=True):
    labels = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, n)]
    return SplitData(
        name=name,
        paths=np.array([f"/photos/{name}/{i}.jpg" for i in range(n)]),
        labels=labels if with_labels else np.zeros((n, 0), np.uint8),
        tags=labels,
        features=(labels @ rng.normal(size=(4, 24)) + 0.3 * rng.normal(size=(n, 24))).astype(
            np.float32
        ),
    )


def write_features(path, with_labels=True):
    rng = np.random.default_rng(0)
    splits = {
        name: _split(name, n, rng, with_labels)
        for name, n in (("train", 120), ("query", 20), ("database", 60))
    }
    dataset = types.SimpleNamespace(split=splits.__getitem__)

    def batches(split):
        yield splits[split.name].features[-len(split) :]

    features_file.extract_dataset(str(path), dataset, list(splits), batches, SETTINGS)
    return splits


def _run(*args, module="wsdhash.baselines"):
    return subprocess.run(
        [sys.executable, "-m", module, *args], check=False, capture_output=True, text=True
    )


@pytest.mark.parametrize("method", ["lsh", "pcah", "itq", "pcarr"])
def test_codes_equal_the_library_and_evaluate_reads_them(tmp_path, method):
    splits = write_features(tmp_path / "f.h5")
    result = _run(
        f"--features={tmp_path / 'f.h5'}",
        f"--method={method}",
        "--hash_bit=8,16",
        f"--output={tmp_path / (method + '_{bits}.h5')}",
        "--seed=3",
    )
    assert result.returncode == 0, result.stderr
    for bits in (8, 16):
        model = BASELINES.get(method)(bits, seed=3).fit(splits["train"].features)
        contents = read_codes_file(tmp_path / f"{method}_{bits}.h5")
        assert contents.bits == bits
        for name in ("query", "database"):
            part = getattr(contents, name)
            np.testing.assert_array_equal(
                part.codes, pack_codes(model.encode(splits[name].features))
            )
            np.testing.assert_array_equal(part.labels, splits[name].labels)
            np.testing.assert_array_equal(part.ids, splits[name].paths)
    if method == "itq":  # one evaluate run is enough to show the file is readable
        evaluated = _run(f"--codes={tmp_path / 'itq_16.h5'}", "--json", module="wsdhash.evaluate")
        assert evaluated.returncode == 0, evaluated.stderr
        assert 0.0 < json.loads(evaluated.stdout)["map"] <= 1.0


def test_split_without_labels_uses_tags_and_says_so(tmp_path):
    splits = write_features(tmp_path / "f.h5", with_labels=False)
    output = tmp_path / "c.h5"
    result = _run(
        f"--features={tmp_path / 'f.h5'}", "--method=pcah", "--hash_bit=16", f"--output={output}"
    )
    assert result.returncode == 0, result.stderr
    assert "relevance is shared user tags" in result.stdout
    np.testing.assert_array_equal(read_codes_file(output).query.labels, splits["query"].tags)


def test_bad_input_is_one_line(tmp_path):
    write_features(tmp_path / "f.h5")
    output = tmp_path / "c.h5"
    cases = {
        "--hash_bit must be positive": [f"--features={tmp_path / 'f.h5'}", "--hash_bit=0"],
        "put {bits} in --output": [f"--features={tmp_path / 'f.h5'}", "--hash_bit=8,16"],
        "no validation split": [f"--features={tmp_path / 'f.h5'}", "--fit_split=validation"],
        "--features:": [f"--features={tmp_path / 'missing.h5'}"],
        "exceeds the feature dimension": [f"--features={tmp_path / 'f.h5'}", "--hash_bit=32"],
    }
    for expected, args in cases.items():
        result = _run(*args, "--method=pcah", f"--output={output}")
        assert result.returncode == 2, (expected, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("wsdhash.baselines: error:") and expected in line, line
    assert not output.exists()
