"""Tests for wsdhash.eval.codes_file: round trip and every validation error."""

import os

import h5py
import numpy as np
import pytest

from wsdhash.eval import binary, codes_file


def make_contents(bits=12, num_queries=4, num_items=9, num_classes=3, quantized=False):
    rng = np.random.default_rng(0)

    def split(rows, prefix):
        return codes_file.CodesSplit(
            codes=binary.pack_codes(rng.random((rows, bits)) < 0.5),
            labels=(rng.random((rows, num_classes)) < 0.5).astype(np.uint8),
            ids=np.array([f"{prefix}/{i}.jpg" for i in range(rows)]),
            features=rng.normal(size=(rows, 5)).astype(np.float32),
            indices=rng.integers(0, 256, size=(rows, 2), dtype=np.uint8) if quantized else None,
        )

    codebooks = rng.normal(size=(2, 256, 5)).astype(np.float32) if quantized else None
    return codes_file.CodesFile(
        bits=bits,
        query=split(num_queries, "q"),
        database=split(num_items, "db"),
        codebooks=codebooks,
    )


@pytest.mark.parametrize("quantized", [False, True])
def test_round_trip(tmp_path, quantized):
    path = tmp_path / "codes.h5"
    written = make_contents(quantized=quantized)
    codes_file.write_codes_file(path, written)
    read = codes_file.read_codes_file(path)
    assert read.bits == 12
    for name in ("query", "database"):
        original, loaded = getattr(written, name), getattr(read, name)
        np.testing.assert_array_equal(loaded.codes, original.codes)
        np.testing.assert_array_equal(loaded.labels, original.labels)
        assert list(loaded.ids) == list(original.ids)
        np.testing.assert_array_equal(loaded.features, original.features)
        assert loaded.codes.dtype == np.uint8 and loaded.features.dtype == np.float32
        if quantized:
            np.testing.assert_array_equal(loaded.indices, original.indices)
        else:
            assert loaded.indices is None
    if quantized:
        np.testing.assert_array_equal(read.codebooks, written.codebooks)
    # Only the final file is left behind: the temporary was renamed into place.
    assert os.listdir(tmp_path) == ["codes.h5"]


def test_minimal_file_and_bool_labels(tmp_path):
    path = tmp_path / "minimal.h5"
    contents = make_contents()
    for split in (contents.query, contents.database):
        split.ids = split.features = None
        split.labels = split.labels.astype(bool)
    codes_file.write_codes_file(path, contents)
    read = codes_file.read_codes_file(path)
    assert read.query.ids is None and read.database.features is None
    assert read.query.labels.dtype == np.uint8


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "bad.h5"
    contents = make_contents()
    contents.query.codes = contents.query.codes[:, :1]
    with pytest.raises(ValueError, match="bad.h5"):
        codes_file.write_codes_file(path, contents)
    assert os.listdir(tmp_path) == []


def test_missing_file_and_non_hdf5(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.h5"):
        codes_file.read_codes_file(tmp_path / "nothing.h5")
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="text.h5.*HDF5"):
        codes_file.read_codes_file(text)


def corrupt(tmp_path, edit):
    """Writes a valid file, applies `edit(h5)` with h5py, returns the path."""
    path = tmp_path / "corrupt.h5"
    codes_file.write_codes_file(path, make_contents())
    with h5py.File(path, "a") as h5:
        edit(h5)
    return path


def replace(h5, name, data):
    del h5[name]
    h5[name] = data


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda h5: h5.__delitem__("database"), "missing group 'database'"),
        (lambda h5: h5["query"].__delitem__("labels"), "missing dataset 'labels' in group 'query'"),
        (lambda h5: h5["database"].__delitem__("codes"), "missing dataset 'codes'"),
        (lambda h5: h5.attrs.__delitem__("bits"), "missing root attribute 'bits'"),
        (lambda h5: h5.attrs.__setitem__("bits", 24), r"2 bytes wide but bits=24 needs"),
        (lambda h5: replace(h5, "query/labels", np.ones((4, 5), np.uint8)), "3 columns|5 columns"),
        (lambda h5: replace(h5, "query/labels", np.ones((3, 3), np.uint8)), "row counts differ"),
        (lambda h5: replace(h5, "query/ids", np.array([b"a", b"b"])), "row counts differ"),
        (lambda h5: replace(h5, "database/features", np.ones((9, 5))), "dtype float64"),
        (lambda h5: replace(h5, "query/codes", np.ones((4, 2), np.int32)), "dtype int32"),
        (lambda h5: replace(h5, "query/labels", np.full((4, 3), 2, np.uint8)), "0/1"),
        (lambda h5: replace(h5, "query/codes", np.full((4, 2), 255, np.uint8)), "padding"),
        (
            lambda h5: h5["query"].create_dataset("indices", data=np.zeros((4, 2), np.uint8)),
            "codebooks",
        ),
    ],
)
def test_validation_errors_name_the_file(tmp_path, edit, message):
    path = corrupt(tmp_path, edit)
    with pytest.raises(ValueError, match=message) as caught:
        codes_file.read_codes_file(path)
    assert "corrupt.h5" in str(caught.value)


def _flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("dataset", ["database/codes", "query/features", "database/labels"])
def test_a_flipped_byte_in_a_dataset_is_an_error_naming_file_and_dataset(tmp_path, dataset):
    path = tmp_path / "codes.h5"
    codes_file.write_codes_file(path, make_contents(num_items=40))
    with h5py.File(path, "r") as h5:
        assert h5[dataset].fletcher32
        offset = h5[dataset].id.get_chunk_info(0).byte_offset  # the data, not metadata
    _flip_byte(path, offset + 1)
    with pytest.raises(ValueError, match=f"codes.h5'.*'/{dataset}' is corrupted"):
        codes_file.read_codes_file(path)


def test_a_flipped_byte_in_an_id_is_an_error(tmp_path):
    path = tmp_path / "codes.h5"
    codes_file.write_codes_file(path, make_contents())
    _flip_byte(path, path.read_bytes().index(b"db/7.jpg") + 3)  # "db/6.jpg": still valid text
    with pytest.raises(ValueError, match="codes.h5'.*'/database/ids' is corrupted"):
        codes_file.read_codes_file(path)
