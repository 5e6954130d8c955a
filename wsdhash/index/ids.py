"""The ids of an index's items: integers or names, by position, stored compactly.

An index answers positions; its ids say which item each one is. Integer ids (a codes
folder's list positions, or positions when the codes carry no ids) stay integers, and
names (image paths) stay strings; an index holds one kind. A shard file stores its
ids (index_file.py) as:

    header "ids": {"type": "int", "first": a}   consecutive integers a, a+1, ...:
                                                no array at all
    header "ids": {"type": "int"}               array "ids": (n,) int64
    header "ids": {"type": "str"}               arrays "id_bytes": the UTF-8 names
                                                one after another (uint8), and
                                                "id_ends": (n,) int64, where each ends

so 10 million consecutive ids cost nothing and names cost their UTF-8 bytes plus 8
bytes each, instead of a JSON list (and a Python string per item once loaded).
`ItemIds` is the whole index's ids: a read-only sequence (`ids[position]`, an array
of positions, `len`, iteration) over the shards' stored forms, decoding on demand.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

ID_TYPES = ("int", "str")
_ENCODING = ("utf-8", "surrogatepass")  # any Python str, lone surrogates included


def id_type(ids: np.ndarray) -> str:
    """The ids' type: "int" for integers, "str" for names; ValueError otherwise."""
    kind = np.asarray(ids).dtype.kind
    if kind in "iu":
        return "int"
    if kind in "USO":
        return "str"
    raise ValueError(f"ids must be integers or strings; got dtype {np.asarray(ids).dtype}.")


def encode_ids(ids) -> tuple[dict, dict[str, np.ndarray]]:
    """A shard's ids as (its header entry, its arrays) (module doc)."""
    ids = np.asarray(ids)
    if id_type(ids) == "int":
        if ids.dtype.kind == "u" and len(ids) and ids.max() > np.iinfo(np.int64).max:
            raise ValueError("integer ids must fit in int64.")
        ids = ids.astype(np.int64, copy=False)
        if len(ids) and int(ids[-1]) - int(ids[0]) == len(ids) - 1 and _consecutive(ids):
            return {"type": "int", "first": int(ids[0])}, {}
        return {"type": "int"}, {"ids": ids}
    encoded = [str(name).encode(*_ENCODING) for name in ids.tolist()]
    ends = np.cumsum([len(name) for name in encoded], dtype=np.int64)
    blob = np.frombuffer(b"".join(encoded), np.uint8)
    return {"type": "str"}, {"id_bytes": blob, "id_ends": ends}


def _consecutive(ids: np.ndarray, block: int = 1 << 20) -> bool:
    for start in range(0, len(ids), block):  # bounded temporaries
        part = ids[start : start + block + 1]
        if not np.array_equal(np.diff(part), np.ones(len(part) - 1, np.int64)):
            return False
    return True


class _Range:
    def __init__(self, first: int, count: int):
        self.first, self.count = first, count

    def get(self, i: int):
        return self.first + i

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self.first + positions.astype(np.int64)


class _Integers:
    def __init__(self, ids: np.ndarray):
        self.ids = ids

    def get(self, i: int):
        return int(self.ids[i])

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self.ids[positions]


class _Names:
    def __init__(self, blob: np.ndarray, ends: np.ndarray):
        self.blob, self.ends = blob, ends

    def get(self, i: int) -> str:
        start = int(self.ends[i - 1]) if i else 0
        return self.blob[start : int(self.ends[i])].tobytes().decode(*_ENCODING)

    def take(self, positions: np.ndarray) -> np.ndarray:
        return np.array([self.get(int(i)) for i in positions], dtype=str)


def decode_ids(entry, arrays: dict[str, np.ndarray], count: int):
    """A shard's stored ids (`encode_ids`'s output) for `count` items; ValueError when
    they do not fit (the caller names the file)."""
    if not isinstance(entry, dict) or entry.get("type") not in ID_TYPES:
        raise ValueError(f"bad ids entry {str(entry)[:80]!r}")
    if entry["type"] == "int" and "first" in entry:
        first = entry["first"]
        if not isinstance(first, int) or isinstance(first, bool):
            raise ValueError("the first id must be an integer")
        return _Range(first, count)
    if entry["type"] == "int":
        ids = arrays.get("ids")
        if ids is None or ids.dtype != np.int64 or ids.shape != (count,):
            raise ValueError(f"the ids do not match the {count} items")
        return _Integers(ids)
    blob, ends = arrays.get("id_bytes"), arrays.get("id_ends")
    if blob is None or ends is None or blob.dtype != np.uint8 or blob.ndim != 1:
        raise ValueError("no id_bytes")
    if ends.dtype != np.int64 or ends.shape != (count,):
        raise ValueError(f"the ids do not match the {count} items")
    if count and (ends[-1] != len(blob) or ends[0] < 0 or np.any(np.diff(ends) < 0)):
        raise ValueError("the id ends do not fit the id bytes")
    return _Names(blob, ends)


class ItemIds(Sequence):
    """The ids of an index's items by position, over its shards' stored ids.

    Args:
        parts: (id type, [(stored ids, count), ...] per shard in position order).
    """

    def __init__(self, kind: str, parts: list):
        self.kind = kind
        self._parts = [part for part, _ in parts]
        counts = np.array([count for _, count in parts], np.int64)
        self._starts = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, position):
        if isinstance(position, slice):
            return self.take(np.arange(len(self))[position])
        if isinstance(position, (np.ndarray, list)):
            return self.take(np.asarray(position))
        position = int(position)
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(f"position {position} of an index of {len(self)} items")
        part = int(np.searchsorted(self._starts, position, side="right")) - 1
        return self._parts[part].get(position - int(self._starts[part]))

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The ids at `positions` (any shape; no -1 padding), as an array."""
        positions = np.asarray(positions, np.int64)
        flat = positions.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"positions outside an index of {len(self)} items")
        found = np.zeros(flat.shape, np.int64 if self.kind == "int" else object)
        shard = np.searchsorted(self._starts, flat, side="right") - 1
        for part in np.unique(shard):
            rows = np.flatnonzero(shard == part)
            found[rows] = self._parts[part].take(flat[rows] - self._starts[part])
        if self.kind == "str":
            found = found.astype(str) if found.size else np.zeros(0, str)
        return found.reshape(positions.shape)

    def __iter__(self) -> Iterator:
        block = 1 << 16
        for start in range(0, len(self), block):
            yield from self.take(np.arange(start, min(start + block, len(self)))).tolist()

    def __array__(self, dtype=None, copy=None):
        del copy
        array = self.take(np.arange(len(self)))
        return array if dtype is None else array.astype(dtype)

    def __repr__(self) -> str:
        return f"ItemIds({self.kind}, {len(self)} items)"
