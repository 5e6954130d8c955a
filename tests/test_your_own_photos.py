"""A user's photos end to end, with commands only: a folder of per-class JPEGs ->
`prepare --dataset=image_folder` -> `extract --model=encoder.keras` -> `train
--backbone=features` -> `baselines` -> `evaluate` / `search` / `report`.

The photos are the built-in dataset's images sorted into one folder per concept, so
retrieval has something to find; the feature model is a small Keras file the user
"brings". Each step reads what the previous one wrote."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from wsdhash.data import list_files
from wsdhash.data.builtin import generate_builtin
from wsdhash.eval import read_codes_file

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def _run(module, *args):
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        check=False,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert result.returncode == 0, f"{module}: {result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_photos")
    builtin = root / "builtin"
    generate_builtin(str(builtin), image_size=32, num_train=150, num_query=10, num_database=40)
    split = list_files.read_wsdhq_split(
        str(builtin), str(builtin), split="train", label_names="label_names.txt"
    )
    folder = root / "photos"
    for path, labels in zip(split.paths, split.labels, strict=True):
        name = split.label_names[int(np.argmax(labels))].replace(" ", "_")
        os.makedirs(folder / name, exist_ok=True)
        shutil.copy(path, folder / name / os.path.basename(path))
    keras.utils.set_random_seed(0)
    images = keras.Input((28, 28, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(images)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    keras.Model(images, keras.layers.GlobalAveragePooling2D()(x)).save(root / "encoder.keras")
    return root


def test_from_a_photo_folder_to_search_with_commands_only(photos):
    root = photos
    lists, features = root / "lists", root / "out" / "features.h5"
    out = _run(
        "wsdhash.data.prepare",
        "--dataset=image_folder",
        f"--root={root / 'photos'}",
        f"--output_dir={lists}",
        "--query_size=20",
        "--seed=1",
    )
    assert "all checks passed" in out
    out = _run(
        "wsdhash.extract",
        "--dataset=image_folder",
        f"--data_dir={lists}",
        f"--model={root / 'encoder.keras'}",
        "--normalization=unit_range",
        "--image_size=32",
        f"--output={features}",
        "--batch_size=32",
    )
    assert "(32-d) written to" in out and features.exists()  # the output folder was created
    run = root / "run"
    _run(
        "wsdhash.train",
        "--backbone=features",
        f"--features={features}",
        "--method=orthohash",
        "--hash_bit=16",
        "--steps=30",
        "--batch_size=32",
        "--validation_size=20",
        "--log_every=10",
        f"--workdir={run}",
    )
    trained = json.loads((run / "metrics.json").read_text())
    itq = root / "itq_16.h5"
    _run(
        "wsdhash.baselines",
        f"--features={features}",
        "--method=itq",
        "--hash_bit=16",
        f"--output={itq}",
    )
    for codes in (run / "codes.h5", itq):
        report = json.loads(_run("wsdhash.evaluate", f"--codes={codes}", "--json"))
        assert 0 < report["map"] <= 1 and report["num_database"] == 130
    evaluated = json.loads(_run("wsdhash.evaluate", f"--codes={run / 'codes.h5'}", "--json"))
    assert abs(evaluated["map"] - trained["map"]) < 1e-6
    _run("wsdhash.search", "build", f"--codes={itq}", f"--output={root / 'index'}")
    hits = json.loads(
        _run(
            "wsdhash.search",
            "query",
            f"--index={root / 'index'}",
            f"--codes={itq}",
            "--k=3",
            "--json",
        )
    )
    database = set(read_codes_file(itq).database.ids)
    assert hits and all(
        len(q["results"]) == 3 and {r["id"] for r in q["results"]} <= database for q in hits
    ), hits[:1]
    _run(
        "wsdhash.report",
        f"--inputs={run},{itq}",
        f"--output_dir={root / 'report'}",
    )
    assert (root / "report" / "report.md").exists()
