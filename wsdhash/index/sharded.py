"""An index directory: one or more shards plus a manifest, searched by merging.

    <dir>/index.json        {"format": "wsdhash-index", "version": 2, "kind": ...,
                             "shards": [{"file": "shard-00000.idx", "num_items": n,
                                         "sha256": <the shard file's SHA-256>}, ...]}
    <dir>/shard-00000.idx   index_file.py format; holds its items' ids (image paths)

A database larger than memory is built shard by shard (`build_index` takes an
iterator of (codes, ids) blocks) and searched by taking each shard's top-k and merging
them by (distance, global position): for exact kinds the merged result equals one big
index, ties aside (results.py). Global positions number the items in build order.

A build writes into a temporary folder next to the destination (`.<name>.*.building`)
and renames it into place at the end, so an interrupted (re)build leaves the previous
index whole, never a mix of old and new shards; the manifest's checksums catch a
shard that was swapped or edited afterwards. While building, `<dir>.lock` is held
(wsdhash/file_lock.py; removed when the build ends): a second build of the same index
fails at once.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable

import numpy as np

from wsdhash import atomic_files, file_lock
from wsdhash.index.binary import KINDS as BINARY_KINDS
from wsdhash.index.binary import BinaryIndex, BinaryIndexParams
from wsdhash.index.index_file import IndexFileError, read_index_file, write_index_file
from wsdhash.index.quantized import QuantizedIndex
from wsdhash.index.results import SearchResult, sort_rows

MANIFEST = "index.json"
VERSION = 2
KINDS = (*BINARY_KINDS, "aqd")
_BUILDING = ".building"


def _make(kind: str, first_block: np.ndarray, params, codebooks):
    if kind == "aqd":
        if codebooks is None:
            raise ValueError("An aqd index needs the codebooks (a WSDHQ codes file).")
        return QuantizedIndex(codebooks)
    return BinaryIndex(kind, first_block.shape[1], params)


def _write_shards(directory, blocks, kind, params, codebooks) -> list[dict]:
    shards = []
    for number, (codes, ids) in enumerate(blocks):
        ids = np.asarray(ids).astype(str)
        if len(ids) != len(codes):
            raise ValueError(f"shard {number}: {len(codes)} codes but {len(ids)} ids.")
        index = _make(kind, np.asarray(codes), params, codebooks).build(codes)
        header, arrays = index.to_arrays()
        name = f"shard-{number:05d}.idx"
        digest = write_index_file(
            os.path.join(directory, name), {**header, "ids": ids.tolist()}, arrays
        )
        shards.append({"file": name, "num_items": int(len(codes)), "sha256": digest})
    if not shards:
        raise ValueError("No database items to index.")
    return shards


def _check_destination(output_dir: str) -> None:
    """Refuses to replace a folder that is not an index (or empty): it holds user files."""
    if os.path.lexists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"{output_dir} exists and is not a folder; choose another output.")
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        if not os.path.isfile(os.path.join(output_dir, MANIFEST)):
            raise ValueError(
                f"{output_dir} exists and is not a wsdhash index (no {MANIFEST}); a build "
                "replaces the whole folder, so choose another output or empty it."
            )


def _remove_leftovers(parent: str, name: str) -> None:
    """Folders of builds of this index that were killed (we hold its lock: none is live)."""
    prefix = f".{name}."
    for entry in os.listdir(parent):
        for suffix in (_BUILDING, ".old"):
            middle = entry[len(prefix) : -len(suffix)]
            # mkdtemp's 8 random characters: not the folders of an index "<name>.v2".
            ours = entry.startswith(prefix) and entry.endswith(suffix)
            if ours and len(middle) == 8 and "." not in middle:
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)

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
        blocks: (codes, ids) per shard: packed codes (binary kinds) or codeword indices
            (aqd), and the items' ids (image paths).
        kind: "flat", "ivf", "hnsw", "multihash" or "aqd".
        params: binary index parameters.
        codebooks: (M, K, D) for kind "aqd".
        metadata: extra manifest entries (source codes file, bits, ...).

    Returns:
        The manifest.

    Raises:
        LockedError: another process is building this index.
        ValueError: bad input, or `output_dir` is a folder that is not an index.
    """
    if kind not in KINDS:
        raise ValueError(f"index kind must be one of {KINDS}; got {kind!r}.")
    output_dir = os.path.abspath(output_dir)
    parent, name = os.path.split(output_dir)
    with file_lock.exclusive(output_dir, "index", folder=False):
        _check_destination(output_dir)
        _remove_leftovers(parent, name)
        building = tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=_BUILDING)
        try:
            os.chmod(building, atomic_files.default_dir_mode())
            shards = _write_shards(building, blocks, kind, params, codebooks)
            manifest = {
                "format": "wsdhash-index",
                "version": VERSION,
                "kind": kind,
                "num_items": sum(s["num_items"] for s in shards),
                "shards": shards,
                **(metadata or {}),
            }
            atomic_files.write_json(os.path.join(building, MANIFEST), manifest)
            _replace_folder(building, output_dir)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    return manifest


def _replace_folder(new: str, destination: str) -> None:
    """Moves `new` to `destination`; an old `destination` goes only after `new` is built.

    Between the two renames (microseconds) `destination` is absent: a reader then gets
    "no index.json", never a mix; a build killed there leaves the old index in
    `.<name>.*.old` (removed by the next build)."""
    if not os.path.exists(destination):
        os.rename(new, destination)
        return
    parent, name = os.path.split(destination)
    old = tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".old")
    os.rmdir(old)  # a unique free name for the rename
    os.rename(destination, old)
    os.rename(new, destination)
    shutil.rmtree(old, ignore_errors=True)


def _load_shard(directory: str, manifest_path: str, shard, kind: str):
    """(index, ids) of one manifest entry, checked against it; errors name the file."""
    if not isinstance(shard, dict) or not {"file", "num_items", "sha256"} <= shard.keys():
        raise IndexFileError(f"{manifest_path}: bad shard entry {shard!r}; rebuild the index.")
    shard_path = os.path.join(directory, shard["file"])
    header, arrays = read_index_file(shard_path, expected_sha256=shard["sha256"])
    if header.get("kind") != kind:
        raise IndexFileError(
            f"{shard_path}: a {header.get('kind')!r} index shard, but the manifest says "
            f"{kind!r}; rebuild the index."
        )
    expected_loader = "quantized" if kind == "aqd" else "binary"
    if header.get("index") != expected_loader:
        raise IndexFileError(
            f"{shard_path}: index type {header.get('index')!r}, expected "
            f"{expected_loader!r} for kind {kind!r}; rebuild the index."
        )
    loader = QuantizedIndex if kind == "aqd" else BinaryIndex
    try:
        index = loader.from_arrays(header, arrays)
    except (ValueError, KeyError, TypeError) as error:
        raise IndexFileError(f"{shard_path}: {error}; rebuild the index.") from None
    ids = header.get("ids")
    if not isinstance(ids, list) or len(ids) != index.num_items:
        raise IndexFileError(f"{shard_path}: the ids do not match the {index.num_items} items.")
    if index.num_items != shard["num_items"]:
        raise IndexFileError(
            f"{shard_path}: {index.num_items} items, the manifest says {shard['num_items']}."
        )
    return index, ids


class ShardedIndex:
    """A loaded index directory (module doc)."""

    def __init__(self, directory: str):
        path = os.path.join(directory, MANIFEST)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{directory} is not a wsdhash index (no {MANIFEST}); build one with "
                "`python -m wsdhash.search build`."
            )
        with open(path, encoding="utf-8") as f:
            try:
                self.manifest = json.load(f)
            except json.JSONDecodeError as error:
                raise IndexFileError(f"{path}: not valid JSON ({error}).") from None
        if self.manifest.get("format") != "wsdhash-index":
            raise IndexFileError(f"{path}: not a wsdhash index manifest.")
        if self.manifest.get("version") != VERSION:
            raise IndexFileError(
                f"{path}: index version {self.manifest.get('version')}; this wsdhash reads "
                f"version {VERSION}. Rebuild the index."
            )
        self.kind = self.manifest.get("kind")
        if self.kind not in KINDS:
            raise IndexFileError(
                f"{path}: unknown index kind {self.kind!r} (expected one of {KINDS}); "
                "rebuild the index."
            )
        shards = self.manifest.get("shards")
        if not isinstance(shards, list) or not shards:
            raise IndexFileError(f"{path}: the manifest lists no shards; rebuild the index.")
        self.shards, self.ids, self.offsets = [], [], []
        offset = 0
        for shard in shards:
            index, ids = _load_shard(directory, path, shard, self.kind)
            self.shards.append(index)
            self.ids.extend(ids)
            self.offsets.append(offset)
            offset += index.num_items
        self.ids = np.asarray(self.ids)

    @property
    def num_items(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """Every shard's top-k, merged by (distance, global position)."""
        parts = [shard.search(queries, k) for shard in self.shards]
        distances = np.concatenate([p.distances for p in parts], axis=1)
        positions = np.concatenate(
            [p.positions + o for p, o in zip(parts, self.offsets, strict=True)], axis=1
        )
        return sort_rows(distances, positions, min(k, self.num_items))
