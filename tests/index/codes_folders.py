"""Writes codes folders (wsdhash/eval/codes_folder.py) for tests, without Beam."""

from __future__ import annotations

import os

import numpy as np

from wsdhash import atomic_files
from wsdhash.eval import codes_folder


def write_codes_folder(
    folder: str,
    splits: dict[str, list[dict[str, np.ndarray]]],
    *,
    scorer: str = "hamming",
    bits: int,
    codebooks: np.ndarray | None = None,
    num_classes: int | None = None,
    model_fingerprint: str | None = None,
) -> dict:
    """A folder with one shard per arrays dict of each split; its manifest."""
    os.makedirs(folder)
    entries = {}
    for split, shards in splits.items():
        entries[split] = []
        for number, arrays in enumerate(shards):
            name = codes_folder.shard_name(split, number, len(shards))
            entry = codes_folder.write_file(folder, name, codes_folder.shard_bytes(arrays))
            entries[split].append({**entry, "num_items": len(arrays["ids"])})
    failed = {**codes_folder.write_file(folder, codes_folder.FAILED_FILE, b""), "num_items": 0}
    books = None
    if codebooks is not None:
        data = codes_folder.codebooks_bytes(codebooks)
        books = codes_folder.write_file(folder, codes_folder.CODEBOOKS_FILE, data)
    manifest = codes_folder.make_manifest(
        scorer=scorer,
        bits=bits,
        splits=entries,
        failed=failed,
        codebooks=books,
        num_classes=num_classes,
        model_fingerprint=model_fingerprint,
    )
    atomic_files.write_json(os.path.join(folder, codes_folder.MANIFEST), manifest)
    return manifest


def split_rows(arrays: dict[str, np.ndarray], bounds: list[int]) -> list[dict[str, np.ndarray]]:
    """`arrays` cut into shards at `bounds` (rows), each sorted by id as a shard is."""
    shards = []
    for start, stop in zip([0, *bounds], [*bounds, len(arrays["ids"])]):
        part = {name: value[start:stop] for name, value in arrays.items()}
        order = np.argsort(part["ids"], kind="stable")
        shards.append({name: value[order] for name, value in part.items()})
    return shards
