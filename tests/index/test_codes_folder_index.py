"""Indexes built from a codes folder (issue 24, section 2): equal to the same codes in
one codes file, built one shard at a time, integer and string ids kept, old indexes
refused in one line, and `evaluate` on a folder equal to the codes file."""

import json
import os
import struct
import subprocess
import sys
import weakref

import numpy as np
import pytest

from tests.index.codes_folders import split_rows, write_codes_folder
from wsdhash.eval import CodesFile, CodesSplit, codes_folder, write_codes_file
from wsdhash.eval.binary import hamming_distances, pack_codes
from wsdhash.index.index_file import IndexFileError, read_index_file
from wsdhash.index.sharded import ShardedIndex, build_index, sign_manifest
from wsdhash.quantization.aqd import aqd_scores

pytest.importorskip("faiss")

_BOUNDS = [70, 71, 190]  # uneven codes shards, one of a single item
_CLASSES = 4


def _run(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )


def _splits(quantized: bool, rng) -> dict[str, dict[str, np.ndarray]]:
    splits = {}
    for name, n in (("query", 12), ("database", 260)):
        arrays = {
            "ids": np.array([f"{name}/{i:04d}.jpg" for i in range(n)]),
            "codes": pack_codes(rng.integers(0, 2, (n, 24)) * 2 - 1),
            "labels": np.eye(_CLASSES, dtype=np.uint8)[rng.integers(0, _CLASSES, n)],
        }
        if quantized:
            arrays["indices"] = rng.integers(0, 256, (n, 3)).astype(np.uint8)
            arrays["features"] = rng.normal(size=(n, 5)).astype(np.float32)
        splits[name] = arrays
    return splits


@pytest.fixture(scope="module", params=["flat", "aqd"])
def folder_and_file(request, tmp_path_factory):
    """The same labelled codes as a sharded codes folder and as one codes file."""
    quantized = request.param == "aqd"
    rng = np.random.default_rng(5)
    root = tmp_path_factory.mktemp(request.param)
    splits = _splits(quantized, rng)
    codebooks = rng.normal(size=(3, 256, 5)).astype(np.float32) if quantized else None
    write_codes_folder(
        str(root / "folder"),
        {
            "query": split_rows(splits["query"], [5]),
            "database": split_rows(splits["database"], _BOUNDS),
        },
        scorer="aqd" if quantized else "hamming",
        bits=24,
        codebooks=codebooks,
        num_classes=_CLASSES,
        model_fingerprint="cd" * 32,
    )
    parts = {
        name: CodesSplit(
            arrays["codes"],
            arrays["labels"],
            ids=arrays["ids"],
            features=arrays.get("features"),
            indices=arrays.get("indices"),
        )
        for name, arrays in splits.items()
    }
    write_codes_file(
        str(root / "codes.h5"),
        CodesFile(
            24,
            **parts,
            codebooks=codebooks,
            scorer="aqd" if quantized else "hamming",
            model_fingerprint="cd" * 32,
        ),
    )
    return request.param, root, splits, codebooks


def test_a_folder_builds_the_index_its_codes_file_builds(folder_and_file):
    kind, root, splits, codebooks = folder_and_file
    for source, extra in (("folder", ["--shard_size=100"]), ("codes.h5", [])):
        built = _run(
            "wsdhash.search",
            "build",
            f"--codes={root / source}",
            f"--output={root / ('index-' + source)}",
            *extra,
        )
        assert built.returncode == 0, built.stderr[-2000:]
        assert f"{kind} index of 260 items" in built.stdout
    from_folder = ShardedIndex(str(root / "index-folder"))
    from_file = ShardedIndex(str(root / "index-codes.h5"))
    assert len(from_folder.manifest["shards"]) == 3  # 100 + 100 + 60: regrouped
    assert from_folder.manifest["model_fingerprint"] == "cd" * 32
    assert from_folder.manifest["codes"] == str(root / "folder")
    queries = splits["query"]["features" if kind == "aqd" else "codes"]
    a, b = from_folder.search(queries, 15), from_file.search(queries, 15)
    np.testing.assert_array_equal(a.distances, b.distances)
    np.testing.assert_array_equal(
        from_folder.ids.take(a.positions), from_file.ids.take(b.positions)
    )
    # And both rank as brute force does (distances: a reference, not each other).
    database = splits["database"]
    if kind == "aqd":
        expected = np.sort(-aqd_scores(queries, database["indices"], codebooks), axis=1)[:, :15]
        np.testing.assert_allclose(a.distances, expected, rtol=1e-5, atol=1e-5)
    else:
        brute = np.sort(hamming_distances(queries, database["codes"]), axis=1)[:, :15]
        np.testing.assert_array_equal(a.distances, brute)
    assert from_folder.ids.take(a.positions).dtype.kind == "U"  # names stay names


def test_query_reads_a_codes_folder(folder_and_file):
    kind, root, splits, _ = folder_and_file
    index = root / "index-q"
    assert (
        _run(
            "wsdhash.search", "build", f"--codes={root / 'folder'}", f"--output={index}"
        ).returncode
        == 0
    )
    answered = _run(
        "wsdhash.search",
        "query",
        f"--index={index}",
        f"--codes={root / 'folder'}",
        "--k=3",
        "--num_queries=7",
        "--json",
    )
    assert answered.returncode == 0, answered.stderr[-2000:]
    answers = json.loads(answered.stdout)
    assert [a["query"] for a in answers] == [f"query/{i:04d}.jpg" for i in range(7)]
    expected = ShardedIndex(str(index)).search(
        splits["query"]["features" if kind == "aqd" else "codes"][:7], 3
    )
    got = np.array([[row["distance"] for row in a["results"]] for a in answers])
    np.testing.assert_allclose(got, expected.distances, rtol=1e-6)


def test_evaluate_reads_a_folder_as_its_codes_file(folder_and_file):
    _, root, _, _ = folder_and_file
    reports = []
    for source in ("folder", "codes.h5"):
        done = _run("wsdhash.evaluate", f"--codes={root / source}", "--json", "--topk=all")
        assert done.returncode == 0, done.stderr[-2000:]
        reports.append(json.loads(done.stdout.strip().splitlines()[-1]))
    folder, single = reports
    assert folder["map"] == single["map"] and folder["num_database"] == 260
    assert {k: v for k, v in folder.items() if k != "codes"} == {
        k: v for k, v in single.items() if k != "codes"
    }


def _counting_shards(shards, alive: list):
    """The shards of `iter_shards`, recording before reading each how many shards
    already handed out are still in memory."""
    handed = []
    for arrays in shards:
        alive.append(sum(ref() is not None for ref in handed))
        handed.append(weakref.ref(arrays["indices" if "indices" in arrays else "codes"]))
        yield arrays
        del arrays
    alive.append(sum(ref() is not None for ref in handed))


@pytest.mark.parametrize("kind", ["flat", "aqd"])
def test_a_folder_is_indexed_one_shard_at_a_time(tmp_path, kind):
    rng = np.random.default_rng(1)
    n = 4000
    arrays = {
        "ids": np.arange(n, dtype=np.int64) * 3,
        "codes": rng.integers(0, 256, (n, 8), dtype=np.uint8),
        "indices": rng.integers(0, 256, (n, 2), dtype=np.uint8),
    }
    if kind == "flat":
        del arrays["indices"]
    books = rng.normal(size=(2, 256, 4)).astype(np.float32) if kind == "aqd" else None
    write_codes_folder(
        str(tmp_path / "folder"),
        {"database": split_rows(arrays, [1000, 2000, 3000])},
        scorer="aqd" if kind == "aqd" else "hamming",
        bits=64,
        codebooks=books,
    )
    alive = []
    shards = _counting_shards(codes_folder.iter_shards(str(tmp_path / "folder")), alive)
    field = "indices" if kind == "aqd" else "codes"
    build_index(
        str(tmp_path / "index"),
        codes_folder.shard_blocks(shards, field, 0),
        kind=kind,
        codebooks=books,
    )
    assert alive == [0, 0, 0, 0, 0]  # no earlier shard alive when the next is read
    index = ShardedIndex(str(tmp_path / "index"))
    assert len(index.manifest["shards"]) == 4 and index.ids[3999] == 3 * 3999


def test_integer_ids_round_trip_as_integers(tmp_path):
    codes = np.random.default_rng(0).integers(0, 256, (50, 4), dtype=np.uint8)
    consecutive, scattered = np.arange(100, 125), np.arange(25, dtype=np.int64) * 7 - 40
    build_index(
        str(tmp_path / "a"), [(codes[:25], consecutive), (codes[25:], scattered)], kind="flat"
    )
    index = ShardedIndex(str(tmp_path / "a"))
    assert index.manifest["ids"] == "int"
    expected = np.concatenate([consecutive, scattered])
    assert list(index.ids) == expected.tolist()
    assert all(type(i) is int for i in index.ids) and type(index.ids[np.int64(30)]) is int
    np.testing.assert_array_equal(
        index.ids.take(np.array([[49, 0], [24, 25]])), expected[[[49, 0], [24, 25]]]
    )
    np.testing.assert_array_equal(np.asarray(index.ids), expected)
    # Consecutive ids are stored as their first id; others as an int64 array.
    headers = [read_index_file(str(tmp_path / "a" / s["file"])) for s in index.manifest["shards"]]
    assert headers[0][0]["ids"] == {"type": "int", "first": 100} and "ids" not in headers[0][1]
    assert headers[1][1]["ids"].dtype == np.int64


def test_string_ids_round_trip(tmp_path):
    names = np.array(["a.jpg", "", "dir/été/ü.png", "x" * 300, "\ud800lone.jpg", "z"])
    codes = np.random.default_rng(0).integers(0, 256, (6, 2), dtype=np.uint8)
    build_index(str(tmp_path / "s"), [(codes[:4], names[:4]), (codes[4:], names[4:])], kind="flat")
    index = ShardedIndex(str(tmp_path / "s"))
    assert index.manifest["ids"] == "str" and list(index.ids) == names.tolist()
    assert index.ids[-1] == "z" and index.ids.take(np.array([2, 4])).tolist() == [
        "dir/été/ü.png",
        "\ud800lone.jpg",
    ]
    with pytest.raises(ValueError, match="integer and string ids mixed"):
        build_index(
            str(tmp_path / "m"), [(codes[:3], names[:3]), (codes[3:], np.arange(3))], kind="flat"
        )


def _version_2_shard(path, codes, ids):
    """A shard as wsdhash wrote it before ids left the header (format version 2)."""
    import hashlib

    import faiss

    flat = faiss.IndexBinaryFlat(8 * codes.shape[1])
    flat.add(codes)
    data = faiss.serialize_index_binary(flat).tobytes()
    header = {
        "index": "binary",
        "kind": "flat",
        "num_bytes": codes.shape[1],
        "ids": ids,
        "params": {},
        "arrays": [
            {
                "name": "faiss",
                "dtype": "|u1",
                "shape": [len(data)],
                "length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ],
    }
    text = json.dumps(header, sort_keys=True).encode()
    blob = struct.pack("<8sIQ32s", b"WSDHIDX\n", 2, len(text), hashlib.sha256(text).digest())
    blob += text + data
    with open(path, "wb") as f:
        f.write(blob)
    return hashlib.sha256(blob).hexdigest()


def test_an_index_of_the_old_format_is_refused_in_one_line(tmp_path):
    codes = np.random.default_rng(0).integers(0, 256, (10, 2), dtype=np.uint8)
    old = tmp_path / "old"
    old.mkdir()
    digest = _version_2_shard(str(old / "shard-00000.idx"), codes, [str(i) for i in range(10)])
    manifest = sign_manifest(
        {
            "format": "wsdhash-index",
            "version": 3,
            "kind": "flat",
            "num_items": 10,
            "shards": [{"file": "shard-00000.idx", "num_items": 10, "sha256": digest}],
        }
    )
    (old / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFileError, match=r"index version 3; .*Rebuild the index") as raised:
        ShardedIndex(str(old))
    assert "\n" not in str(raised.value)
    with pytest.raises(IndexFileError, match=r"format version 2; .*Rebuild") as raised:
        read_index_file(str(old / "shard-00000.idx"))
    assert "\n" not in str(raised.value)
    queried = _run("wsdhash.search", "query", f"--index={old}", "--images=x.jpg")
    assert queried.returncode == 1 and "Rebuild the index" in queried.stderr
    assert len([line for line in queried.stderr.splitlines() if line.strip()]) == 1


def test_shard_files_of_other_widths_do_not_load_as_one_index(tmp_path):
    """A flat index's shard files load into one FAISS index; a shard of another code
    width (a re-signed manifest listing another index's shard) is refused."""
    rng = np.random.default_rng(0)
    narrow, wide = (rng.integers(0, 256, (20, w), dtype=np.uint8) for w in (2, 4))
    build_index(str(tmp_path / "a"), [(narrow, np.arange(20))], kind="flat")
    build_index(str(tmp_path / "b"), [(wide, np.arange(20, 40))], kind="flat")
    os.replace(tmp_path / "b" / "shard-00000.idx", tmp_path / "a" / "shard-00001.idx")
    manifest = json.loads((tmp_path / "a" / "index.json").read_text())
    other = json.loads((tmp_path / "b" / "index.json").read_text())["shards"][0]
    manifest["shards"].append({**other, "file": "shard-00001.idx"})
    manifest["num_items"] = 40
    (tmp_path / "a" / "index.json").write_text(json.dumps(sign_manifest(manifest)))
    with pytest.raises(IndexFileError, match=r"shard-00001.idx: array 'codes' is not the"):
        ShardedIndex(str(tmp_path / "a"))
