"""Binary hash codes: binarization, bit packing and Hamming distances.

Conventions (docs/evaluation.md, "Binary codes"): a relaxed code v in R^K becomes +1 where
v >= 0 and -1 elsewhere; packed codes hold K bits in ceil(K/8) uint8 bytes, most
significant bit first (the `numpy.packbits` / FAISS layout), +1 stored as bit 1 and
padding bits 0 so that they never add distance.

Shapes: Q queries, N database items, K bits, B = ceil(K/8) bytes.
"""

from __future__ import annotations

import numpy as np

# Hamming distances are at most K; uint8 holds them up to K = 255 bits, which covers
# every published code length, and keeps a (Q, N) distance block 8x smaller than int64.
_MAX_UINT8_BITS = 255

# Elements of the temporary (rows, columns) uint64 XOR buffer: 1 MiB, so that it stays
# in a core's cache between the XOR and the popcount (a buffer the size of the whole
# (rows, N) block made the distance computation 2-3x slower, memory-bound).
_XOR_BLOCK_ELEMENTS = 128 * 1024

_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")
# Fallback for numpy < 2: popcount of every byte value.
_BYTE_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(
    axis=1, dtype=np.uint8
)


def binarize(relaxed: np.ndarray) -> np.ndarray:
    """Turns relaxed codes into +-1 codes: +1 where v >= 0, else -1.

    `np.sign` is deliberately not used: it maps 0 to 0 and makes codes ternary.
    NaN compares false with 0 and therefore becomes -1.

    Args:
      relaxed: float array of any shape, usually (N, K).

    Returns:
      int8 array of the same shape holding +1 and -1.
    """
    relaxed = np.asarray(relaxed)
    return np.where(relaxed >= 0, np.int8(1), np.int8(-1))


def _code_bits(codes: np.ndarray) -> np.ndarray:
    """Returns a bool (N, K) array of bits from +-1, {0, 1} or bool codes."""
    if codes.dtype == np.bool_:
        return codes
    if not (np.issubdtype(codes.dtype, np.integer) or np.issubdtype(codes.dtype, np.floating)):
        raise ValueError(f"Codes must be bool, integer or float; got dtype {codes.dtype}.")
    is_plus_one = codes == 1
    is_minus_one = codes == -1
    is_zero = codes == 0
    if not np.all(is_plus_one | is_minus_one | is_zero):
        bad = codes[~(is_plus_one | is_minus_one | is_zero)].flat[0]
        raise ValueError(
            f"Codes must hold +-1 or {{0, 1}} values (binarize relaxed codes first); found {bad!r}."
        )
    if is_minus_one.any() and is_zero.any():
        raise ValueError("Codes mix -1 and 0; use either +-1 or {0, 1} codes, not both.")
    return is_plus_one


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Packs binary codes into bytes, most significant bit first, +1 as bit 1.

    Args:
      codes: (N, K) array of +-1 values, {0, 1} values or bools.

    Returns:
      (N, ceil(K/8)) uint8 array; padding bits of the last byte are 0.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"Codes must be a 2-D (N, K) array; got shape {codes.shape}.")
    return np.packbits(_code_bits(codes), axis=1, bitorder="big")


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of `pack_codes`.

    Args:
      packed: (N, ceil(K/8)) uint8 packed codes.
      bits: K, the code length.

    Returns:
      (N, K) int8 array of +1 and -1.
    """
    packed = check_packed(packed, "packed")
    if not 0 < bits <= 8 * packed.shape[1] or packed.shape[1] != -(-bits // 8):
        raise ValueError(
            f"bits={bits} does not match packed width {packed.shape[1]} bytes "
            f"(expected ceil(bits/8) bytes)."
        )
    unpacked = np.unpackbits(packed, axis=1, count=bits, bitorder="big")
    return (unpacked.astype(np.int8) * 2 - 1).astype(np.int8)


def check_packed(packed: np.ndarray, name: str) -> np.ndarray:
    """`packed` as an array, or a ValueError naming it unless it is (rows, ceil(K/8))
    uint8 packed codes."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise ValueError(
            f"{name} must be (rows, ceil(K/8)) uint8 packed codes (see pack_codes); got "
            f"dtype {packed.dtype} and shape {packed.shape}."
        )
    return packed


def packed_to_words(packed: np.ndarray) -> np.ndarray:
    """Views packed codes as 64-bit words, zero-padding each row to a multiple of 8 bytes.

    Args:
      packed: (N, B) uint8 packed codes.

    Returns:
      (W, N) uint64 array, W = ceil(B/8), each word row contiguous so that one word of
      every database item can be XOR-ed in a single vectorised pass.
    """
    packed = check_packed(packed, "packed codes")
    num_rows, num_bytes = packed.shape
    num_words = max(1, -(-num_bytes // 8))
    padded = np.zeros((num_rows, num_words * 8), dtype=np.uint8)
    padded[:, :num_bytes] = packed
    return np.ascontiguousarray(padded.view(np.uint64).T)


def distance_dtype(num_bytes: int) -> np.dtype:
    """The smallest unsigned dtype that holds Hamming distances of `num_bytes`-byte codes."""
    return np.dtype(np.uint8 if 8 * num_bytes <= _MAX_UINT8_BITS else np.uint16)


def _popcount_into(words: np.ndarray, out: np.ndarray, accumulate: bool) -> None:
    """Writes (or adds) the popcount of every uint64 in `words` into `out`."""
    if _HAS_BITWISE_COUNT and not accumulate and out.dtype == np.uint8:
        np.bitwise_count(words, out=out)
        return
    if _HAS_BITWISE_COUNT:
        counts = np.bitwise_count(words)
    else:
        counts = (
            _BYTE_POPCOUNT[words.view(np.uint8)]
            .reshape(*words.shape, 8)
            .sum(axis=-1, dtype=np.uint8)
        )
    if accumulate:
        out += counts
    else:
        out[...] = counts


def hamming_distances_from_words(
    query_words: np.ndarray, database_words: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Hamming distances between codes already converted by `packed_to_words`.

    Works in (rows, columns) tiles whose uint64 XOR buffer stays in cache.

    Args:
      query_words: (W, Q) uint64.
      database_words: (W, N) uint64.
      out: optional (Q, N) array to write into (uint8 or uint16).

    Returns:
      (Q, N) distances, uint8 when codes have at most 255 bits (uint16 otherwise).
    """
    num_words, num_queries = query_words.shape
    num_items = database_words.shape[1]
    if out is None:
        out = np.empty((num_queries, num_items), dtype=distance_dtype(8 * num_words))
    if num_queries == 0 or num_items == 0:
        return out
    rows_per_tile = max(1, min(num_queries, 64, _XOR_BLOCK_ELEMENTS))
    columns_per_tile = max(1, min(num_items, _XOR_BLOCK_ELEMENTS // rows_per_tile))
    buffer = np.empty((rows_per_tile, columns_per_tile), dtype=np.uint64)
    for start in range(0, num_queries, rows_per_tile):
        stop = min(start + rows_per_tile, num_queries)
        for first in range(0, num_items, columns_per_tile):
            last = min(first + columns_per_tile, num_items)
            tile_xor = buffer[: stop - start, : last - first]
            tile_out = out[start:stop, first:last]
            for word in range(num_words):
                np.bitwise_xor(
                    query_words[word, start:stop, None],
                    database_words[word, None, first:last],
                    out=tile_xor,
                )
                _popcount_into(tile_xor, tile_out, accumulate=word > 0)
    return out


def hamming_distances(query_packed: np.ndarray, db_packed: np.ndarray) -> np.ndarray:
    """Hamming distances between every query and every database code.

    Bytes are viewed as uint64 words (rows zero-padded to a multiple of 8 bytes), XOR-ed
    and popcounted with `np.bitwise_count` (a 256-entry table on numpy < 2).

    Args:
      query_packed: (Q, B) uint8 packed codes.
      db_packed: (N, B) uint8 packed codes.

    Returns:
      (Q, N) array of distances, uint8 for K <= 255 bits, else uint16.
    """
    query_packed = check_packed(query_packed, "query_packed")
    db_packed = check_packed(db_packed, "db_packed")
    if query_packed.shape[1] != db_packed.shape[1]:
        raise ValueError(
            f"Query codes have {query_packed.shape[1]} bytes per row but database codes "
            f"have {db_packed.shape[1]}."
        )
    out = np.empty(
        (query_packed.shape[0], db_packed.shape[0]), dtype=distance_dtype(db_packed.shape[1])
    )
    return hamming_distances_from_words(
        packed_to_words(query_packed), packed_to_words(db_packed), out=out
    )
