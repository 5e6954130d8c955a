"""WSDHQ end to end on the built-in dataset: tag processing -> training with the
quantizer -> AQD codes file; and every published-experiment flagfile runs with tiny
overrides, so no script rots."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from train_helpers import read_json, run_train
from worker_process import worker

from wsdhash.data.builtin import generate_builtin
from wsdhash.eval import EvalProtocol, read_codes_file
from wsdhash.eval.aqd_metrics import aqd_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# WSDHQ's experiments are run0001-run0008 (test_experiment_scripts.py covers the others).
RUN_FLAGFILES = [os.path.join(ROOT, "scripts", "flags", f"run{n:04d}.flags") for n in range(1, 9)]


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    root = tmp_path_factory.mktemp("wsdhq")
    data_dir, tag_dir = root / "builtin", root / "tags"
    # 320 training images: the quantizer's 256-codeword k-means needs more than 256.
    generate_builtin(data_dir, image_size=32, num_train=320, num_query=30, num_database=80)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wsdhash.tags",
            f"--vocab={data_dir / 'tag_vocab.txt'}",
            f"--tag_matrix={data_dir / 'train_tag.txt'}",
            "--vectors=train",
            "--w2v_dim=24",
            "--w2v_epochs=5",
            f"--output_dir={tag_dir}",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return data_dir, tag_dir


# The product quantizer's run is slow-marked (70 s on 2 cores): its encoder, codes and
# AQD index have their own tests under tests/quantization and tests/index.
@pytest.mark.parametrize("quantizer", ["additive", pytest.param("product", marks=pytest.mark.slow)])
def test_wsdhq_trains_from_tags_and_writes_aqd_codes(tagged, tmp_path, quantizer):
    data_dir, tag_dir = tagged
    workdir = tmp_path / "run"
    run_train(
        data_dir,
        workdir,
        "--builtin_sizes=320,30,80",
        "--method=wsdhq",
        "--supervision=tags",
        f"--tag_dir={tag_dir}",
        f"--quantizer={quantizer}",
        "--head=tanh",
        "--hash_bit=16",
        "--steps=6",
        "--quantizer_update_every=3",
        "--optimizer=adam",
        "--lr=1e-3",
        "--empty=skip",
        "--ten_crop",
    )
    metrics = read_json(workdir / "metrics.json")
    assert metrics["map_name"] == "mAP@1000[ties=index,empty=skip]"
    codes = read_codes_file(workdir / "codes.h5")
    embeddings = np.loadtxt(tag_dir / "FinalTagEmbs.txt")
    assert codes.bits == 16 and codes.codebooks.shape == (2, 256, embeddings.shape[1])
    assert codes.database.indices.shape == (80, 2) and codes.query.features.shape == (30, 24)
    if quantizer == "product":
        # Block-sparse: codebook m lives in sub-space m only, with unit sub-codewords.
        np.testing.assert_array_equal(codes.codebooks[0, :, 12:], 0.0)
        np.testing.assert_array_equal(codes.codebooks[1, :, :12], 0.0)
        np.testing.assert_allclose(np.linalg.norm(codes.codebooks, axis=2), 1.0, rtol=1e-5)
    again = aqd_evaluate(
        codes.query.features,
        codes.database.indices,
        codes.codebooks,
        (codes.query.labels, codes.database.labels),
        EvalProtocol(topk=1000, empty="skip"),
    )
    assert again.map == pytest.approx(metrics["map"], abs=1e-9)
    # The evaluate CLI ranks a quantization codes file by AQD too (once: it reads the
    # codes file alone, whichever quantizer wrote it; one TensorFlow start-up fewer).
    if quantizer == "additive":
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "wsdhash.evaluate",
                f"--codes={workdir / 'codes.h5'}",
                "--topk=1000",
                "--empty=skip",
                "--json",
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["map"] == pytest.approx(metrics["map"], abs=1e-9)

    # The SavedModel assigns database codes in-graph, as the run's quantizer does.
    exported = tmp_path / "exported"
    result = subprocess.run(
        [sys.executable, "-m", "wsdhash.export", f"--workdir={workdir}", f"--output={exported}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import tensorflow as tf

    from wsdhash.methods import wsdhq_quantizer as quantized

    served = tf.saved_model.load(str(exported)).signatures["encode_images"]
    crops = np.random.default_rng(0).uniform(0, 255, (40, 28, 28, 3)).astype(np.float32)
    outputs = served(images=tf.constant(crops))
    config = read_json(workdir / "run_info.json")["config"]
    reference = quantized.TrainingQuantizer(
        16,
        embeddings,
        1,
        0,
        kind=quantizer,
        form=config["method_options"].get("quantization_form", "faithful"),
    )
    reference.set_codebooks(codes.codebooks)
    expected = reference.encode(outputs["embedding"].numpy())
    got = outputs["quantization_codes"].numpy()
    assert got.shape == (40, 2) and got.dtype == np.uint8
    assert np.mean(got == expected) >= 0.95  # float32 rounding may flip a near tie

    # A search index built from the image folder through the SavedModel is an AQD index
    # with the run's codebooks and the served codes (once: the build reads the model's
    # outputs and codebooks, whichever quantizer made them).
    if quantizer != "additive":
        return
    pytest.importorskip("faiss")
    from wsdhash.index.sharded import ShardedIndex

    index_dir = tmp_path / "index"
    images = data_dir / "images"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "wsdhash.search",
            "build",
            f"--images={images}",
            f"--model={exported}",
            f"--output={index_dir}",
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    index = ShardedIndex(str(index_dir))
    assert index.kind == "aqd" and index.num_items == len(os.listdir(images))
    np.testing.assert_allclose(index.shards[0].codebooks, codes.codebooks, rtol=1e-6)


def test_wsdhq_needs_tags_and_a_tag_dir(tagged, tmp_path):
    data_dir, tag_dir = tagged
    sizes = "--builtin_sizes=320,30,80"
    result = run_train(
        data_dir,
        tmp_path / "a",
        sizes,
        "--method=wsdhq",
        "--supervision=tags",
        "--steps=2",
        check=False,
    )
    assert result.returncode != 0 and "--tag_dir" in result.stderr
    result = run_train(
        data_dir,
        tmp_path / "b",
        sizes,
        "--method=wsdhq",
        f"--tag_dir={tag_dir}",
        "--steps=2",
        check=False,
    )
    assert result.returncode != 0 and "--supervision=tags" in result.stderr


def test_published_flagfiles_run_on_the_builtin_dataset(tagged, tmp_path):
    """run0001-run0008 with tiny overrides (their method, loss, optimiser and evaluation
    stay), in the test process's flagfile runner (tests/training/flagfile_runner.py)."""
    data_dir, tag_dir = tagged
    overrides = [
        "--dataset=builtin",
        f"--data_dir={data_dir}",
        "--builtin_sizes=320,30,80",
        "--builtin_image_size=32",
        f"--tag_dir={tag_dir}",
        "--validation_size=32",
        "--backbone=small_cnn",
        "--weights=none",
        "--image_size=32",
        "--crop_size=28",
        "--batch_size=16",
        "--steps=2",
        "--quantizer_update_every=1",
    ]
    runs = [
        {
            "flagfile": path,
            "workdir": str(tmp_path / os.path.basename(path)[:7]),
            "overrides": overrides,
        }
        for path in RUN_FLAGFILES
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    runner = [
        sys.executable,
        os.path.join(ROOT, "tests", "training", "flagfile_runner.py"),
        "--serve",
    ]
    worker("flagfile_runner", runner, env=env, cwd=ROOT).call({"runs": runs})
    for run in runs:
        workdir = run["workdir"]
        config = read_json(os.path.join(workdir, "run_info.json"))["config"]
        bits = int(os.path.basename(run["flagfile"])[3:7]) % 4 or 4
        assert config["bits"] == 8 * bits and config["method"] == "wsdhq" and config["ten_crop"]
        assert config["optimizer"]["name"] == "adam" and config["empty"] == "skip"
        metrics = read_json(os.path.join(workdir, "metrics.json"))
        assert metrics["map_name"].endswith("empty=skip]")


def test_run_scripts_are_valid_bash_and_name_their_flagfile():
    scripts = [os.path.join(ROOT, "scripts", f"run{n:04d}.sh") for n in range(1, 9)]
    for script in scripts:
        assert subprocess.run(["bash", "-n", script]).returncode == 0
        number = os.path.basename(script)[3:7]
        assert f"scripts/flags/run{number}.flags" in open(script).read()


def test_two_replicas_train_wsdhq_like_one_device(tagged, tmp_path):
    """The quantizer update, the codes it stores and the quantization term behave the same
    under a 2-replica MirroredStrategy as on one device."""
    import tensorflow as tf

    data_dir, tag_dir = tagged
    common = [
        "--builtin_sizes=320,30,80",
        "--method=wsdhq",
        "--supervision=tags",
        f"--tag_dir={tag_dir}",
        "--head=tanh",
        "--steps=4",
        "--quantizer_update_every=2",
        "--wsdhq_quantization_weight=0.1",
        "--cpu_replicas=2",
        "--deterministic",
    ]
    run_train(data_dir, tmp_path / "one", *common, "--strategy=one_device")
    run_train(data_dir, tmp_path / "two", *common, "--strategy=mirrored")
    readers = [
        tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / run / "checkpoints")))
        for run in ("one", "two")
    ]
    names = readers[0].get_variable_to_shape_map()
    active = [n for n in names if n.startswith("loss/") and "quantization_active" in n]
    books = [n for n in names if n.startswith("loss/") and "codebooks" in n]
    assert active and all(r.get_tensor(active[0]) == 1.0 for r in readers)
    assert books and np.abs(readers[0].get_tensor(books[0])).sum() > 0
    compared = [n for n in names if "model/" in n or n.startswith("loss/")]
    assert set(compared) <= set(readers[1].get_variable_to_shape_map())
    # Codeword indices are an argmin over ICM costs: features that agree to float
    # rounding may flip a near-tie (seen: 4 of 576 codes with 150 unmerged tags), and the
    # closed-form codebook update then moves those codewords. So the quantizer state is
    # compared by what it encodes: nearly all codes equal, and the reconstructions of
    # the training items (sum of their codewords) close; every other variable exactly.
    quantizer_state = ("train_codes", "codebooks")
    for name in compared:
        a, b = (r.get_tensor(name) for r in readers)
        if any(part in name for part in quantizer_state):
            continue
        if isinstance(a, np.ndarray) and a.dtype.kind in "fi":
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)
    (codes_name,) = [n for n in names if n.startswith("loss/") and "train_codes" in n]
    codes = [r.get_tensor(codes_name) for r in readers]
    assert np.mean(codes[0] == codes[1]) >= 0.98, np.mean(codes[0] == codes[1])
    reconstructions = []
    for reader, stored in zip(readers, codes, strict=True):
        flat = reader.get_tensor(books[0]).reshape(
            stored.shape[1], -1, reader.get_tensor(books[0]).shape[-1]
        )
        reconstructions.append(sum(flat[m][stored[:, m]] for m in range(stored.shape[1])))
    gap = np.linalg.norm(reconstructions[0] - reconstructions[1])
    assert gap <= 0.05 * np.linalg.norm(reconstructions[0]), gap / np.linalg.norm(
        reconstructions[0]
    )
