"""Index kinds: what the `kind` of an index (index.json, `--kind`) means to its readers.

The sharded index, the search CLI, the fit checks and the service ask the kind's
`IndexKind` record (`INDEX_KINDS.get(name)`) which shard class builds and loads it,
which ranking it reproduces, which export outputs and codes-file fields feed it and
whether it needs quantizer codebooks, instead of comparing names. The names are the
values written to index.json and shard headers; they never change.

A new kind is one registration here (or, for another FAISS binary index, one entry in
`wsdhash.index.binary`, whose kinds are all registered below) plus its shard class,
which offers `create`, `check_params`, `build`, `search`, `probe`, `stored_codes`,
`to_arrays`, `from_arrays(header, arrays, reading)`, `reading(total)` (how a loaded
index reads its shard files: an object with `allocate`, for index_file's reader, and
`shares(index)`, true when the shards go into one index), `num_items` and the class
attribute `HEADER` (the shard header's `index` value).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from wsdhash.index.binary import KINDS as BINARY_KINDS
from wsdhash.index.binary import BinaryIndex
from wsdhash.index.quantized import QuantizedIndex
from wsdhash.registry import Registry


def bit_agreement(ours: np.ndarray, theirs: np.ndarray, bits: int) -> float:
    """The share of code bits two sets of (N, B) packed codes agree in."""
    differing = np.unpackbits(np.bitwise_xor(ours, theirs), axis=1).sum(1)
    return float(1 - np.mean(differing) / bits)


def codeword_agreement(ours: np.ndarray, theirs: np.ndarray, bits: int) -> float:
    """The share of codeword indices two sets of (N, M) codes agree in."""
    del bits
    return float(np.mean(ours == theirs))


@dataclasses.dataclass(frozen=True)
class IndexKind:
    """One index kind (module doc).

    Attributes:
        name: the registry name, written to index.json and the shard headers.
        shard_class: the class of its shards (`BinaryIndex`, `QuantizedIndex`).
        metric: the ranking it reproduces, a `wsdhash.eval.scorers.SCORERS` name.
        integer_distances: its distances are integers (Hamming), not floats.
        needs_codebooks: built and queried with quantizer codebooks (a WSDHQ codes
            file's or exported model's).
        query_output, database_output: the exported model's outputs a query image
            and an indexed image give it.
        query_field, database_field: the codes-file split attributes (`CodesSplit`)
            its queries and its items are.
        code_unit: what its stored codes are made of, in words ("bits", "codewords").
        agreement: (ours, theirs, bits) -> the share of `code_unit`s two sets of
            stored codes agree in (the service's spot check).
        min_agreement: the least agreement of codes from the same model.
        auto: the kind `--kind=auto` picks for codes with (or without) codebooks.
    """

    name: str
    shard_class: type
    metric: str
    integer_distances: bool
    needs_codebooks: bool
    query_output: str
    database_output: str
    query_field: str
    database_field: str
    code_unit: str
    agreement: Callable[[np.ndarray, np.ndarray, int], float]
    min_agreement: float
    auto: bool = False

    def create_shard(self, codes: np.ndarray, params, codebooks: np.ndarray | None):
        """An empty shard of this kind for (N, .) `codes` (`build` fills it)."""
        return self.shard_class.create(self.name, codes, params, codebooks)

    def check_params(self, params, num_bytes: int | None = None, num_items: int | None = None):
        """Raises for index parameters this kind cannot take (binary.PARAM_BOUNDS)."""
        self.shard_class.check_params(self.name, params, num_bytes, num_items)


def _binary_kind(name: str) -> IndexKind:
    """A FAISS binary index over packed hash codes (wsdhash/index/binary.py)."""
    return IndexKind(
        name=name,
        shard_class=BinaryIndex,
        metric="hamming",
        integer_distances=True,
        needs_codebooks=False,
        query_output="packed_codes",
        database_output="packed_codes",
        query_field="codes",
        database_field="codes",
        code_unit="bits",
        agreement=bit_agreement,
        min_agreement=0.75,  # another model: about half the bits differ
        auto=name == "flat",
    )


_AQD = IndexKind(
    name="aqd",
    shard_class=QuantizedIndex,
    metric="aqd",
    integer_distances=False,
    needs_codebooks=True,
    query_output="embedding",
    database_output="quantization_codes",
    query_field="features",
    database_field="indices",
    code_unit="codewords",
    agreement=codeword_agreement,
    min_agreement=0.5,
    auto=True,
)

INDEX_KINDS: Registry[IndexKind] = Registry("index kind")
_ORDER = (*(_binary_kind(name) for name in BINARY_KINDS), _AQD)  # the `--kind` choices
for _kind in _ORDER:
    INDEX_KINDS.register(_kind.name)(_kind)
KINDS = tuple(kind.name for kind in _ORDER)


def auto_kind(needs_codebooks: bool) -> IndexKind:
    """The kind `--kind=auto` picks: for quantization codes (with codebooks) or not."""
    for name in KINDS:
        kind = INDEX_KINDS.get(name)
        if kind.auto and kind.needs_codebooks == needs_codebooks:
            return kind
    raise KeyError(f"No automatic index kind for needs_codebooks={needs_codebooks}.")
