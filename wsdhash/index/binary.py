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


def _faiss():
    try:
        import faiss  # pylint: disable=g-import-not-at-top
    except ImportError:
        raise ImportError("wsdhash's search indexes need FAISS: pip install faiss-cpu") from None
    return faiss


@dataclasses.dataclass
class BinaryIndexParams:
    """Build and search parameters (FAISS's names)."""

    nlist: int = 0  # ivf: 0 = about 4 * sqrt(N)
    nprobe: int = 16
    hnsw_m: int = 32
    ef_search: int = 64
    nhash: int = 4
    hash_bits: int = 16
    nflip: int = 2


class BinaryIndex:
    """A FAISS binary index over (N, B) uint8 packed codes.

    Args:
        kind: one of KINDS.
        num_bytes: B; FAISS's dimension is 8 * B bits.
        params: build and search parameters.
    """

    def __init__(self, kind: str, num_bytes: int, params: BinaryIndexParams | None = None):
        if kind not in KINDS:
            raise ValueError(f"binary index kind must be one of {KINDS}; got {kind!r}.")
        self.kind = kind
        self.num_bytes = int(num_bytes)
        self.params = params or BinaryIndexParams()
        self.index = None

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
            if p.nhash * p.hash_bits > bits:
                raise ValueError(
                    f"multihash: nhash * hash_bits = {p.nhash * p.hash_bits} exceeds the "
                    f"{bits} code bits."
                )
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

    # --------------------------------------------------------------- storage
    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        faiss = _faiss()
        header = {
            "index": "binary",
            "kind": self.kind,
            "num_bytes": self.num_bytes,
            "params": dataclasses.asdict(self.params),
        }
        return header, {"faiss": faiss.serialize_index_binary(self.index)}

    @classmethod
    def from_arrays(cls, header: dict, arrays: dict[str, np.ndarray]) -> BinaryIndex:
        """The index a `to_arrays` header and arrays describe.

        Raises:
            ValueError: an unknown kind, or a FAISS index of another kind than the
                header says (the caller names the file).
        """
        faiss = _faiss()
        kind = header.get("kind")
        if kind not in KINDS:
            raise ValueError(f"unknown binary index kind {kind!r} (expected one of {KINDS})")
        try:
            index = cls(kind, header["num_bytes"], BinaryIndexParams(**header["params"]))
            data = np.array(arrays["faiss"], np.uint8)
        except (KeyError, TypeError) as error:
            raise ValueError(f"incomplete binary index header ({error!r})") from None
        try:
            index.index = faiss.deserialize_index_binary(data)
        except RuntimeError as error:
            raise ValueError(f"the FAISS index cannot be read ({error})") from None
        expected = {
            "flat": faiss.IndexBinaryFlat,
            "ivf": faiss.IndexBinaryIVF,
            "hnsw": faiss.IndexBinaryHNSW,
            "multihash": faiss.IndexBinaryMultiHash,
        }[kind]
        if not isinstance(index.index, expected):
            raise ValueError(
                f"the header says kind {kind!r} but the FAISS index is a "
                f"{type(index.index).__name__}"
            )
        if index.index.d != 8 * index.num_bytes:
            raise ValueError(
                f"the FAISS index has {index.index.d} bits, the header says "
                f"{8 * index.num_bytes}"
            )
        index._apply_search_params()
        return index
