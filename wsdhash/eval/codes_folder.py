"""The codes folder: codes of many images, written in shards by a distributed job.

`python -m wsdhash.pipeline encode` writes one; `python -m wsdhash.search build
--codes=FOLDER` builds an index from it shard by shard (never holding all codes in
memory), and `python -m wsdhash.evaluate --codes=FOLDER` evaluates it when it holds
labelled query and database splits. Layout:

    FOLDER/codes.json                    the manifest (below)
    FOLDER/database-00000-of-00004.npz   one shard: NumPy arrays (no pickles)
    FOLDER/query-00000-of-00001.npz
    FOLDER/codebooks.npy                 float32 (M, 256, D): AQD codes only
    FOLDER/failed.jsonl                  one JSON line {"split", "id", "path",
                                         "reason"} per image that got no code (the
                                         dead letters), sorted by split and id

A shard holds, row for row:
    ids       (n,) int64 or unicode: the items' ids (image paths, or list positions)
    codes     (n, ceil(bits/8)) uint8: packed binary codes (`binary.pack_codes`)
    indices   (n, M) uint8: codeword indices (AQD codes only)
    features  (n, D) float32: optional continuous features (AQD queries' embeddings)
    labels    (n, C) uint8 0/1: optional ground truth (a labelled dataset's splits)
Rows are sorted by id within a shard; an id appears once in a split.

The manifest:
    {"format": "wsdhash-codes-folder", "version": 1,
     "scorer": "hamming" | "aqd", "bits": K, "database_codes": "network",
     "model_fingerprint": <the export's weights fingerprint> | null,
     "num_classes": C | null (null: no labels),
     "splits": {"database": {"num_items": n, "shards": [{"file", "num_items",
                "sha256"}, ...]}, "query": {...}},
     "codebooks": {"file": "codebooks.npy", "sha256": ...} | null,
     "failed": {"file": "failed.jsonl", "num_items": F, "sha256": ...},
     ...metadata (the command, the source...),
     "manifest_sha256": <SHA-256 of all the above, signed_json>}

Every file's SHA-256 is checked before it is parsed, and a shard's arrays against
the manifest (dtypes, widths, row counts), so a damaged or swapped file is one error
line naming it. The writer (wsdhash/beam/encode.py) writes the whole folder beside
its destination and renames it into place at the end, so a reader sees the old
folder or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterator

import numpy as np

from wsdhash import atomic_files, signed_json
from wsdhash.eval.codes_file import CodesFile, CodesSplit, validate_codes_file

FORMAT = "wsdhash-codes-folder"
VERSION = 1
MANIFEST = "codes.json"
CODEBOOKS_FILE = "codebooks.npy"
FAILED_FILE = "failed.jsonl"
SPLITS = ("query", "database")
SCORERS = ("hamming", "aqd")
_SHARD_FILE = re.compile(r"(query|database)-\d{5}-of-\d{5}\.npz")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHARD_KEYS = {"file", "num_items", "sha256"}
# Each array a shard may hold: (dtype kind check, number of dimensions).
_ARRAYS = {
    "ids": ("iU", 1),
    "codes": ("u", 2),
    "indices": ("u", 2),
    "features": ("f", 2),
    "labels": ("u", 2),
}


class CodesFolderError(ValueError):
    """A codes folder that is damaged, inconsistent or not one at all."""


def is_codes_folder(path: str) -> bool:
    """Whether `path` is a folder with a codes manifest."""
    return os.path.isfile(os.path.join(path, MANIFEST))


def shard_name(split: str, number: int, count: int) -> str:
    """The file name of shard `number` of `count` of a split."""
    return f"{split}-{number:05d}-of-{count:05d}.npz"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shard_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """One shard's file content (an uncompressed .npz) from its arrays."""
    unknown = set(arrays) - set(_ARRAYS)
    if unknown or not {"ids", "codes"} <= set(arrays):
        raise ValueError(
            f"a shard holds ids, codes and optionally {sorted(_ARRAYS)}; got {sorted(arrays)}"
        )
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value) for name, value in arrays.items()})
    return buffer.getvalue()


def write_file(folder: str, name: str, data: bytes) -> dict:
    """Writes `data` atomically as `folder/name`; its manifest entry (file, sha256)."""
    atomic_files.write_bytes(os.path.join(folder, name), data)
    return {"file": name, "sha256": sha256_bytes(data)}


def codebooks_bytes(codebooks: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(codebooks, np.float32), allow_pickle=False)
    return buffer.getvalue()


def make_manifest(
    *,
    scorer: str,
    bits: int,
    splits: dict[str, list[dict]],
    failed: dict,
    codebooks: dict | None = None,
    num_classes: int | None = None,
    model_fingerprint: str | None = None,
    metadata: dict | None = None,
) -> dict:
    """The signed manifest of a folder whose files are written (module doc)."""
    reserved = {
        "format",
        "version",
        "scorer",
        "bits",
        "splits",
        "failed",
        "codebooks",
        "num_classes",
        "model_fingerprint",
        "database_codes",
        signed_json.DIGEST_KEY,
    }
    if reserved & set(metadata or {}):
        raise ValueError(f"metadata may not set {sorted(reserved & set(metadata))}.")
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "scorer": scorer,
        "bits": int(bits),
        "database_codes": "network",
        "model_fingerprint": model_fingerprint,
        "num_classes": num_classes,
        "splits": {
            split: {
                "num_items": sum(shard["num_items"] for shard in shards),
                "shards": sorted(shards, key=lambda shard: shard["file"]),
            }
            for split, shards in splits.items()
        },
        "codebooks": codebooks,
        "failed": failed,
        **(metadata or {}),
    }
    manifest = signed_json.sign(manifest)
    check_manifest(manifest, MANIFEST)
    return manifest


def _is_count(value, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_entry(entry, fail, pattern=None, counted: bool = True) -> None:
    keys = _SHARD_KEYS if counted else {"file", "sha256"}
    if not isinstance(entry, dict) or entry.keys() != keys:
        fail(f"bad file entry {str(entry)[:80]!r}")
    if not isinstance(entry["file"], str) or (pattern and not pattern.fullmatch(entry["file"])):
        fail(f"bad file name {entry['file']!r}")
    if not isinstance(entry["sha256"], str) or not _SHA256.fullmatch(entry["sha256"]):
        fail(f"{entry['file']}: bad sha256")
    if counted and not _is_count(entry["num_items"]):
        fail(f"{entry['file']}: num_items must be a count")


def check_manifest(manifest, path: str) -> None:
    """Digest and schema of a parsed manifest; CodesFolderError naming `path`."""

    def fail(problem: str):
        raise CodesFolderError(f"{path}: {problem}; re-run the pipeline that wrote it.")

    _check_header(manifest, fail)
    _check_splits(manifest.get("splits"), fail)
    _check_codebooks_and_failed(manifest, fail)


def _check_header(manifest, fail) -> None:
    """Format, version and digest, then the scalar fields."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        fail("not a wsdhash codes folder manifest")
    if manifest.get("version") != VERSION or isinstance(manifest.get("version"), bool):
        fail(f"version {manifest.get('version')!r}; this wsdhash reads version {VERSION}")
    if not signed_json.is_signed(manifest):
        fail("checksum mismatch (the manifest was edited or damaged)")
    if manifest.get("scorer") not in SCORERS:
        fail(f"scorer must be one of {SCORERS}")
    if not _is_count(manifest.get("bits"), 1):
        fail("bits must be a positive integer")
    if manifest.get("database_codes") != "network":
        fail("database_codes must be 'network'")
    if not isinstance(manifest.get("model_fingerprint"), (str, type(None))):
        fail("model_fingerprint must be a string or null")
    classes = manifest.get("num_classes")
    if classes is not None and not _is_count(classes, 1):
        fail("num_classes must be a positive integer or null")


def _check_splits(splits, fail) -> None:
    """Each split's shard list: well-formed entries named after it that add up to its
    num_items; no shard listed twice."""
    if not isinstance(splits, dict) or not splits or set(splits) - set(SPLITS):
        fail(f"splits must name some of {SPLITS}")
    files = []
    for split, part in splits.items():
        if not isinstance(part, dict) or part.keys() != {"num_items", "shards"}:
            fail(f"bad split entry {split!r}")
        if not isinstance(part["shards"], list) or not _is_count(part["num_items"]):
            fail(f"split {split}: bad shard list")
        for entry in part["shards"]:
            _check_entry(entry, fail, _SHARD_FILE)
            if not entry["file"].startswith(f"{split}-"):
                fail(f"{entry['file']} is listed under split {split}")
            files.append(entry["file"])
        if sum(entry["num_items"] for entry in part["shards"]) != part["num_items"]:
            fail(f"split {split}: the shards do not add up to num_items")
    if len(set(files)) != len(files):
        fail("a shard is listed twice")


def _check_codebooks_and_failed(manifest: dict, fail) -> None:
    """The codebooks entry (aqd only) and the failed-items entry."""
    codebooks = manifest.get("codebooks")
    if (codebooks is None) != (manifest["scorer"] == "hamming"):
        fail("aqd codes need codebooks, and only they have them")
    if codebooks is not None:
        _check_entry(codebooks, fail, re.compile(re.escape(CODEBOOKS_FILE)), counted=False)
    failed = manifest.get("failed")
    if (
        not isinstance(failed, dict)
        or failed.keys() != _SHARD_KEYS
        or failed["file"] != FAILED_FILE
    ):
        fail("bad failed entry")
    if not _is_count(failed["num_items"]) or not _SHA256.fullmatch(str(failed["sha256"])):
        fail("bad failed entry")


def read_manifest(folder: str) -> dict:
    """The folder's checked manifest; CodesFolderError (FileNotFoundError if absent)."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{folder} is not a codes folder (no {MANIFEST}); write one with "
            "`python -m wsdhash.pipeline encode`."
        )
    try:
        with open(path, "rb") as f:
            manifest = signed_json.loads(f.read())
    except ValueError as error:
        raise CodesFolderError(f"{path}: not a valid manifest ({error}).") from None
    check_manifest(manifest, path)
    return manifest


def _read_checked(folder: str, entry: dict) -> bytes:
    path = os.path.join(folder, entry["file"])
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise CodesFolderError(f"{path}: cannot be read ({error.strerror or error}).") from None
    if sha256_bytes(data) != entry["sha256"]:
        raise CodesFolderError(
            f"{path}: checksum mismatch (damaged or replaced); re-run the pipeline."
        )
    return data


def read_shard(folder: str, entry: dict, manifest: dict) -> dict[str, np.ndarray]:
    """One shard's arrays, checked against its entry and the manifest."""
    path = os.path.join(folder, entry["file"])
    data = _read_checked(folder, entry)

    def fail(problem: str):
        raise CodesFolderError(f"{path}: {problem}.")

    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError) as error:
        fail(f"not a shard ({error})")
    if set(arrays) - set(_ARRAYS) or not {"ids", "codes"} <= set(arrays):
        fail(f"holds {sorted(arrays)}")
    for name, array in arrays.items():
        kinds, ndim = _ARRAYS[name]
        if array.dtype.kind not in kinds or array.ndim != ndim:
            fail(f"{name} has dtype {array.dtype} and shape {array.shape}")
        if len(array) != entry["num_items"]:
            fail(f"{name} has {len(array)} rows, the manifest says {entry['num_items']}")
    for name in ("codes", "indices", "labels"):
        if name in arrays and arrays[name].dtype != np.uint8:
            fail(f"{name} must be uint8")
    if "features" in arrays and arrays["features"].dtype != np.float32:
        fail("features must be float32")
    if arrays["codes"].shape[1] != -(-manifest["bits"] // 8):
        fail(f"codes are {arrays['codes'].shape[1]} bytes wide; bits={manifest['bits']}")
    if (manifest["scorer"] == "aqd") != ("indices" in arrays):
        fail("aqd codes need indices, and only they have them")
    if manifest["num_classes"] is not None:
        labels = arrays.get("labels")
        if labels is None or labels.shape[1] != manifest["num_classes"]:
            fail(f"labels must have {manifest['num_classes']} columns")
    if len(np.unique(arrays["ids"])) != len(arrays["ids"]):
        fail("an id appears twice")
    return arrays


def iter_shards(
    folder: str, split: str = "database", manifest: dict | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """The arrays of each shard of `split`, one shard in memory at a time."""
    manifest = manifest or read_manifest(folder)
    if split not in manifest["splits"]:
        raise CodesFolderError(
            f"{folder} has no {split} split (it has {sorted(manifest['splits'])})."
        )
    for entry in manifest["splits"][split]["shards"]:
        yield read_shard(folder, entry, manifest)


def read_codebooks(folder: str, manifest: dict) -> np.ndarray | None:
    entry = manifest["codebooks"]
    if entry is None:
        return None
    data = _read_checked(folder, entry)
    try:
        codebooks = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as error:
        raise CodesFolderError(f"{os.path.join(folder, entry['file'])}: {error}.") from None
    if codebooks.dtype != np.float32 or codebooks.ndim != 3 or codebooks.shape[1] != 256:
        raise CodesFolderError(
            f"{os.path.join(folder, entry['file'])}: expected float32 (M, 256, D), got "
            f"{codebooks.dtype} {codebooks.shape}."
        )
    return codebooks


def read_failed(folder: str, manifest: dict) -> list[dict]:
    """The dead letters: one {"split", "id", "path", "reason"} per image that got no
    code."""
    import json

    data = _read_checked(folder, manifest["failed"])
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line]


def _split_from_shards(shards: list[dict], classes: int, code_bytes: int) -> CodesSplit:
    def stack(name):
        parts = [shard[name] for shard in shards if name in shard]
        if not parts:
            return None
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    codes = stack("codes")
    if codes is None:
        codes = np.zeros((0, code_bytes), np.uint8)
    labels = stack("labels")
    return CodesSplit(
        codes=codes,
        labels=labels if labels is not None else np.zeros((len(codes), classes), np.uint8),
        ids=stack("ids"),
        features=stack("features"),
        indices=stack("indices"),
    )


def read_codes_folder(folder: str) -> CodesFile:
    """The whole folder as a `CodesFile` (in memory), for evaluation: it needs labelled
    query and database splits. CodesFolderError otherwise."""
    manifest = read_manifest(folder)
    missing = [split for split in SPLITS if split not in manifest["splits"]]
    if missing or manifest["num_classes"] is None:
        raise CodesFolderError(
            f"{folder}: evaluation needs labelled query and database splits; this folder "
            f"has {sorted(manifest['splits'])}"
            + (", without labels" if manifest["num_classes"] is None else "")
            + " (encode a prepared dataset's list files with `python -m wsdhash.pipeline "
            "encode --dataset_dir=...`)."
        )
    code_bytes = -(-manifest["bits"] // 8)
    splits = {
        split: _split_from_shards(
            list(iter_shards(folder, split, manifest)), manifest["num_classes"], code_bytes
        )
        for split in SPLITS
    }
    contents = CodesFile(
        bits=manifest["bits"],
        query=splits["query"],
        database=splits["database"],
        codebooks=read_codebooks(folder, manifest),
        scorer=manifest["scorer"],
        database_codes=manifest["database_codes"],
        model_fingerprint=manifest["model_fingerprint"],
    )
    if contents.query.ids is not None and contents.query.ids.dtype.kind == "i":
        contents.query.ids = contents.query.ids.astype(str)
    if contents.database.ids is not None and contents.database.ids.dtype.kind == "i":
        contents.database.ids = contents.database.ids.astype(str)
    validate_codes_file(contents, folder)
    return contents


def shard_blocks(shards, field: str, size: int):
    """(codes, ids) blocks of `size` items (0: one per non-empty codes shard) from the
    codes shards (`iter_shards`), keeping no more than one codes shard and one block in
    memory: what an index is built from (`python -m wsdhash.search build --codes=FOLDER`)."""
    codes, ids, held = [], [], 0
    for arrays in shards:
        shard_codes, shard_ids = arrays[field], arrays["ids"]
        del arrays  # features and labels are not needed
        if not size:
            if len(shard_ids):
                yield shard_codes, shard_ids
            del shard_codes, shard_ids
            continue
        start = 0
        while start < len(shard_ids):
            take = min(size - held, len(shard_ids) - start)
            codes.append(shard_codes[start : start + take])
            ids.append(shard_ids[start : start + take])
            held, start = held + take, start + take
            if held == size:
                block = np.concatenate(codes), np.concatenate(ids)
                codes, ids, held = [], [], 0
                yield block
                del block
        del shard_codes, shard_ids
    if held:
        yield np.concatenate(codes), np.concatenate(ids)
