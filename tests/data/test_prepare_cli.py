"""`python -m wsdhash.data.prepare`: builds lists, checks them, reports problems."""

import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "sources"))
from fixtures import write_jpeg, write_text  # noqa: E402

from wsdhash.data.sources import flickr25k  # noqa: E402

NUM = 30


def _run(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, "-m", "wsdhash.data.prepare", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )


@pytest.fixture()
def download(tmp_path):
    root = tmp_path / "download"
    for i in range(1, NUM + 1):
        write_jpeg(root / "mirflickr" / f"im{i}.jpg", seed=i)
    for c, concept in enumerate(flickr25k.POTENTIAL + flickr25k.RELEVANT):
        write_text(root / "mirflickr25k_annotations_v080" / f"{concept}.txt", [str(c % NUM + 1)])
    return root


SIZES = ["--option=num_images=30", "--option=num_query=4", "--option=num_train=6"]


def test_prepare_writes_checked_lists(download, tmp_path):
    out = tmp_path / "lists"
    result = _run("--dataset=flickr25k", f"--root={download}", f"--output_dir={out}", *SIZES)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "all checks passed" in result.stdout
    assert "query            4 items (protocol: 4)" in result.stdout
    assert (out / "test.txt").is_file() and (out / "wsdhash_dataset.json").is_file()


def test_prepare_reports_broken_images_and_missing_downloads(download, tmp_path):
    (download / "mirflickr" / "im3.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    result = _run(
        "--dataset=flickr25k", f"--root={download}", f"--output_dir={tmp_path / 'o'}", *SIZES
    )
    assert result.returncode == 1
    assert "1 images do not decode" in result.stderr and "im3.jpg" in result.stderr
    missing = _run(
        "--dataset=cub200",
        f"--root={tmp_path / 'nothing'}",
        "--option=source=official",
        cwd=tmp_path,
    )
    assert missing.returncode == 2 and "vision.caltech.edu" in missing.stderr
    bad = _run("--dataset=flickr25k", f"--root={download}", "--option=colour=red", cwd=tmp_path)
    assert bad.returncode != 0 and "--option='colour=red'" in bad.stderr
