"""An index directory: one or more shards plus a manifest, searched by merging.

    <dir>/index.json        {"format": "wsdhash-index", "version": 1, "kind": ...,
                             "shards": [{"file": "shard-00000.idx", "num_items": n}, ...]}
    <dir>/shard-00000.idx   index_file.py format; holds its items' ids (image paths)

A database larger than memory is built shard by shard (`build_index` takes an
iterator of (codes, ids) blocks) and searched by taking each shard's top-k and merging
them by (distance, global position): for exact kinds the merged result equals one big
index, ties aside (results.py). Global positions number the items in build order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import numpy as np

from wsdhash import atomic_files
from wsdhash.index.binary import BinaryIndex, BinaryIndexParams
from wsdhash.index.index_file import IndexFileError, read_index_file, write_index_file
from wsdhash.index.quantized import QuantizedIndex
from wsdhash.index.results import SearchResult, sort_rows

MANIFEST = "index.json"
VERSION = 1


def _make(kind: str, first_block: np.ndarray, params, codebooks):
    if kind == "aqd":
        if codebooks is None:
            raise ValueError("An aqd index needs the codebooks (a WSDHQ codes file).")
        return QuantizedIndex(codebooks)
    return BinaryIndex(kind, first_block.shape[1], params)


def build_index(
    output_dir: str,
    blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    kind: str,
    params: BinaryIndexParams | None = None,
    codebooks: np.ndarray | None = None,
    metadata: dict | None = None,
) -> dict:
    """Builds one shard per block and writes the manifest last (atomically).

    Args:
        output_dir: the index directory (created).
        blocks: (codes, ids) per shard: packed codes (binary kinds) or codeword indices
            (aqd), and the items' ids (image paths).
        kind: "flat", "ivf", "hnsw", "multihash" or "aqd".
        params: binary index parameters.
        codebooks: (M, K, D) for kind "aqd".
        metadata: extra manifest entries (source codes file, bits, ...).

    Returns:
        The manifest.
    """
    os.makedirs(output_dir, exist_ok=True)
    shards = []
    for number, (codes, ids) in enumerate(blocks):
        ids = np.asarray(ids).astype(str)
        if len(ids) != len(codes):
            raise ValueError(f"shard {number}: {len(codes)} codes but {len(ids)} ids.")
        index = _make(kind, np.asarray(codes), params, codebooks).build(codes)
        header, arrays = index.to_arrays()
        name = f"shard-{number:05d}.idx"
        write_index_file(os.path.join(output_dir, name), {**header, "ids": ids.tolist()}, arrays)
        shards.append({"file": name, "num_items": int(len(codes))})
    if not shards:
        raise ValueError("No database items to index.")
    manifest = {
        "format": "wsdhash-index",
        "version": VERSION,
        "kind": kind,
        "num_items": sum(s["num_items"] for s in shards),
        "shards": shards,
        **(metadata or {}),
    }
    atomic_files.write_json(os.path.join(output_dir, MANIFEST), manifest)
    return manifest


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
        self.kind = self.manifest["kind"]
        self.shards, self.ids, self.offsets = [], [], []
        offset = 0
        for shard in self.manifest["shards"]:
            shard_path = os.path.join(directory, shard["file"])
            header, arrays = read_index_file(shard_path)
            loader = QuantizedIndex if header.get("index") == "quantized" else BinaryIndex
            index = loader.from_arrays(header, arrays)
            if index.num_items != shard["num_items"] or len(header["ids"]) != index.num_items:
                raise IndexFileError(
                    f"{shard_path}: {index.num_items} items, the manifest says "
                    f"{shard['num_items']}."
                )
            self.shards.append(index)
            self.ids.extend(header["ids"])
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
