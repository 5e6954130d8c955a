"""FAISS binary indexes over packed hash codes.

Kinds (FAISS names): `flat` (IndexBinaryFlat, exact), `ivf` (IndexBinaryIVF: k-means
cells over Hamming space, `nlist` cells, `nprobe` searched), `hnsw`
(IndexBinaryHNSW, graph with `hnsw_m` links, `ef_search`), `multihash`
(IndexBinaryMultiHash: `nhash` tables of `hash_bits` bits, `nflip` flips).

Codes are wsdhash's packed layout (numpy.packbits, most significant bit first), which
is FAISS's binary layout; a K-bit code with K not a multiple of 8 carries zero padding
bits on both sides, so distances are unchanged with d = 8 * ceil(K / 8).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from wsdhash.index.results import SearchResult, sort_rows

KINDS = ("flat", "ivf", "hnsw", "multihash")

# The bounds of every parameter, per kind: (lowest, highest), checked before any work
# (`BinaryIndexParams.check`). FAISS aborts the process or writes an unreadable index
# outside them: HNSW with M < 2 (M = 0 aborts, M = 1 crashes), a multi-hash index with
# no table. The highest values bound the memory and the search work.
PARAM_BOUNDS: dict[str, dict[str, tuple[int, int]]] = {
    "flat": {},
    "ivf": {"nlist": (0, 1 << 20), "nprobe": (1, 1 << 20)},  # nlist 0: about 4 sqrt(N)
    "hnsw": {"hnsw_m": (2, 256), "ef_search": (1, 1 << 16)},
    "multihash": {"nhash": (1, 64), "hash_bits": (1, 64), "nflip": (0, 8)},
}


def _faiss():
    try:
        import faiss  # pylint: disable=g-import-not-at-top
    except ImportError:
        raise ImportError("wsdhash's search indexes need FAISS: pip install faiss-cpu") from None
    return faiss


class IndexParamError(ValueError):
    """A parameter outside its bounds; `name` is the parameter (and the search flag)."""

    def __init__(self, name: str, value, problem: str):
        self.name, self.value, self.problem = name, value, problem
        super().__init__(f"{name}={value!r}: {problem}")


@dataclasses.dataclass
class BinaryIndexParams:
    """Build and search parameters (FAISS's names; `python -m wsdhash.search`'s flags)."""

    nlist: int = 0  # ivf: 0 = about 4 * sqrt(N)
    nprobe: int = 16
    hnsw_m: int = 32
    ef_search: int = 64
    nhash: int = 4
    hash_bits: int = 16
    nflip: int = 2

    def check(self, kind: str, num_bytes: int | None = None, num_items: int | None = None):
        """Raises IndexParamError for a parameter of `kind` outside PARAM_BOUNDS, or one
        that does not fit the codes (`num_bytes` wide) or the items (`num_items`)."""
        if kind not in PARAM_BOUNDS:
            raise ValueError(f"binary index kind must be one of {KINDS}; got {kind!r}.")
        for name, (low, high) in PARAM_BOUNDS[kind].items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise IndexParamError(name, value, f"{kind} needs an integer.")
            if not low <= value <= high:
                raise IndexParamError(name, value, f"{kind} needs {low} <= {name} <= {high}.")
        if kind == "multihash":
            if self.nflip > self.hash_bits:
                raise IndexParamError(
                    "nflip", self.nflip, f"at most hash_bits={self.hash_bits} bits can flip."
                )
            if num_bytes is not None and self.nhash * self.hash_bits > 8 * num_bytes:
                raise IndexParamError(
                    "nhash",
                    self.nhash,
                    f"nhash * hash_bits = {self.nhash * self.hash_bits} exceeds the "
                    f"{8 * num_bytes} code bits.",
                )
        if kind == "ivf" and num_items is not None and self.nlist > num_items:
            raise IndexParamError(
                "nlist", self.nlist, f"ivf needs at most one cell per item ({num_items} items)."
            )


class BinaryIndex:
    """A FAISS binary index over (N, B) uint8 packed codes.

    Args:
        kind: one of KINDS.
        num_bytes: B; FAISS's dimension is 8 * B bits.
        params: build and search parameters.
    """

    HEADER = "binary"  # the shard header's "index" (index_file.py)

    def __init__(self, kind: str, num_bytes: int, params: BinaryIndexParams | None = None):
        if kind not in KINDS:
            raise ValueError(f"binary index kind must be one of {KINDS}; got {kind!r}.")
        self.kind = kind
        self.num_bytes = int(num_bytes)
        self.params = params or BinaryIndexParams()
        self.index = None

    @classmethod
    def create(cls, kind: str, codes: np.ndarray, params, codebooks=None) -> BinaryIndex:
        """An empty `kind` index for (N, B) packed `codes` (codebooks: unused)."""
        del codebooks
        return cls(kind, np.asarray(codes).shape[1], params)

    @staticmethod
    def check_params(kind: str, params, num_bytes=None, num_items=None) -> None:
        """`BinaryIndexParams.check` (the defaults when `params` is None)."""
        (params or BinaryIndexParams()).check(kind, num_bytes, num_items)

    @property
    def num_items(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def _check(self, codes: np.ndarray, what: str) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != self.num_bytes:
            raise ValueError(
                f"{what} must be (N, {self.num_bytes}) uint8 packed codes; got {codes.dtype} "
                f"{codes.shape}."
            )
        return np.ascontiguousarray(codes)

    def build(self, codes: np.ndarray) -> BinaryIndex:
        """Trains (ivf) and adds the database codes."""
        faiss = _faiss()
        codes = self._check(codes, "database codes")
        if not len(codes):
            raise ValueError("No database codes to index.")
        self.params.check(self.kind, self.num_bytes, len(codes))  # before FAISS sees them
        bits, p = 8 * self.num_bytes, self.params
        if self.kind == "flat":
            index = faiss.IndexBinaryFlat(bits)
        elif self.kind == "ivf":
            nlist = p.nlist or max(1, min(len(codes) // 39, int(4 * np.sqrt(len(codes)))))
            index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, nlist)
            index.train(codes)
        elif self.kind == "hnsw":
            index = faiss.IndexBinaryHNSW(bits, p.hnsw_m)
        else:
            index = faiss.IndexBinaryMultiHash(bits, p.nhash, p.hash_bits)
        index.add(codes)
        self.index = index
        self._apply_search_params()
        return self

    def _apply_search_params(self) -> None:
        p = self.params
        if self.kind == "ivf":
            self.index.nprobe = p.nprobe
        elif self.kind == "hnsw":
            self.index.hnsw.efSearch = p.ef_search
        elif self.kind == "multihash":
            self.index.nflip = p.nflip

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """Top-k by Hamming distance, ties in ascending position (results.py)."""
        if self.index is None:
            raise ValueError("The index is empty; build() it first.")
        queries = self._check(queries, "query codes")
        k = int(min(k, self.num_items))
        distances, positions = self.index.search(queries, k)
        return sort_rows(distances.astype(np.int32), positions, k)

    @staticmethod
    def probe(codes: np.ndarray) -> np.ndarray:
        """The query its first item answers: that item's codes (of the `build` input; a
        copy, which does not keep the input alive)."""
        return np.array(np.asarray(codes)[:1], order="C")

    def stored_codes(self, position: int) -> np.ndarray | None:
        """An item's packed codes where FAISS keeps them readable (flat), else None."""
        if self.kind != "flat":
            return None
        return np.asarray(self.index.reconstruct(position), np.uint8)

    # --------------------------------------------------------------- storage
    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The shard's header and arrays: a flat index's codes as they lie in FAISS's
        memory (no copy; storage "codes"), other kinds FAISS's serialization."""
        faiss = _faiss()
        header = {
            "index": self.HEADER,
            "kind": self.kind,
            "num_bytes": self.num_bytes,
            "params": dataclasses.asdict(self.params),
        }
        if self.kind == "flat":
            return {**header, "storage": "codes"}, {"codes": _flat_codes(self.index)}
        return {**header, "storage": "faiss"}, {"faiss": faiss.serialize_index_binary(self.index)}

    @staticmethod
    def reading(total: int | None = None) -> FlatReading:
        """Where `read_index_file` puts a flat shard's codes (`FlatReading`); with
        `total`, the codes of every shard file of an index, one after another."""
        return FlatReading(total)

    @classmethod
    def from_arrays(
        cls, header: dict, arrays: dict[str, np.ndarray], reading: FlatReading | None = None
    ) -> BinaryIndex:
        """The index a `to_arrays` header and arrays describe; `reading`: the
        `FlatReading` the arrays were read with, whose index holds the codes already.

        Raises:
            ValueError: an unknown kind or parameters out of bounds (the caller names
                the file).
            TypeError: a FAISS index of another kind than the header says.
        """
        kind = header.get("kind")
        if kind not in KINDS:
            raise ValueError(f"unknown binary index kind {kind!r} (expected one of {KINDS})")
        try:
            index = cls(kind, header["num_bytes"], BinaryIndexParams(**header["params"]))
            storage = header["storage"]
            data = arrays["codes" if storage == "codes" else "faiss"]
        except (KeyError, TypeError) as error:
            raise ValueError(f"incomplete binary index header ({error!r})") from None
        index.params.check(kind, index.num_bytes)
        if storage == "codes":
            index.index = _flat_from_codes(data, kind, index.num_bytes, reading)
        elif storage == "faiss":
            index.index = _deserialized(data, kind)
        else:
            raise ValueError(f"unknown storage {storage!r}")
        if index.index.d != 8 * index.num_bytes:
            raise ValueError(
                f"the FAISS index has {index.index.d} bits, the header says {8 * index.num_bytes}"
            )
        index._apply_search_params()
        return index


def _flat_codes(index) -> np.ndarray:
    """(N, B) view of an IndexBinaryFlat's codes in FAISS's own memory (no copy)."""
    faiss = _faiss()
    count, width = int(index.ntotal), int(index.code_size)
    if not count:
        return np.zeros((0, width), np.uint8)
    return faiss.rev_swig_ptr(index.xb.data(), count * width).reshape(count, width)


class FlatReading:
    """Reads flat shards' codes straight into an IndexBinaryFlat's memory, so a loaded
    index holds its codes once (index_file.read_index_file's `allocate`).

    Args:
        total: None: each shard read gets a new index of its own rows; else the rows of
            all the shards read with this, one after another, in one index of `total`
            rows (searched by one FAISS call, as fast as FAISS's own index).

    Attributes:
        index: the FAISS index the last shard's codes went into (None: not read here).
        rows: the rows of the last shard read into it.
    """

    def __init__(self, total: int | None = None):
        self.total, self.index, self.rows, self.filled = total, None, 0, 0

    def allocate(self, header: dict, entry: dict) -> np.ndarray | None:
        if entry.get("name") != "codes":
            return None  # the ids: new arrays
        shape = entry.get("shape")
        fits = (
            header.get("kind") == "flat"
            and header.get("storage") == "codes"
            and entry.get("dtype") == "|u1"
            and isinstance(shape, list)
            and len(shape) == 2
            and all(isinstance(n, int) and n >= 1 for n in shape)
        )
        if not fits:
            self.rows = 0
            return None  # read into a new array (and checked by from_arrays)
        count, width = shape
        if self.total is None or self.index is None:
            index = _faiss().IndexBinaryFlat(8 * width)
            rows = count if self.total is None else max(self.total, count)
            index.xb.resize(rows * width)
            index.ntotal = rows
            self.index, self.filled = index, 0
        self.rows = count
        start, self.filled = self.filled, self.filled + count
        # A shard of another width or beyond `total` gets a view of the wrong shape,
        # which the reader refuses.
        return _flat_codes(self.index)[start : start + count]

    def shares(self, index) -> bool:
        """Whether `index` wraps the one FAISS index this reading fills."""
        return self.total is not None and self.index is not None and index.index is self.index


def _flat_from_codes(codes: np.ndarray, kind: str, num_bytes: int, reading):
    if kind != "flat":
        raise ValueError(f"a {kind} index stores FAISS's serialization, not codes")
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != num_bytes:
        raise ValueError(f"the codes are {codes.dtype} {codes.shape}, not (N, {num_bytes})")
    if reading is not None and reading.index is not None and reading.rows:
        return reading.index
    index = _faiss().IndexBinaryFlat(8 * num_bytes)
    index.add(np.ascontiguousarray(codes))
    return index


def _deserialized(data: np.ndarray, kind: str):
    faiss = _faiss()
    try:
        index = faiss.deserialize_index_binary(np.asarray(data, np.uint8))
    except RuntimeError as error:
        raise ValueError(f"the FAISS index cannot be read ({error})") from None
    expected = {
        "flat": faiss.IndexBinaryFlat,
        "ivf": faiss.IndexBinaryIVF,
        "hnsw": faiss.IndexBinaryHNSW,
        "multihash": faiss.IndexBinaryMultiHash,
    }[kind]
    if not isinstance(index, expected):
        raise TypeError(
            f"the header says kind {kind!r} but the FAISS index is a {type(index).__name__}"
        )
    return index
