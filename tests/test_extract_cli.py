"""`python -m wsdhash.extract`: a run stopped part-way (--max_batches) finishes on the
next run into the file one uninterrupted extraction writes, with the settings recorded;
bad flags and leftover files from other settings give errors that name them."""

import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
from tflite_models import write_quantized_tflite

import wsdhash
from wsdhash.data import datasets, features_file, pipeline
from wsdhash.data.builtin import generate_builtin
from wsdhash.models import build_backbone
from wsdhash.models.assembly import with_normalization
from wsdhash.models.encoder import Encoder

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
SIZES = {"num_train": 70, "num_query": 10, "num_database": 30}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("extract") / "builtin"
    generate_builtin(path, image_size=32, **SIZES)
    return path


def _extract(data_dir, *extra, check=True):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wsdhash.extract",
            "--dataset=builtin",
            f"--data_dir={data_dir}",
            "--builtin_sizes=70,10,30",
            "--builtin_image_size=32",
            "--image_size=32",
            "--crop_size=28",
            "--batch_size=16",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=ENV,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_stopped_extraction_finishes_into_the_uninterrupted_file(data_dir, tmp_path):
    output = tmp_path / "features.h5"
    result = _extract(data_dir, f"--output={output}", "--max_batches=3")
    assert "stopped after --max_batches=3 batches; rerun the same command" in result.stdout
    assert not output.exists() and os.path.exists(f"{output}.partial")
    with h5py.File(f"{output}.partial", "r") as f:
        assert f["train"].attrs["done"] == 48 and "query" not in f
    result = _extract(data_dir, f"--output={output}")
    assert "train: 100%" in result.stderr  # the progress bar, resumed at 48 of 70
    assert not os.path.exists(f"{output}.partial")
    assert os.listdir(tmp_path) == ["features.h5"]  # no partial or lock file left behind

    attrs, splits = features_file.read_features_file(str(output))
    assert {k: attrs[k] for k in ("backbone", "weights", "normalization", "dataset")} == {
        "backbone": "small_cnn",
        "weights": "none",
        "normalization": "unit_range",
        "dataset": "builtin",
    }
    assert (attrs["image_size"], attrs["crop_size"], attrs["feature_dim"]) == (32, 28, 128)
    assert not attrs["ten_crop"] and attrs["topk"] == 1000
    assert attrs["data_dir"] == str(data_dir) and attrs["wsdhash_version"] == wsdhash.__version__

    # One uninterrupted extraction of the same settings, in this process.
    dataset = datasets.get_dataset("builtin", str(data_dir), image_size=32, **SIZES)
    spec = build_backbone("small_cnn", weights="none", crop_size=28, seed=0)
    config = pipeline.PipelineConfig(image_size=32, crop_size=28, normalization=None)
    encoder = Encoder(with_normalization(spec.model, spec.normalization), config, 16)
    reference = tmp_path / "reference.h5"
    features_file.extract_dataset(
        str(reference), dataset, ("train", "query", "database"), encoder.batches, dict(attrs)
    )
    _, expected = features_file.read_features_file(str(reference))
    for name, split in expected.items():
        np.testing.assert_allclose(splits[name].features, split.features, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(splits[name].paths, split.paths)
        np.testing.assert_array_equal(splits[name].labels, split.labels)
        np.testing.assert_array_equal(splits[name].tags, split.tags)


def test_errors_name_the_flag_and_the_file(data_dir, tmp_path):
    existing = tmp_path / "existing.h5"
    existing.write_bytes(b"")
    result = _extract(data_dir, f"--output={existing}", check=False)
    assert result.returncode != 0 and f"--output={existing} exists" in result.stderr

    # A partial file left by a run with another crop size and seed is not mixed into
    # this one: one line lists every difference.
    output = tmp_path / "features.h5"
    settings = {
        "backbone": "small_cnn",
        "weights": "none",
        "seed": 5,
        "image_size": 32,
        "crop_size": 24,
        "normalization": "unit_range",
        "ten_crop": False,
        "dataset": "builtin",
        "data_dir": str(data_dir),
        "topk": 1000,
        "feature_dim": 128,
    }
    features_file.FeaturesWriter(str(output), settings).close()
    result = _extract(data_dir, f"--output={output}", "--splits=query", check=False)
    assert result.returncode != 0
    assert f"--output: {output}.partial: an unfinished extraction with other settings" in (
        result.stderr
    )
    assert "crop_size: 24 there, 28 now" in result.stderr
    [line] = [s for s in result.stderr.splitlines() if s.startswith("wsdhash.extract: error:")]
    assert line.startswith("wsdhash.extract: error: --output: ")
    assert "Traceback" not in result.stderr
    assert "seed: 5 there, 0 now" in line and "crop_size: 24 there, 28 now" in line
    assert "dataset_options: None there, " in line


def test_quantized_model_normalization_comes_from_its_input(data_dir, tmp_path):
    """The user's bug: --normalization=raw_pixels on a uint8 model made for [-1, 1] ran
    and saturated the inputs. Now it is refused naming both; left out, it is read from
    the input's scale and zero point."""
    model = tmp_path / "tiny.tflite"
    write_quantized_tflite(str(model), side=28)
    output = tmp_path / "features.h5"
    result = _extract(
        data_dir,
        f"--model={model}",
        "--normalization=raw_pixels",
        f"--output={output}",
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = [s for s in result.stderr.splitlines() if s.startswith("wsdhash.extract:")]
    assert line.startswith(
        f"wsdhash.extract: error: --normalization=raw_pixels contradicts --model={model}: "
        "its uint8 input (scale 0.00784"
    )
    assert "model's own (minus_one_to_one)" in line and not output.exists()

    result = _extract(data_dir, f"--model={model}", "--splits=query", f"--output={output}")
    assert "pixels are mapped to it with --normalization=minus_one_to_one" in result.stdout
    assert "warning" not in result.stderr
    attrs, splits = features_file.read_features_file(str(output))
    assert attrs["normalization"] == "minus_one_to_one"
    assert len(np.unique(splits["query"].features, axis=0)) == 10


def test_collapsed_features_give_one_warning_line(data_dir, tmp_path):
    images = keras.Input((28, 28, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(images)
    constant = keras.layers.Dense(4, kernel_initializer="zeros", bias_initializer="ones")(pooled)
    keras.Model(images, constant).save(tmp_path / "constant.keras")
    output = tmp_path / "features.h5"
    result = _extract(
        data_dir,
        f"--model={tmp_path / 'constant.keras'}",
        "--normalization=unit_range",
        "--splits=query",
        f"--output={output}",
    )
    assert output.exists()
    (line,) = [s for s in result.stderr.splitlines() if "warning" in s]
    assert line == (
        f"wsdhash.extract: warning: {output}: the features look collapsed: only 1 of 10 "
        "sampled images have distinct features and 4 of 4 dimensions are near-constant; "
        "check that --normalization (unit_range) is what the model expects and that the "
        "images differ."
    )
