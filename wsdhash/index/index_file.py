"""The on-disk format of a search index: one file, versioned and checksummed.

    bytes 0-7    b"WSDHIDX\\n" (magic)
    bytes 8-11   format version, uint32 little endian
    bytes 12-19  header length H, uint64 little endian
    bytes 20-51  SHA-256 of the H header bytes (version 2 on)
    bytes 52..   H bytes of UTF-8 JSON: kind, parameters, ids (image paths), the
                 lengths and SHA-256 of the named payload arrays that follow
    then         the payload arrays, raw little-endian bytes, in header order

Files are written atomically (a temporary file, then a rename), so a crash never
leaves a half-written index under the final name. Reading checks the magic (a
foreign file), the version, the lengths (a truncated file), the header's checksum
(an id or the kind edited in place) and every array's, and names the file in each
error. Version 1 files (no header checksum) are refused with a "rebuild" error.
"""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np

from wsdhash import atomic_files

MAGIC = b"WSDHIDX\n"
FORMAT_VERSION = 2
_PREFIX = struct.Struct("<8sI")  # magic, version: the same in every version
_FIXED = struct.Struct("<8sIQ32s")  # + header length, header SHA-256


class IndexFileError(ValueError):
    """An index file is foreign, truncated, corrupted or of another version."""


def write_index_file(path: str, header: dict, arrays: dict[str, np.ndarray]) -> str:
    """Writes `header` (JSON-serialisable) and named arrays atomically; returns the
    SHA-256 (hex) of the whole file, which a manifest records."""
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
    fixed = _FIXED.pack(MAGIC, FORMAT_VERSION, len(text), hashlib.sha256(text).digest())
    blob = fixed + text + b"".join(payload)
    atomic_files.write_bytes(path, blob)
    return hashlib.sha256(blob).hexdigest()


def read_index_file(
    path: str, expected_sha256: str | None = None
) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, arrays) of a file written by `write_index_file`; errors name `path`.

    Args:
        path: the file.
        expected_sha256: the whole file's SHA-256 (hex) that a manifest recorded; a
            file whose bytes differ (another build's shard, an edit) is an error.
    """
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"Index file not found: {path}") from None
    if len(blob) < _PREFIX.size or blob[:8] != MAGIC:
        raise IndexFileError(f"{path}: not a wsdhash index file (bad magic bytes).")
    _, version = _PREFIX.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise IndexFileError(
            f"{path}: index format version {version}; this wsdhash reads version "
            f"{FORMAT_VERSION}. Rebuild the index with `python -m wsdhash.search build`."
        )
    if len(blob) < _FIXED.size:
        raise IndexFileError(f"{path}: truncated (the fixed header is incomplete).")
    if expected_sha256 is not None and hashlib.sha256(blob).hexdigest() != expected_sha256:
        raise IndexFileError(
            f"{path}: checksum mismatch with the manifest (a shard of another build, "
            "or an edited or damaged file); rebuild the index."
        )
    _, _, header_length, header_sha256 = _FIXED.unpack_from(blob)
    start = _FIXED.size
    if len(blob) < start + header_length:
        raise IndexFileError(f"{path}: truncated (the header is incomplete).")
    text = blob[start : start + header_length]
    if hashlib.sha256(text).digest() != header_sha256:
        raise IndexFileError(f"{path}: checksum mismatch in the header.")
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexFileError(f"{path}: corrupted header ({error}).") from None
    if not isinstance(header, dict):
        raise IndexFileError(f"{path}: corrupted header (not a JSON object).")
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
