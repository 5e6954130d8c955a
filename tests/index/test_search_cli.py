"""`python -m wsdhash.search`: build and query from codes files and from images."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "training"))
from train_helpers import run_train  # noqa: E402

from wsdhash.eval import CodesFile, CodesSplit, read_codes_file, write_codes_file  # noqa: E402
from wsdhash.eval.binary import hamming_distances, pack_codes  # noqa: E402
from wsdhash.quantization.aqd import aqd_scores  # noqa: E402

pytest.importorskip("faiss")


def _search(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, "-m", "wsdhash.search", *args],
        capture_output=True,
        text=True,
        env=env,
    )


def _codes_file(path, quantized):
    rng = np.random.default_rng(0)
    labels = lambda n: np.eye(3, dtype=np.uint8)[rng.integers(0, 3, n)]  # noqa: E731
    split = {}
    for name, n in (("query", 6), ("database", 200)):
        kwargs = {}
        if quantized:
            kwargs = {
                "features": rng.normal(size=(n, 8)).astype(np.float32),
                "indices": rng.integers(0, 256, (n, 2)).astype(np.uint8),
            }
        codes = kwargs.get("indices", pack_codes(rng.integers(0, 2, (n, 32)) * 2 - 1))
        split[name] = CodesSplit(
            codes, labels(n), ids=np.array([f"{name}/{i}.jpg" for i in range(n)]), **kwargs
        )
    codebooks = rng.normal(size=(2, 256, 8)).astype(np.float32) if quantized else None
    # The binary file's database codes stand for codes a method learned (ADSH's V).
    origin = "network" if quantized else "learned"
    fingerprint = "ab" * 32  # the weights fingerprint of the network a trainer records
    write_codes_file(
        path,
        CodesFile(
            16 if quantized else 32,
            **split,
            codebooks=codebooks,
            database_codes=origin,
            model_fingerprint=fingerprint,
        ),
    )
    again = read_codes_file(path)
    assert again.database_codes == origin and again.model_fingerprint == fingerprint
    return split, codebooks


@pytest.mark.parametrize("quantized", [False, True])
def test_build_and_query_a_codes_file(tmp_path, quantized):
    split, codebooks = _codes_file(str(tmp_path / "codes.h5"), quantized)
    index = tmp_path / "index"
    built = _search(
        "build", f"--codes={tmp_path / 'codes.h5'}", f"--output={index}", "--shard_size=64"
    )
    assert built.returncode == 0, built.stderr[-2000:]
    assert ("aqd" if quantized else "flat") in built.stdout and "4 shard(s)" in built.stdout
    manifest = json.loads((index / "index.json").read_text())
    # Learned database codes are recorded, so the service does not expect the model to
    # reproduce them (tests/serve/test_serve_fit.py).
    assert manifest.get("database_codes") == (None if quantized else "learned")
    assert manifest["model_fingerprint"] == "ab" * 32  # the service compares it (engine.py)
    result = _search(
        "query", f"--index={index}", f"--codes={tmp_path / 'codes.h5'}", "--k=5", "--json"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    answers = json.loads(result.stdout)
    assert [a["query"] for a in answers] == [f"query/{i}.jpg" for i in range(6)]
    if quantized:
        expected = -aqd_scores(split["query"].features, split["database"].indices, codebooks)
    else:
        expected = hamming_distances(split["query"].codes, split["database"].codes)
    for q, answer in enumerate(answers):
        got = np.array([r["distance"] for r in answer["results"]])
        np.testing.assert_allclose(got, np.sort(expected[q])[:5], rtol=1e-5, atol=1e-5)
        for r in answer["results"]:
            assert r["id"] == f"database/{r['position']}.jpg"
    text = _search("query", f"--index={index}", f"--codes={tmp_path / 'codes.h5'}", "--k=2")
    assert text.returncode == 0 and text.stdout.startswith("query query/0.jpg")


def test_errors_name_what_is_wrong(tmp_path):
    missing = _search("query", f"--index={tmp_path}", f"--codes={tmp_path / 'x.h5'}")
    assert missing.returncode == 1 and "no index.json" in missing.stderr
    assert _search("rebuild").returncode != 0


def test_build_and_query_by_images_through_a_saved_model(tmp_path):
    data_dir, workdir, exported = tmp_path / "builtin", tmp_path / "run", tmp_path / "model"
    run_train(data_dir, workdir, "--steps=2", "--method=orthohash")
    result = subprocess.run(
        [sys.executable, "-m", "wsdhash.export", f"--workdir={workdir}", f"--output={exported}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    images = data_dir / "images"
    index = tmp_path / "index"
    built = _search("build", f"--images={images}", f"--model={exported}", f"--output={index}")
    assert built.returncode == 0, built.stderr[-2000:]
    first = sorted(os.listdir(images))[0]
    answer = _search(
        "query",
        f"--index={index}",
        f"--images={images / first}",
        f"--model={exported}",
        "--k=3",
        "--json",
    )
    assert answer.returncode == 0, answer.stderr[-2000:]
    results = json.loads(answer.stdout)[0]["results"]
    # The image itself is in the database: its own code is at distance 0.
    assert results[0]["distance"] == 0
    assert str(images / first) in [r["id"] for r in results if r["distance"] == 0]


def _one_line_error(result, exit_status, *fragments):
    assert result.returncode == exit_status, result.stderr[-2000:]
    # FAISS's loader may log a few INFO lines first.
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[0].startswith("wsdhash.search: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_index_flags_out_of_bounds_exit_2_and_keep_the_index(tmp_path):
    """Issue 22 (10): --hnsw_m=0 aborted inside FAISS (exit 134, a `.building` folder
    and a lock left); --nhash=0 replaced a working index with one that cannot be read."""
    codes = tmp_path / "codes.h5"
    _codes_file(str(codes), quantized=False)
    index = tmp_path / "index"
    assert _search("build", f"--codes={codes}", f"--output={index}").returncode == 0
    before = sorted(os.listdir(tmp_path)), (index / "index.json").read_bytes()
    for flags, named in (
        (["--kind=hnsw", "--hnsw_m=0"], "--hnsw_m must be >= 2"),
        (["--kind=multihash", "--nhash=0"], "--nhash must be >= 1"),
        (["--kind=multihash", "--hash_bits=20", "--nhash=2"], "--nhash=2"),
        (["--kind=ivf", "--nlist=500"], "--nlist=500"),
        (["--shard_size=-3"], "--shard_size must be >= 0"),
    ):
        result = _search("build", f"--codes={codes}", f"--output={index}", *flags)
        _one_line_error(result, 2, named)
        assert (sorted(os.listdir(tmp_path)), (index / "index.json").read_bytes()) == before
    query = _search("query", f"--index={index}", f"--codes={codes}", "--k=1", "--json")
    assert query.returncode == 0, query.stderr[-2000:]


@pytest.mark.parametrize("quantized", [False, True])
def test_query_codes_of_another_network_exit_2(tmp_path, quantized):
    """Issue 22 (7): the CLI applies the service's fit checks: another network's codes
    file (fingerprints differ) or, for AQD, other codebooks, is refused in one line."""
    _codes_file(str(tmp_path / "a.h5"), quantized)
    index = tmp_path / "index"
    assert _search("build", f"--codes={tmp_path / 'a.h5'}", f"--output={index}").returncode == 0
    other = read_codes_file(tmp_path / "a.h5")
    other.model_fingerprint = "cd" * 32
    write_codes_file(tmp_path / "b.h5", other)
    result = _search("query", f"--index={index}", f"--codes={tmp_path / 'b.h5'}")
    _one_line_error(result, 2, "another network", "abababababab", "cdcdcdcdcdcd")
    assert result.stdout == ""
    if quantized:  # no fingerprint to compare, but the codebooks differ
        other.model_fingerprint = None
        other.codebooks = other.codebooks + 0.5
        write_codes_file(tmp_path / "c.h5", other)
        result = _search("query", f"--index={index}", f"--codes={tmp_path / 'c.h5'}")
        _one_line_error(result, 2, "other codebooks", "c.h5")
    else:  # no fingerprint, codes of another width
        narrow = CodesFile(
            16,
            CodesSplit(other.query.codes[:, :2], other.query.labels),
            CodesSplit(other.database.codes[:, :2], other.database.labels),
        )
        write_codes_file(tmp_path / "c.h5", narrow)
        result = _search("query", f"--index={index}", f"--codes={tmp_path / 'c.h5'}")
        _one_line_error(result, 2, "16-bit codes (2 bytes)", "32-bit codes (4 bytes)")
