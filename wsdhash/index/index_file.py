"""The on-disk format of a search index: one file, versioned and checksummed.

    bytes 0-7    b"WSDHIDX\\n" (magic)
    bytes 8-11   format version, uint32 little endian
    bytes 12-19  header length H, uint64 little endian
    bytes 20..   H bytes of UTF-8 JSON: kind, parameters, ids (image paths), the
                 lengths and SHA-256 of the named payload arrays that follow
    then         the payload arrays, raw little-endian bytes, in header order

Files are written atomically (a temporary file, then a rename), so a crash never
leaves a half-written index under the final name. Reading checks the magic (a
foreign file), the version, the lengths (a truncated file) and every checksum, and
names the file in each error.
"""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np

from wsdhash import atomic_files

MAGIC = b"WSDHIDX\n"
FORMAT_VERSION = 1
_FIXED = struct.Struct("<8sIQ")


class IndexFileError(ValueError):
    """An index file is foreign, truncated, corrupted or of another version."""


def write_index_file(path: str, header: dict, arrays: dict[str, np.ndarray]) -> None:
    """Writes `header` (JSON-serialisable) and named arrays atomically."""
    entries, payload = [], []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        entries.append(
            {
                "name": name,
                "dtype": array.dtype.newbyteorder("<").str,
                "shape": list(array.shape),
                "length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
        payload.append(data)
    text = json.dumps({**header, "arrays": entries}, sort_keys=True).encode("utf-8")
    blob = _FIXED.pack(MAGIC, FORMAT_VERSION, len(text)) + text + b"".join(payload)
    atomic_files.write_bytes(path, blob)


def read_index_file(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of a file written by `write_index_file`; errors name `path`."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"Index file not found: {path}") from None
    if len(blob) < _FIXED.size or blob[:8] != MAGIC:
        raise IndexFileError(f"{path}: not a wsdhash index file (bad magic bytes).")
    _, version, header_length = _FIXED.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise IndexFileError(
            f"{path}: index format version {version}; this wsdhash reads version "
            f"{FORMAT_VERSION}. Rebuild the index with `python -m wsdhash.search build`."
        )
    start = _FIXED.size
    if len(blob) < start + header_length:
        raise IndexFileError(f"{path}: truncated (the header is incomplete).")
    try:
        header = json.loads(blob[start : start + header_length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexFileError(f"{path}: corrupted header ({error}).") from None
    offset = start + header_length
    arrays = {}
    for entry in header.get("arrays", []):
        data = blob[offset : offset + entry["length"]]
        if len(data) != entry["length"]:
            raise IndexFileError(
                f"{path}: truncated (array {entry['name']!r} has {len(data)} of "
                f"{entry['length']} bytes)."
            )
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise IndexFileError(f"{path}: checksum mismatch in array {entry['name']!r}.")
        arrays[entry["name"]] = np.frombuffer(data, dtype=entry["dtype"]).reshape(entry["shape"])
        offset += entry["length"]
    if offset != len(blob):
        raise IndexFileError(f"{path}: {len(blob) - offset} unexpected trailing bytes.")
    return header, arrays
