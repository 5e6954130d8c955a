"""The on-disk format of a search index: one file, versioned and checksummed.

    bytes 0-7    b"WSDHIDX\\n" (magic)
    bytes 8-11   format version, uint32 little endian
    bytes 12-19  header length H, uint64 little endian
    bytes 20-51  SHA-256 of the H header bytes (version 2 on)
    bytes 52..   H bytes of UTF-8 JSON: kind, parameters, how the items' ids are
                 stored (wsdhash/index/ids.py), the lengths and SHA-256 of the named
                 payload arrays that follow
    then         the payload arrays, raw little-endian bytes, in header order

Version 3 keeps the ids out of the JSON header (version 2 listed every id there):
they are payload arrays, or nothing at all for consecutive integer ids.

Files are written atomically (a temporary file, then a rename), so a crash never
leaves a half-written index under the final name. Writing streams each array from its
own memory (no copy of the payload is assembled) and reading fills each array from the
file in place (optionally straight into memory its index owns: `allocate`), so a shard
costs its arrays' size once, whatever its length. Reading checks the magic (a foreign
file), the version, the lengths (a truncated file), the header's checksum (the kind
edited in place) and either the whole file's SHA-256 that a manifest recorded or, when
none is given, every array's, and names the file in each error. Files of versions 1
and 2 are refused with a "rebuild" error.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable

import numpy as np

from wsdhash import atomic_files

MAGIC = b"WSDHIDX\n"
FORMAT_VERSION = 3
_PREFIX = struct.Struct("<8sI")  # magic, version: the same in every version
_FIXED = struct.Struct("<8sIQ32s")  # + header length, header SHA-256
_CHUNK = 1 << 24  # bytes read (and hashed) at a time


class IndexFileError(ValueError):
    """An index file is foreign, truncated, corrupted or of another version."""


def _payload(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the little-endian array, its bytes as a flat uint8 view: no copy when it is
    contiguous and little-endian already)."""
    array = np.ascontiguousarray(array)
    array = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return array, array.reshape(-1).view(np.uint8)


def write_index_file(path: str, header: dict, arrays: dict[str, np.ndarray]) -> str:
    """Writes `header` (JSON-serialisable) and named arrays atomically; returns the
    SHA-256 (hex) of the whole file, which a manifest records."""
    entries, payload = [], []
    for name, array in arrays.items():
        array, data = _payload(array)
        entries.append(
            {
                "name": name,
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "length": int(data.nbytes),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
        payload.append(data)
    text = json.dumps({**header, "arrays": entries}, sort_keys=True).encode("utf-8")
    fixed = _FIXED.pack(MAGIC, FORMAT_VERSION, len(text), hashlib.sha256(text).digest())
    whole = hashlib.sha256()
    with atomic_files.atomic_path(path) as temporary, open(temporary, "wb") as f:
        for part in (fixed, text, *payload):
            whole.update(part)
            f.write(part)
    return whole.hexdigest()


# allocate(header, entry) -> a writable C-contiguous array of the entry's dtype and
# shape to read it into, or None for a new one.
Allocate = Callable[[dict, dict], "np.ndarray | None"]


def _read_header(f, path: str, whole) -> dict:
    prefix = f.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size or prefix[:8] != MAGIC:
        raise IndexFileError(f"{path}: not a wsdhash index file (bad magic bytes).")
    _, version = _PREFIX.unpack(prefix)
    if version != FORMAT_VERSION:
        raise IndexFileError(
            f"{path}: index format version {version}; this wsdhash reads version "
            f"{FORMAT_VERSION}. Rebuild the index with `python -m wsdhash.search build`."
        )
    fixed = prefix + f.read(_FIXED.size - _PREFIX.size)
    if len(fixed) < _FIXED.size:
        raise IndexFileError(f"{path}: truncated (the fixed header is incomplete).")
    _, _, header_length, header_sha256 = _FIXED.unpack(fixed)
    if header_length > os.fstat(f.fileno()).st_size - f.tell():
        raise IndexFileError(f"{path}: truncated (the header is incomplete).")
    text = f.read(header_length)
    if len(text) != header_length:
        raise IndexFileError(f"{path}: truncated (the header is incomplete).")
    if hashlib.sha256(text).digest() != header_sha256:
        raise IndexFileError(f"{path}: checksum mismatch in the header.")
    whole.update(fixed)
    whole.update(text)
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexFileError(f"{path}: corrupted header ({error}).") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays", []), list):
        raise IndexFileError(f"{path}: corrupted header (not a JSON object).")
    return header


def _target(path: str, header: dict, entry, allocate: Allocate | None) -> np.ndarray:
    """The array `entry` is read into, checked against the entry."""
    try:
        dtype, shape = np.dtype(entry["dtype"]), tuple(int(n) for n in entry["shape"])
        length = int(entry["length"])
        if (
            dtype.hasobject
            or min(shape, default=0) < 0
            or dtype.itemsize * np.prod(shape, dtype=np.int64) != length
        ):
            raise ValueError("the length does not match the dtype and shape")
    except (KeyError, TypeError, ValueError) as error:
        raise IndexFileError(f"{path}: corrupted array entry ({error}).") from None
    target = allocate(header, entry) if allocate else None
    if target is None:
        return np.empty(shape, dtype)
    if target.dtype != dtype or target.shape != shape or not target.flags.c_contiguous:
        raise IndexFileError(f"{path}: array {entry['name']!r} is not the expected array.")
    return target


def _read_array(f, path: str, entry: dict, target: np.ndarray, hashes) -> None:
    view = target.reshape(-1).view(np.uint8)
    for start in range(0, view.nbytes, _CHUNK):
        chunk = view[start : start + _CHUNK]
        got = f.readinto(chunk)
        if got != chunk.nbytes:
            raise IndexFileError(
                f"{path}: truncated (array {entry['name']!r} has {start + (got or 0)} of "
                f"{entry['length']} bytes)."
            )
        for digest in hashes:
            digest.update(chunk)


def read_index_file(
    path: str, expected_sha256: str | None = None, allocate: Allocate | None = None
) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of a file written by `write_index_file`; errors name `path`.

    Args:
        path: the file.
        expected_sha256: the whole file's SHA-256 (hex) that a manifest recorded; a
            file whose bytes differ (another build's shard, an edit) is an error. Given,
            it replaces the arrays' own checksums (it covers them).
        allocate: where to read arrays into (`Allocate`): memory an index owns.
    """
    whole = hashlib.sha256()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Index file not found: {path}")
    with open(path, "rb", buffering=0) as f:
        header = _read_header(f, path, whole)
        arrays = {}
        for entry in header.get("arrays", []):
            target = _target(path, header, entry, allocate)
            own = hashlib.sha256() if expected_sha256 is None else None
            _read_array(f, path, entry, target, [whole] + ([own] if own else []))
            if own is not None and own.hexdigest() != entry.get("sha256"):
                raise IndexFileError(f"{path}: checksum mismatch in array {entry['name']!r}.")
            arrays[entry["name"]] = target
        trailing = os.fstat(f.fileno()).st_size - f.tell()
    if trailing:
        raise IndexFileError(f"{path}: {trailing} unexpected trailing bytes.")
    if expected_sha256 is not None and whole.hexdigest() != expected_sha256:
        raise IndexFileError(
            f"{path}: checksum mismatch with the manifest (a shard of another build, "
            "or an edited or damaged file); rebuild the index."
        )
    return header, arrays
