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


def corrupt(tmp_path, edit, reseal=True):
    """Writes a valid file, applies `edit(h5)` with h5py, returns the path. With
    `reseal` the edited file gets a matching checksum, to reach the layout checks."""
    path = tmp_path / "corrupt.h5"
    codes_file.write_codes_file(path, make_contents())
    with h5py.File(path, "a") as h5:
        edit(h5)
    if reseal:
        codes_file.seal(path)
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
        (lambda h5: h5.attrs.__delitem__("scorer"), "missing root attribute 'scorer'"),
        (
            lambda h5: h5.attrs.__delitem__("database_codes"),
            "missing root attribute 'database_codes'",
        ),
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
    with pytest.raises(ValueError, match="codes.h5': corrupted or edited"):
        codes_file.read_codes_file(path)
    # Behind the file's checksum (resealed), HDF5's Fletcher-32 still names the dataset.
    codes_file.seal(path)
    with pytest.raises(ValueError, match=f"codes.h5'.*'/{dataset}' is corrupted"):
        codes_file.read_codes_file(path)


def test_a_flipped_byte_in_an_id_is_an_error(tmp_path):
    path = tmp_path / "codes.h5"
    codes_file.write_codes_file(path, make_contents())
    _flip_byte(path, path.read_bytes().index(b"db/7.jpg") + 3)  # "db/6.jpg": still valid text
    with pytest.raises(ValueError, match="codes.h5': corrupted or edited"):
        codes_file.read_codes_file(path)
    codes_file.seal(path)
    with pytest.raises(ValueError, match="codes.h5'.*'/database/ids' is corrupted"):
        codes_file.read_codes_file(path)


_FLIP_SWEEP = r"""
import json, os, sys
import numpy as np
from wsdhash.eval import codes_file

source, scratch = sys.argv[1], sys.argv[2]
original = codes_file.read_codes_file(source)
data = open(source, "rb").read()
offsets = [*range(0, min(len(data), 6144), 3), *range(6144, len(data), 97)]


def same(a, b):
    if a is None or b is None:
        return a is b
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def identical(read):
    if (read.bits, read.scorer, read.database_codes, read.model_fingerprint) != (
        original.bits, original.scorer, original.database_codes, original.model_fingerprint
    ) or not same(read.codebooks, original.codebooks):
        return False
    for name in codes_file.SPLITS:
        a, b = getattr(read, name), getattr(original, name)
        for field in ("codes", "labels", "ids", "features", "indices"):
            if not same(getattr(a, field), getattr(b, field)):
                return False
    return True


outcomes = {}
for offset in offsets:
    flipped = bytearray(data)
    flipped[offset] ^= 1 << (offset % 8)
    with open(scratch, "wb") as f:
        f.write(flipped)
    try:
        read = codes_file.read_codes_file(scratch)
    except ValueError as error:
        text = str(error)
        clear = text.startswith(f"Codes file {scratch!r}: ") and "\n" not in text
        outcomes[offset] = "refused" if clear else f"unclear error: {text[:200]}"
        continue
    except Exception as error:  # noqa: BLE001 - any other failure is what we look for
        outcomes[offset] = f"{type(error).__name__}: {str(error)[:200]}"
        continue
    outcomes[offset] = "identical" if identical(read) else "CHANGED"
print(json.dumps(outcomes))
"""


def test_flipped_bits_in_the_header_are_refused_or_harmless_and_never_hang(tmp_path):
    """Issue 22 (8): a flipped bit in HDF5's metadata made `evaluate` hang, changed
    codebook values or dropped `model_fingerprint` without an error. Every flip over
    the first 6 KiB (the user block, the superblock and the object headers that hold
    names, attributes, dtypes and shapes; every third byte) and a sample of the rest is
    refused in one line naming the file, or reads back identical contents, within a
    deadline (a child process: a hang cannot stop the test run)."""
    import json
    import subprocess
    import sys

    path = tmp_path / "codes.h5"
    contents = make_contents(quantized=True)
    contents.model_fingerprint = "ab" * 32
    codes_file.write_codes_file(path, contents)
    try:
        completed = subprocess.run(
            [sys.executable, "-c", _FLIP_SWEEP, str(path), str(tmp_path / "flipped.h5")],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("reading a codes file with a flipped bit did not finish in 90 s (a hang)")
    assert completed.returncode == 0, completed.stderr[-2000:]
    outcomes = json.loads(completed.stdout)
    assert len(outcomes) > 2000
    bad = {o: what for o, what in outcomes.items() if what not in ("refused", "identical")}
    assert not bad, f"{len(bad)} of {len(outcomes)} flips: {dict(list(bad.items())[:5])}"


def _legacy_file(path, contents):
    """A codes file as the previous version wrote it: plain HDF5, no user block."""
    with h5py.File(path, "w") as h5:
        codes_file._write_contents(h5, contents)  # the old layout


def test_files_of_the_previous_version_are_refused_until_upgraded(tmp_path):
    path = tmp_path / "old.h5"
    written = make_contents(quantized=True)
    _legacy_file(path, written)
    with pytest.raises(ValueError, match=r"old.h5': written by an older wsdhash.*--upgrade_codes"):
        codes_file.read_codes_file(path)
    codes_file.upgrade_codes_file(path)
    read = codes_file.read_codes_file(path)
    np.testing.assert_array_equal(read.codebooks, written.codebooks)
    np.testing.assert_array_equal(read.database.indices, written.database.indices)
    assert list(read.query.ids) == list(written.query.ids)
    with pytest.raises(ValueError, match="not a codes file of an older wsdhash"):
        codes_file.upgrade_codes_file(path)  # already upgraded


def test_an_edit_without_a_new_checksum_is_refused(tmp_path):
    # What made a network's codes pass as learned ones (the service then skips its check).
    edit = lambda h5: h5.attrs.__setitem__("database_codes", "learned")
    path = corrupt(tmp_path, edit, reseal=False)
    with pytest.raises(ValueError, match="corrupt.h5': corrupted or edited"):
        codes_file.read_codes_file(path)
