"""Tests for the `python -m wsdhash.evaluate` entry point, run in a subprocess."""

import json
import pathlib
import subprocess
import sys

import h5py
import numpy as np
import pytest

from wsdhash.eval import EvalProtocol, HammingScorer, binary, codes_file, metrics

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def codes_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("codes") / "codes.h5"
    contents = codes_file.CodesFile(
        bits=10,
        query=codes_file.CodesSplit(
            codes=binary.pack_codes(rng.random((30, 10)) < 0.5),
            labels=(rng.random((30, 4)) < 0.3).astype(np.uint8),
        ),
        database=codes_file.CodesSplit(
            codes=binary.pack_codes(rng.random((200, 10)) < 0.5),
            labels=(rng.random((200, 4)) < 0.3).astype(np.uint8),
        ),
    )
    codes_file.write_codes_file(path, contents)
    return path


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "wsdhash.evaluate", *map(str, args)],
        check=False,  # The tests inspect failing runs too.
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )


def test_json_output_matches_library(codes_path):
    completed = run_cli(
        f"--codes={codes_path}", "--topk=50", "--ties=pessimistic", "--empty=skip", "--json"
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)  # Exactly one JSON object on stdout.
    contents = codes_file.read_codes_file(codes_path)
    expected = metrics.mean_average_precision(
        HammingScorer(contents.query.codes, contents.database.codes),
        (contents.query.labels, contents.database.labels),
        EvalProtocol(topk=50, ties="pessimistic", empty="skip"),
    )
    assert report["map"] == pytest.approx(expected, abs=1e-12)
    assert report["map_name"] == "mAP@50[ties=pessimistic,empty=skip]"
    assert report["map_optimistic"] >= report["map"]
    assert set(report["precision_at_n"]) == {str(n) for n in range(100, 1001, 100)}
    assert "precision_within_radius_2" in report


def test_table_output_and_topk_all(codes_path):
    completed = run_cli(f"--codes={codes_path}", "--topk=all", "--pr_curve")
    assert completed.returncode == 0, completed.stderr
    assert "mAP@all[ties=index,empty=zero]" in completed.stdout
    assert "precision within Hamming radius 2" in completed.stdout
    assert "optimistic" in completed.stdout  # 10-bit codes: ties move mAP by > 0.005.
    assert "precision-recall over Hamming radius" in completed.stdout


@pytest.mark.parametrize(
    "make_args",
    [
        lambda path: [f"--codes={path}", "--no_such_flag"],
        lambda path: [f"--codes={path.parent / 'missing.h5'}"],
        lambda path: [f"--codes={path}", "--topk=-1"],
        lambda path: [f"--codes={path}", "--ties=first"],
        lambda path: [],  # --codes is required.
    ],
)
def test_bad_input_gives_one_line_error(codes_path, make_args):
    completed = run_cli(*make_args(codes_path))
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1, completed.stderr
    assert completed.stdout == ""


def test_missing_group_gives_one_line_error(tmp_path, codes_path):
    broken = tmp_path / "broken.h5"
    broken.write_bytes(codes_path.read_bytes())
    with h5py.File(broken, "a") as h5:
        del h5["query"]
    codes_file.seal(broken)  # a matching checksum, to reach the layout check
    completed = run_cli(f"--codes={broken}", "--json")
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert completed.stderr.strip() == (
        f"wsdhash.evaluate: error: Codes file '{broken}': missing group 'query'."
    )


def test_an_empty_database_is_an_error_naming_the_file(tmp_path, codes_path):
    empty = tmp_path / "empty.h5"
    contents = codes_file.read_codes_file(codes_path)
    contents.database = codes_file.CodesSplit(
        codes=contents.database.codes[:0], labels=contents.database.labels[:0]
    )
    codes_file.write_codes_file(empty, contents)
    completed = run_cli(f"--codes={empty}")
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.strip() == (
        f"wsdhash.evaluate: error: Codes file '{empty}': the database split is empty "
        "(0 items); nothing to evaluate."
    )


def test_a_file_of_the_previous_version_is_refused_until_upgraded(tmp_path, codes_path):
    """Issue 22 (8): files without the content checksum are refused, with the command
    that rewrites them; after `--upgrade_codes` they evaluate as before."""
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as h5:  # the previous version's layout: no user block
        codes_file._write_contents(h5, codes_file.read_codes_file(codes_path))
    refused = run_cli(f"--codes={old}", "--json")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == (
        f"wsdhash.evaluate: error: Codes file '{old}': written by an older wsdhash, without "
        "the checksum over its contents that this version needs; rewrite it with `python -m "
        f"wsdhash.evaluate --codes={old} --upgrade_codes` (or write it again)."
    )
    upgraded = run_cli(f"--codes={old}", "--upgrade_codes")
    assert upgraded.returncode == 0, upgraded.stderr[-2000:]
    after = json.loads(run_cli(f"--codes={old}", "--json").stdout)
    assert after["map"] == json.loads(run_cli(f"--codes={codes_path}", "--json").stdout)["map"]
