"""`python -m wsdhash.report`: figures are written, numbers equal the evaluator's,
training curves are the logged scalars, t-SNE is seeded."""

import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from wsdhash.eval import (
    CodesFile,
    CodesSplit,
    EvalProtocol,
    HammingScorer,
    evaluate_retrieval,
    pack_codes,
    write_codes_file,
)
from wsdhash.reporting import training_logs, tsne

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")


def _codes(path, bits, seed, quality):
    """Codes that carry label structure: each class has a centre code, items flip
    `1 - quality` of its bits at random."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2, (4, bits))

    def split(n):
        classes = rng.integers(0, 4, n)
        flips = rng.random((n, bits)) > quality
        return pack_codes((centres[classes] ^ flips) * 2 - 1), np.eye(4, dtype=np.uint8)[classes]

    (qc, ql), (dc, dl) = split(20), split(120)
    write_codes_file(path, CodesFile(bits, CodesSplit(qc, ql), CodesSplit(dc, dl)))
    return (qc, ql), (dc, dl)


def _report(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, "-m", "wsdhash.report", *args],
        capture_output=True,
        text=True,
        env=env,
    )


def _is_png(path):
    data = open(path, "rb").read()
    return (
        data[:8] == b"\x89PNG\r\n\x1a\n"
        and cv2.imdecode(np.frombuffer(data, np.uint8), 1) is not None
    )


def test_report_numbers_equal_the_evaluator_and_figures_exist(tmp_path):
    files = {}
    for bits, quality in ((16, 0.8), (32, 0.9)):
        files[bits] = str(tmp_path / f"codes_{bits}.h5")
        files[bits, "data"] = _codes(files[bits], bits, bits, quality)
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    _codes(str(run / "codes.h5"), 24, 3, 0.85)
    writer = tf.summary.create_file_writer(str(run / "logs"))
    with writer.as_default():
        for step in range(1, 6):
            tf.summary.scalar("loss", 1.0 / step, step=step)
    writer.close()
    out = tmp_path / "report"
    result = _report(
        f"--inputs={files[16]},{files[32]},{run}",
        f"--output_dir={out}",
        "--topk=50",
        "--tsne_points=60",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = (out / "report.md").read_text()
    for bits in (16, 32):
        (qc, ql), (dc, dl) = files[bits, "data"]
        expected = evaluate_retrieval(HammingScorer(qc, dc, bits), (ql, dl), EvalProtocol(topk=50))
        row = re.search(
            rf"\| codes_{bits} \| .*\| ({re.escape(expected.map_name)}) \| ([0-9.]+) \|", text
        )
        assert row, text
        assert float(row.group(2)) == pytest.approx(expected.map, abs=5e-5)
    assert "| 16 bits | 24 bits | 32 bits |" in text
    for name in ("precision_recall.png", "precision_at_n.png", "training_run.png", "tsne_run.png"):
        assert _is_png(out / name), name
        assert f"]({name})" in text


def test_training_scalars_are_read_back(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        for step in (3, 1, 2):
            tf.summary.scalar("train/loss", float(step) * 2, step=step)
        tf.summary.scalar("validation/map", 0.5, step=2)
    writer.close()
    curves = training_logs.read_scalars(str(tmp_path))
    steps, values = curves["train/loss"]
    assert steps.tolist() == [1, 2, 3] and values.tolist() == [2.0, 4.0, 6.0]
    assert curves["validation/map"][1].tolist() == [0.5]


def test_tsne_is_seeded_and_sized(tmp_path):
    _codes(str(tmp_path / "c.h5"), 16, 0, 0.9)
    from wsdhash.eval import read_codes_file

    contents = read_codes_file(str(tmp_path / "c.h5"))
    a, colours = tsne.tsne_points(contents, 50, seed=1)
    b, _ = tsne.tsne_points(contents, 50, seed=1)
    assert a.shape == (50, 2) and colours.shape == (50,)
    np.testing.assert_allclose(a, b)


def test_errors_name_the_input(tmp_path):
    (tmp_path / "empty_run").mkdir()
    result = _report(f"--inputs={tmp_path / 'empty_run'}", f"--output_dir={tmp_path / 'o'}")
    assert result.returncode == 2 and "without codes.h5" in result.stderr
    result = _report(f"--inputs={tmp_path / 'nope.h5'}", f"--output_dir={tmp_path / 'o'}")
    assert result.returncode == 2 and "nope.h5" in result.stderr
