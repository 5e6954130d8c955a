"""`python -m wsdhash.tags` end to end in a subprocess."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from wsdhash.data.builtin import CONCEPT_SYNONYMS, generate_builtin
from wsdhash.data.list_files import read_binary_matrix, read_name_list
from wsdhash.tagging import files


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "wsdhash.tags", *args], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def builtin_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("builtin")
    generate_builtin(root, num_train=400, num_query=20, num_database=20, num_workers=0)
    return root


def test_vectors_train_on_builtin_end_to_end(builtin_root, tmp_path):
    out = tmp_path / "tags"
    vocab = builtin_root / "tag_vocab.txt"
    matrix = builtin_root / "train_tag.txt"
    completed = _run(
        f"--vocab={vocab}", f"--tag_matrix={matrix}", "--vectors=train", f"--output_dir={out}"
    )
    assert completed.returncode == 0, completed.stderr
    vocabulary = read_name_list(str(vocab))
    tags = read_binary_matrix(str(matrix))
    merge_map = files.load_merge_map(out / files.MERGE_MAP_FILE)
    final = files.read_final_embeddings(out / files.FINAL_EMBEDDINGS_FILE)
    assert final.shape[0] == len(merge_map) and 1 < len(merge_map) <= len(vocabulary)
    np.testing.assert_allclose(np.linalg.norm(final, axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(
        np.loadtxt(out / files.MERGED_TAGS_FILE, ndmin=2), files.merged_labels(tags, merge_map)
    )
    # Every kept raw tag is in exactly one group.
    members = sorted(i for group in merge_map.values() for i in group)
    assert len(members) == len(set(members))

    # Weak check: trained vectors put synonyms closer than random pairs, on average.
    from wsdhash.tagging import word_vectors

    sentences = [[vocabulary[j] for j in row.nonzero()[0]] for row in tags]
    vectors = word_vectors.train_word2vec(sentences, seed=0)
    units = {w: vectors[w] / np.linalg.norm(vectors[w]) for w in vectors.index_to_key}
    synonym = [
        units[c] @ units[s]
        for c, synonyms in CONCEPT_SYNONYMS.items()
        for s in synonyms
        if c in units and s in units
    ]
    rng = np.random.default_rng(0)
    words = list(units)
    random_pairs = [units[a] @ units[b] for a, b in rng.choice(words, size=(500, 2)) if a != b]
    assert np.mean(synonym) > np.mean(random_pairs)


def test_pretrained_text_vectors_through_the_cli(tmp_path):
    (tmp_path / "vocab.txt").write_text("dog\npuppy\nsky\nnew york\n")
    (tmp_path / "tags.txt").write_text("1 0 1 1\n0 1 1 0\n1 0 0 1\n")
    (tmp_path / "glove.txt").write_text(
        "dog 1 0 0\npuppy 0.99 0.05 0\nsky 0 1 0\nnew_york 0 0 1\nother 1 1 1\n"
    )
    completed = _run(
        f"--vocab={tmp_path / 'vocab.txt'}",
        f"--tag_matrix={tmp_path / 'tags.txt'}",
        f"--vectors={tmp_path / 'glove.txt'}",
        f"--output_dir={tmp_path / 'out'}",
    )
    assert completed.returncode == 0, completed.stderr
    assert files.load_merge_map(tmp_path / "out" / files.MERGE_MAP_FILE) == {
        0: [0, 1],
        1: [2],
        2: [3],
    }


def test_convert_pickle_needs_allow_pickle(tmp_path):
    path = tmp_path / "TagIdMergeMap.pkl"
    with open(path, "wb") as f:
        pickle.dump({-1: [9], 0: [0, 2], 1: [1]}, f)
    refused = _run(f"--convert_merge_map={path}", f"--output_dir={tmp_path}")
    assert refused.returncode == 2 and "arbitrary code" in refused.stderr
    done = _run(f"--convert_merge_map={path}", "--allow_pickle", f"--output_dir={tmp_path}")
    assert done.returncode == 0, done.stderr
    assert files.load_merge_map(tmp_path / files.MERGE_MAP_FILE) == {0: [0, 2], 1: [1]}


@pytest.mark.parametrize(
    "case, expected",
    [
        ("columns", "has 3 tags but --tag_matrix="),
        ("missing_vectors", "--vectors="),
        ("bad_flag", "merge_method"),
        ("empty", "No tag left"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, case, expected):
    (tmp_path / "vocab.txt").write_text("a\nb\nc\n")
    (tmp_path / "tags3.txt").write_text("1 0 1\n")
    (tmp_path / "tags2.txt").write_text("1 0\n")
    (tmp_path / "v.txt").write_text("zzz 1 2\n")
    base = [f"--vocab={tmp_path / 'vocab.txt'}", f"--output_dir={tmp_path / 'out'}"]
    args = {
        "columns": [f"--tag_matrix={tmp_path / 'tags2.txt'}", f"--vectors={tmp_path / 'v.txt'}"],
        "missing_vectors": [f"--tag_matrix={tmp_path / 'tags3.txt'}", "--vectors=/nowhere.bin"],
        "bad_flag": [
            f"--tag_matrix={tmp_path / 'tags3.txt'}",
            "--vectors=train",
            "--merge_method=kmeans",
        ],
        "empty": [f"--tag_matrix={tmp_path / 'tags3.txt'}", f"--vectors={tmp_path / 'v.txt'}"],
    }[case]
    completed = _run(*base, *args)
    assert completed.returncode == 2
    error_lines = [line for line in completed.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and expected in error_lines[0], completed.stderr
    assert not os.path.exists(tmp_path / "out" / files.REPORT_FILE)


def test_vectors_ppmi_through_the_cli(tmp_path):
    # car/auto share their contexts (road, wheel) without sharing an image; sea/boat
    # co-occur. The command must write what the library computes (centred by default).
    from wsdhash.tagging import ppmi_vectors, process_tags

    vocabulary = ["car", "auto", "road", "wheel", "sea", "boat"]
    rows = [[1, 0, 1, 1, 0, 0]] * 4 + [[0, 1, 1, 1, 0, 0]] * 4 + [[0, 0, 0, 0, 1, 1]] * 10
    (tmp_path / "vocab.txt").write_text("\n".join(vocabulary) + "\n")
    (tmp_path / "tags.txt").write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
    out = tmp_path / "out"
    completed = _run(
        f"--vocab={tmp_path / 'vocab.txt'}",
        f"--tag_matrix={tmp_path / 'tags.txt'}",
        "--vectors=ppmi",
        "--ppmi_dim=4",
        f"--output_dir={out}",
    )
    assert completed.returncode == 0, completed.stderr
    expected = process_tags(
        vocabulary,
        np.array(rows),
        ppmi_vectors.ppmi_svd_vectors(vocabulary, rows, dim=4),
        center=True,
    )
    np.testing.assert_allclose(
        files.read_final_embeddings(out / files.FINAL_EMBEDDINGS_FILE),
        expected.final_embeddings,
        atol=1e-6,
    )
    assert files.load_merge_map(out / files.MERGE_MAP_FILE) == expected.merge_map
    assert [0, 1] in expected.merge_map.values()  # the synonyms merged
    assert "PPMI-SVD" in (out / files.REPORT_FILE).read_text()
