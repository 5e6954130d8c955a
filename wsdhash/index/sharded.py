"""An index directory: one or more shards plus a manifest, searched by merging.

    <dir>/index.json        {"format": "wsdhash-index", "version": 4, "kind": ...,
                             "num_items": N, "ids": "int" | "str",
                             "shards": [{"file": "shard-00000.idx", "num_items": n,
                                         "sha256": <the shard file's SHA-256>}, ...],
                             <metadata: "images", "codes", "model_fingerprint", ...>,
                             "manifest_sha256": <SHA-256 of all the above>}
    <dir>/shard-00000.idx   index_file.py format; holds its items' ids (ids.py:
                            integers, or names such as image paths)

The manifest is checked whole on open (`check_manifest`): its own digest
(`manifest_digest`: every key but `manifest_sha256`, canonical JSON), so an edit, an
injected or removed key (labels, `model_fingerprint`, `database_codes`) or a damaged
byte is refused; then its schema (types and required keys, no key twice), the shards
(each file once, item counts adding up to `num_items`). Manifests of other versions
(2: no digest; 3: ids in each shard's JSON header) are refused with a "rebuild"
error. Errors are one line naming the manifest.

A database larger than memory is built shard by shard (`build_index` takes an
iterator of (codes, ids) blocks) and searched by taking each shard's top-k and merging
them by (distance, global position): for exact kinds the merged result equals one big
index, ties aside (results.py). Global positions number the items in build order.

Memory: a build holds one block and the shard made of it at a time (a flat shard's
codes are written from FAISS's own memory, index_file.py); its read-back check opens
one shard at a time. A loaded index holds each shard's codes once (a flat index's shard files
are read straight into one FAISS index's memory, an aqd index's into one array of
codeword indices, one after another, so a query is one search with no merge) and its ids in their stored form (ids.py: nothing for consecutive
integers), so loading costs about the codes' size.

A build checks its parameters before any work (binary.PARAM_BOUNDS), writes into a
temporary folder next to the destination (`.<name>.*.building`), opens the new index
from there and queries every shard once with one of its own items, and only then
renames it into place, so an interrupted or failed (re)build leaves the previous index
whole, never a mix of old and new shards nor an index that cannot be read; the
manifest's checksums catch a shard that was swapped or edited afterwards. While building, `<dir>.lock` is held
(wsdhash/file_lock.py; removed when the build ends): a second build of the same index
fails at once.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable

import numpy as np

from wsdhash import atomic_files, file_lock, signed_json
from wsdhash.index.binary import BinaryIndexParams
from wsdhash.index.ids import ID_TYPES, ItemIds, decode_ids, encode_ids, id_type
from wsdhash.index.index_file import IndexFileError, read_index_file, write_index_file
from wsdhash.index.kinds import INDEX_KINDS, KINDS
from wsdhash.index.results import SearchResult, sort_rows

MANIFEST = "index.json"
VERSION = 4
DIGEST_KEY = signed_json.DIGEST_KEY
_SHARD_KEYS = {"file", "num_items", "sha256"}
_SHARD_FILE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*\.idx")  # a name in the folder
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Optional metadata a build records, and the types the readers rely on; other keys
# are kept (the digest covers them) but read by nobody.
_METADATA_TYPES = {
    "images": (str,),
    "model": (str,),
    "codes": (str,),
    "split": (str,),
    "model_fingerprint": (str, type(None)),
    "database_codes": (str,),
    "labels": (dict, list),
}
_DATABASE_CODES = ("network", "learned")


manifest_digest = signed_json.digest
sign_manifest = signed_json.sign


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def read_manifest(path: str) -> dict:
    """The manifest at `path`, checked (`check_manifest`); IndexFileError naming it."""
    try:
        with open(path, "rb") as f:
            manifest = signed_json.loads(f.read())
    except ValueError as error:
        raise IndexFileError(
            f"{path}: not a valid manifest ({error}); rebuild the index."
        ) from None
    check_manifest(manifest, path)
    return manifest


def check_manifest(manifest, path: str) -> None:
    """Digest, schema and shard list of a parsed manifest (module doc)."""

    def fail(problem: str):
        raise IndexFileError(f"{path}: {problem}; rebuild the index.")

    _check_header(manifest, path, fail)
    _check_shards(manifest, fail)
    _check_metadata(manifest, fail)


def _check_header(manifest, path: str, fail) -> None:
    """Format, version, digest, kind and item count."""
    if not isinstance(manifest, dict) or manifest.get("format") != "wsdhash-index":
        fail("not a wsdhash index manifest")
    version = manifest.get("version")
    if version != VERSION or isinstance(version, bool):
        raise IndexFileError(
            f"{path}: index version {version!r}; this wsdhash reads version {VERSION} "
            "(whose manifest carries its own checksum). Rebuild the index with "
            "`python -m wsdhash.search build`."
        )
    digest = manifest.get(DIGEST_KEY)
    if not isinstance(digest, str):
        fail(f"no {DIGEST_KEY!r}")
    if digest != manifest_digest(manifest):
        fail("checksum mismatch (the manifest was edited or damaged)")
    kind = manifest.get("kind")
    if kind not in KINDS:
        fail(f"unknown index kind {kind!r} (expected one of {KINDS})")
    if not _is_count(manifest.get("num_items")):
        fail(f"num_items must be a positive integer; got {manifest.get('num_items')!r}")


def _check_shard_entry(shard, fail) -> None:
    if not isinstance(shard, dict) or shard.keys() != _SHARD_KEYS:
        fail(f"bad shard entry {str(shard)[:80]!r}")
    if not isinstance(shard["file"], str) or not _SHARD_FILE.fullmatch(shard["file"]):
        fail(f"bad shard file name {shard['file']!r}")
    if not _is_count(shard["num_items"]):
        fail(f"shard {shard['file']}: num_items must be a positive integer")
    if not isinstance(shard["sha256"], str) or not _SHA256.fullmatch(shard["sha256"]):
        fail(f"shard {shard['file']}: bad sha256 {shard['sha256']!r}")


def _check_shards(manifest: dict, fail) -> None:
    """Each shard entry, none listed twice, their items adding up to num_items."""
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        fail("the manifest lists no shards")
    for shard in shards:
        _check_shard_entry(shard, fail)
    for key in ("file", "sha256"):
        values = [shard[key] for shard in shards]
        if len(set(values)) != len(values):
            fail(f"a shard is listed twice (the same {key})")
    total = sum(shard["num_items"] for shard in shards)
    if total != manifest["num_items"]:
        fail(f"the shards hold {total} items, num_items says {manifest['num_items']}")


def _check_metadata(manifest: dict, fail) -> None:
    """The optional metadata's types and values."""
    for key, types in _METADATA_TYPES.items():
        if key in manifest and not isinstance(manifest[key], types):
            fail(f"{key} has type {type(manifest[key]).__name__}")
    if manifest.get("database_codes", "network") not in _DATABASE_CODES:
        fail(f"database_codes must be one of {_DATABASE_CODES}")
    if manifest.get("ids") not in ID_TYPES:
        fail(f"ids must be one of {ID_TYPES}; got {manifest.get('ids')!r}")
    if manifest.get("split", "database") not in ("query", "database"):
        fail(f"split must be query or database; got {manifest['split']!r}")


def _write_shards(directory, blocks, kind, params, codebooks) -> tuple[list[dict], list, str]:
    """The manifest's shard entries, a probe per shard (the query its first item
    answers: its codes; for aqd its reconstruction) and the ids' type. One block and
    its shard are in memory at a time."""
    index_kind = INDEX_KINDS.get(kind)
    shards, probes, types = [], [], set()
    # Not enumerate(): it keeps its last result (and so the last block) alive while
    # the next block is read.
    for block in blocks:
        number = len(shards)
        codes, ids = block
        del block
        if len(ids) != len(codes):
            raise ValueError(f"shard {number}: {len(codes)} codes but {len(ids)} ids.")
        if not len(ids):
            raise ValueError(f"shard {number}: no items.")
        types.add(id_type(ids))
        if len(types) > 1:
            raise ValueError(f"shard {number}: integer and string ids mixed in one index.")
        index = index_kind.create_shard(np.asarray(codes), params, codebooks).build(codes)
        probes.append(index.probe(codes))
        del codes  # the shard holds what it needs
        ids_entry, id_arrays = encode_ids(ids)
        del ids
        header, arrays = index.to_arrays()
        name = f"shard-{number:05d}.idx"
        digest = write_index_file(
            os.path.join(directory, name), {**header, "ids": ids_entry}, {**arrays, **id_arrays}
        )
        shards.append({"file": name, "num_items": index.num_items, "sha256": digest})
        del index, arrays, id_arrays  # before the next block is read
    if not shards:
        raise ValueError("No database items to index.")
    return shards, probes, types.pop()


def _check_built(directory: str, probes: list) -> None:
    """Opens the index just built, as a reader will, one shard at a time, and queries
    each with one of its own items: a build FAISS accepted but cannot read or search
    back is an error before it replaces anything."""
    try:
        manifest = read_manifest(os.path.join(directory, MANIFEST))
        for entry, probe in zip(manifest["shards"], probes, strict=True):
            shard, _ = _load_shard(directory, entry, manifest["kind"])
            result = shard.search(probe, 1)
            position = int(result.positions[0, 0]) if result.positions.size else -1
            if not 0 <= position < shard.num_items:
                raise IndexFileError(f"a query of one of its own items found nothing ({position})")
            del shard
    except (IndexFileError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"The new index cannot be read or searched back ({error}); nothing was replaced."
        ) from None


def _check_destination(output_dir: str) -> None:
    """Refuses to replace a folder that is not an index (or empty): it holds user files."""
    if os.path.lexists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"{output_dir} exists and is not a folder; choose another output.")
    holds_files = os.path.isdir(output_dir) and os.listdir(output_dir)
    if holds_files and not os.path.isfile(os.path.join(output_dir, MANIFEST)):
        raise ValueError(
            f"{output_dir} exists and is not a wsdhash index (no {MANIFEST}); a build "
            "replaces the whole folder, so choose another output or empty it."
        )


def build_index(
    output_dir: str,
    blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    kind: str,
    params: BinaryIndexParams | None = None,
    codebooks: np.ndarray | None = None,
    metadata: dict | None = None,
) -> dict:
    """Builds one shard per block into a temporary folder, then renames it into place.

    Args:
        output_dir: the index directory (created, or replaced when it holds an index).
        blocks: (codes, ids) per shard, read one at a time: packed codes (binary kinds)
            or codeword indices (aqd), and the items' ids: integers, or names such as
            image paths (ids.py), one type in an index.
        kind: an `INDEX_KINDS` name: "flat", "ivf", "hnsw", "multihash" or "aqd".
        params: binary index parameters.
        codebooks: (M, K, D), for a kind that `needs_codebooks` ("aqd").
        metadata: extra manifest entries (source codes file, bits, ...).

    Returns:
        The manifest.

    Raises:
        LockedError: another process is building this index.
        ValueError: bad input, or `output_dir` is a folder that is not an index.
    """
    if kind not in KINDS:
        raise ValueError(f"index kind must be one of {KINDS}; got {kind!r}.")
    INDEX_KINDS.get(kind).check_params(params)  # before the lock and any work
    output_dir = os.path.abspath(output_dir)
    with file_lock.exclusive(output_dir, "index", folder=False):
        _check_destination(output_dir)
        atomic_files.remove_leftover_folders(output_dir)
        building = atomic_files.building_folder(output_dir)
        try:
            shards, probes, ids = _write_shards(building, blocks, kind, params, codebooks)
            reserved = {"format", "version", "kind", "num_items", "ids", "shards", DIGEST_KEY}
            if reserved & set(metadata or {}):
                raise ValueError(f"metadata may not set {sorted(reserved & set(metadata))}.")
            manifest = sign_manifest(
                {
                    "format": "wsdhash-index",
                    "version": VERSION,
                    "kind": kind,
                    "num_items": sum(s["num_items"] for s in shards),
                    "ids": ids,
                    "shards": shards,
                    **(metadata or {}),
                }
            )
            check_manifest(manifest, os.path.join(output_dir, MANIFEST))
            atomic_files.write_json(os.path.join(building, MANIFEST), manifest)
            _check_built(building, probes)
            atomic_files.replace_folder(building, output_dir)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    return manifest


def _load_shard(directory: str, shard: dict, kind: str, reading=None):
    """(index, stored ids) of one (checked) manifest entry, checked against it; errors
    name the file. `reading`: the shard class's `reading()` (default: a new one)."""
    shard_path = os.path.join(directory, shard["file"])
    loader = INDEX_KINDS.get(kind).shard_class
    reading = reading or loader.reading()
    header, arrays = read_index_file(
        shard_path,
        expected_sha256=shard["sha256"],
        allocate=reading.allocate if reading is not None else None,
    )
    if header.get("kind") != kind:
        raise IndexFileError(
            f"{shard_path}: a {header.get('kind')!r} index shard, but the manifest says "
            f"{kind!r}; rebuild the index."
        )
    if header.get("index") != loader.HEADER:
        raise IndexFileError(
            f"{shard_path}: index type {header.get('index')!r}, expected "
            f"{loader.HEADER!r} for kind {kind!r}; rebuild the index."
        )
    try:
        index = loader.from_arrays(header, arrays, reading)
        shared = _shares_index(reading, index)
        count = reading.rows if shared else index.num_items
        ids = decode_ids(header.get("ids"), arrays, count)
    except (ValueError, KeyError, TypeError) as error:
        raise IndexFileError(f"{shard_path}: {error}; rebuild the index.") from None
    if count != shard["num_items"]:
        raise IndexFileError(
            f"{shard_path}: {count} items, the manifest says {shard['num_items']}."
        )
    return index, ids


def _shares_index(reading, index) -> bool:
    """Whether `index` is the one a combining `reading` fills (binary.FlatReading,
    quantized.QuantizedReading)."""
    return reading is not None and reading.shares(index)


class ShardedIndex:
    """A loaded index directory (module doc).

    Attributes:
        manifest: the checked index.json.
        kind: its `INDEX_KINDS` name.
        shards: the loaded shards, in position order: one per shard file, except for
            flat and aqd indexes, whose shard files load into one (one search).
        offsets: each loaded shard's first global position.
        ids: the items' ids by global position (`ids.ItemIds`: integers or names).
    """

    def __init__(self, directory: str):
        path = os.path.join(directory, MANIFEST)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{directory} is not a wsdhash index (no {MANIFEST}); build one with "
                "`python -m wsdhash.search build`."
            )
        self.manifest = read_manifest(path)
        self.kind = self.manifest["kind"]
        self.shards, self.offsets, parts, shared = [], [], [], []
        # Flat and aqd shard files are read into one index (binary.FlatReading,
        # quantized.QuantizedReading): one search, no merge.
        reading = INDEX_KINDS.get(self.kind).shard_class.reading(self.manifest["num_items"])
        offset = 0
        for shard in self.manifest["shards"]:
            index, ids = _load_shard(directory, shard, self.kind, reading)
            parts.append((ids, shard["num_items"]))
            shared.append(_shares_index(reading, index))
            if not shared[-1]:
                self.shards.append(index)
                self.offsets.append(offset)
            offset += shard["num_items"]
        if any(shared):
            if not all(shared) or index.num_items != offset:
                raise IndexFileError(f"{path}: the shards do not fit together; rebuild the index.")
            self.shards, self.offsets = [index], [0]
        self.ids = ItemIds(self.manifest["ids"], parts)

    @property
    def num_items(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """Every shard's top-k, merged by (distance, global position)."""
        parts = [shard.search(queries, k) for shard in self.shards]
        if len(parts) == 1:
            return parts[0]  # sorted by the shard, positions global already
        distances = np.concatenate([p.distances for p in parts], axis=1)
        shifted = [
            np.where(p.positions < 0, -1, p.positions + o)  # padding stays -1
            for p, o in zip(parts, self.offsets, strict=True)
        ]
        positions = np.concatenate(shifted, axis=1)
        return sort_rows(distances, positions, min(k, self.num_items))
