"""The `IndexKind` records (wsdhash/index/kinds.py): one per kind, consistent with the
shard classes, the scorers and the `--kind` choices."""

import numpy as np
import pytest

from wsdhash.eval.binary import pack_codes
from wsdhash.eval.scorers import SCORERS
from wsdhash.index.binary import KINDS as BINARY_KINDS
from wsdhash.index.binary import BinaryIndexParams
from wsdhash.index.kinds import (
    INDEX_KINDS,
    KINDS,
    auto_kind,
    bit_agreement,
    codeword_agreement,
)

pytest.importorskip("faiss")


def test_kinds_are_registered_in_choice_order():
    assert KINDS[: len(BINARY_KINDS)] == BINARY_KINDS and "aqd" in KINDS
    assert sorted(KINDS) == INDEX_KINDS.names()
    assert auto_kind(needs_codebooks=False).name == "flat"
    assert auto_kind(needs_codebooks=True).name == "aqd"


@pytest.mark.parametrize("name", KINDS)
def test_record_fits_the_scorers(name):
    kind = INDEX_KINDS.get(name)
    assert kind.name == name and kind.metric in SCORERS
    assert 0 < kind.min_agreement <= 1
    # The scorer a codes file names builds the index kind that ranks the same way.
    ranked_as = [s for s in SCORERS if SCORERS.get(s).index_kind == name]
    assert all(s == kind.metric for s in ranked_as)


def _shard_inputs(kind):
    rng = np.random.default_rng(0)
    if kind.needs_codebooks:
        return rng.integers(0, 16, (40, 2)).astype(np.uint8), rng.normal(size=(2, 16, 6))
    return pack_codes(rng.integers(0, 2, (40, 64)) * 2 - 1), None


@pytest.mark.parametrize("name", KINDS)
def test_shard_class_builds_stores_and_probes(name):
    kind = INDEX_KINDS.get(name)
    codes, codebooks = _shard_inputs(kind)
    kind.check_params(BinaryIndexParams(), codes.shape[1], len(codes))
    shard = kind.create_shard(codes, BinaryIndexParams(nlist=2), codebooks).build(codes)
    header, _ = shard.to_arrays()
    assert header["index"] == kind.shard_class.HEADER and header["kind"] == name
    result = shard.search(shard.probe(codes), 1)
    assert result.positions.shape == (1, 1) and 0 <= result.positions[0, 0] < len(codes)
    stored = shard.stored_codes(3)
    if stored is not None:
        np.testing.assert_array_equal(stored, codes[3])
    assert (stored is not None) == (name in ("flat", "aqd"))


def test_aqd_needs_codebooks():
    with pytest.raises(ValueError, match="needs the codebooks"):
        INDEX_KINDS.get("aqd").create_shard(np.zeros((2, 2), np.uint8), None, None)


def test_agreement_of_codes():
    ours = np.array([[0b11110000], [0b00001111]], np.uint8)
    assert bit_agreement(ours, ours, 8) == 1.0
    assert bit_agreement(ours, ours ^ np.uint8(1), 8) == pytest.approx(7 / 8)
    assert codeword_agreement(np.array([[1, 2]]), np.array([[1, 3]]), 16) == 0.5
