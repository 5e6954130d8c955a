"""Merge map / FinalTagEmbs files: row-order contract, pickle opt-in, labels OR."""

import json
import pickle

import numpy as np
import pytest
from gensim.models import KeyedVectors

from wsdhash.data.types import DataFormatError
from wsdhash.tagging import files, processing


def test_merged_labels_or_in_merge_map_order():
    tags = np.array([[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]])
    merge_map = {1: [3], 0: [0, 1]}  # iteration order decides the columns
    np.testing.assert_array_equal(files.merged_labels(tags, merge_map), [[0, 1], [1, 1], [0, 0]])
    with pytest.raises(ValueError, match="raw column 7"):
        files.merged_labels(tags, {0: [7]})


def test_row_order_contract_round_trip(tmp_path):
    # 12 merged tags so string-sorted JSON keys ("10" < "2") would break the order.
    rng = np.random.default_rng(0)
    embeddings = np.eye(12) + 0.01 * rng.random((12, 12))
    vectors = KeyedVectors(vector_size=12)
    words = [f"w{i}" for i in range(12)]
    vectors.add_vectors(words, embeddings.astype(np.float32))
    tags = (rng.random((30, 12)) < 0.4).astype(np.uint8)
    result = processing.process_tags(words, tags, vectors, merge_method="none")
    paths = files.write_outputs(tmp_path, result)
    merge_map = files.load_merge_map(paths["merge_map"])
    final = files.read_final_embeddings(paths["final_embeddings"])
    assert list(merge_map) == list(range(12))
    assert merge_map == result.merge_map
    np.testing.assert_array_equal(final, result.final_embeddings)  # float32 exact
    # Row g of FinalTagEmbs belongs to the raw tags of merge_map[g].
    for g, members in merge_map.items():
        assert np.argmax(final[g]) == members[0]
    np.testing.assert_array_equal(
        np.loadtxt(paths["merged_tags"], ndmin=2), files.merged_labels(tags, merge_map)
    )
    report = open(paths["report"]).read()
    assert "final tags (rows of FinalTagEmbs.txt): 12" in report


def test_pickle_refused_without_allow_pickle(tmp_path):
    path = tmp_path / "TagIdMergeMap.pkl"
    with open(path, "wb") as f:
        pickle.dump({-1: [5, 6], 2: [3], 0: [0, 1]}, f)
    with pytest.raises(PermissionError, match="pickle can run arbitrary code"):
        files.load_merge_map(path)
    merge_map = files.load_merge_map(path, allow_pickle=True)
    assert list(merge_map.items()) == [(2, [3]), (0, [0, 1])]  # -1 gone, order kept


def test_json_merge_map_errors(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"0": [1], "2": [0]}))
    with pytest.raises(DataFormatError, match="0..1"):
        files.load_merge_map(path)
    path.write_text(json.dumps({"0": []}))
    with pytest.raises(DataFormatError, match="non-empty list"):
        files.load_merge_map(path)
    path.write_text(json.dumps({"-1": [4], "0": [1]}))
    assert files.load_merge_map(path) == {0: [1]}
    with pytest.raises(FileNotFoundError, match="absent.json"):
        files.load_merge_map(tmp_path / "absent.json")
