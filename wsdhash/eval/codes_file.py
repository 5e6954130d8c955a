"""The HDF5 codes file: the exchange format between encoding, evaluation and search.

Layout (h5py):
  /                 attribute `bits` (int): the code length K; attribute `scorer`
                    (str): how the file ranks, a `scorers.SCORERS` name ("hamming"
                    for binary codes, "aqd" for quantization codes; files without it
                    are "aqd" when they hold codebooks, else "hamming"); optional
                    attribute `database_codes` (str): "network" (default: the
                    database codes are what the model gives its images) or "learned"
                    (the method learned them directly, as ADSH's V: a model
                    re-encoding the database images does not reproduce them);
                    optional attribute `model_fingerprint` (str): the weights
                    fingerprint of the network that wrote the file
                    (wsdhash/model_fingerprint.py).
  /codebooks        optional float32 (M, 256, D): quantization codebooks.
  /query, /database groups, each with
    codes           uint8 (N, ceil(K/8)): packed binary codes (see `binary.pack_codes`).
    labels          uint8 (N, C): 0/1 ground-truth labels.
    ids             optional UTF-8 strings (N,): e.g. image paths.
    features        optional float32 (N, D): continuous features (e.g. AQD queries).
    indices         optional uint8 (N, M): quantization codeword indices.

Files are written atomically (a temporary file in the same directory, then
`os.replace`), so a reader never sees a half-written file. Reading validates the
layout and raises a `ValueError` that names the file and what is wrong.

Integrity: the file begins with a 512-byte HDF5 user block (bytes HDF5 leaves to the
application; the HDF5 file proper starts at byte 512):

    bytes 0-15    b"WSDHASH-CODES\n\0\0" (magic)
    bytes 16-19   format version, uint32 little endian (1)
    bytes 20-51   SHA-256 of every byte from 512 to the end of the file
    bytes 52-511  zeros

The digest covers the whole HDF5 content: every dataset's bytes, dtype and shape,
every attribute, the set of names, and the HDF5 metadata that holds them. A reader
checks it (one sequential pass, cheap next to reading the data) before HDF5 parses
a byte, and then lets HDF5 read from the same open file, so a damaged or edited file
is refused with one line naming it; it never reaches HDF5, which can loop forever,
or read other values or drop an attribute (`model_fingerprint`) or a dataset
without an error, on damaged metadata. The root attributes `bits`, `scorer` and
`database_codes` are required. Numeric datasets also keep HDF5's Fletcher-32 filter
and string datasets a `sha256` attribute (`create_checked_dataset`, which the features
file uses as well).

Files written before the user block (an HDF5 signature at byte 0) are refused: their
metadata was never checked. `python -m wsdhash.evaluate --codes=FILE --upgrade_codes`
rewrites such a file (once its layout validates) in this format.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct

import h5py
import numpy as np

from wsdhash import atomic_files

SPLITS = ("query", "database")
DATABASE_CODES = ("network", "learned")  # where a file's database codes come from
_CODEWORDS_PER_CODEBOOK = 256
USERBLOCK_SIZE = 512
MAGIC = b"WSDHASH-CODES\n\0\0"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<16sI32s")  # magic, version, SHA-256 of bytes 512..end
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_BLOCK = 1 << 20


@dataclasses.dataclass
class CodesSplit:
    """The codes and labels of one split (queries or database).

    Attributes:
      codes: (N, ceil(K/8)) uint8 packed codes.
      labels: (N, C) uint8 0/1 labels.
      ids: optional (N,) array of strings.
      features: optional (N, D) float32 features.
      indices: optional (N, M) uint8 codeword indices.
    """

    codes: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None
    features: np.ndarray | None = None
    indices: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return int(self.codes.shape[0])


@dataclasses.dataclass
class CodesFile:
    """The whole file.

    Attributes:
      bits: K, the code length.
      query: the query split.
      database: the database split.
      codebooks: optional (M, 256, D) float32 quantization codebooks.
      scorer: how the codes rank (`wsdhash.eval.scorers.SCORERS`); None: "aqd" when
        there are codebooks, else "hamming".
      database_codes: "network" (the model's codes for the database images) or
        "learned" (codes the method learned directly, ADSH's V).
      model_fingerprint: the weights fingerprint of the trained network whose codes these
        are (`wsdhash.model_fingerprint`), or None (baselines, older files).
    """

    bits: int
    query: CodesSplit
    database: CodesSplit
    codebooks: np.ndarray | None = None
    scorer: str | None = None
    database_codes: str = "network"
    model_fingerprint: str | None = None

    def __post_init__(self):
        if self.scorer is None:
            self.scorer = "hamming" if self.codebooks is None else "aqd"


def _fail(path, problem: str):
    raise ValueError(f"Codes file {os.fspath(path)!r}: {problem}")


def _check_array(path, name: str, array: np.ndarray, dtype, ndim: int) -> None:
    if array.dtype != dtype:
        _fail(path, f"{name} has dtype {array.dtype}, expected {np.dtype(dtype)}.")
    if array.ndim != ndim:
        _fail(path, f"{name} has shape {array.shape}, expected {ndim} dimensions.")


def validate_codes_file(contents: CodesFile, path) -> None:
    """Checks dtypes, shapes and cross-split consistency; raises ValueError naming `path`."""
    _check_root_attributes(contents, path)
    for split_name in SPLITS:
        _check_split(path, split_name, getattr(contents, split_name), contents.bits)
    _check_splits_agree(contents.query, contents.database, path)
    _check_codebooks(contents, path)


def _check_root_attributes(contents: CodesFile, path) -> None:
    """The scorer, model fingerprint, database codes and bits."""
    from wsdhash.eval.scorers import SCORERS  # codes files name their scorer

    if contents.scorer not in SCORERS:
        _fail(path, f"unknown scorer {contents.scorer!r}; known: {', '.join(SCORERS.names())}.")
    if contents.model_fingerprint is not None and not isinstance(contents.model_fingerprint, str):
        _fail(path, f"model_fingerprint must be a string; got {contents.model_fingerprint!r}.")
    if contents.database_codes not in DATABASE_CODES:
        _fail(
            path,
            f"database_codes must be one of {DATABASE_CODES}; got {contents.database_codes!r}.",
        )
    bits = contents.bits
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)) or bits < 1:
        _fail(path, f"attribute 'bits' must be a positive integer, got {bits!r}.")


def _check_split(path, split_name: str, split: CodesSplit, bits: int) -> None:
    """One group: the codes fit `bits` (zero padding), 0/1 labels, one row count."""
    code_bytes = -(-int(bits) // 8)
    padding_mask = np.uint8((1 << (8 * code_bytes - bits)) - 1)
    _check_array(path, f"{split_name}/codes", split.codes, np.uint8, 2)
    _check_array(path, f"{split_name}/labels", split.labels, np.uint8, 2)
    if split.codes.shape[1] != code_bytes:
        _fail(
            path,
            f"{split_name}/codes is {split.codes.shape[1]} bytes wide but bits={bits} needs "
            f"ceil({bits}/8) = {code_bytes}.",
        )
    if split.codes.size and np.any(split.codes[:, -1] & padding_mask):
        _fail(path, f"{split_name}/codes has non-zero padding bits (bits={bits}).")
    if split.labels.size and split.labels.max() > 1:
        _fail(path, f"{split_name}/labels must hold 0/1 values; found {split.labels.max()}.")
    rows = {"codes": split.codes.shape[0], "labels": split.labels.shape[0]}
    if split.ids is not None:
        if split.ids.ndim != 1:
            _fail(path, f"{split_name}/ids has shape {split.ids.shape}, expected (N,).")
        rows["ids"] = split.ids.shape[0]
    for name in ("features", "indices"):
        part = getattr(split, name)
        if part is not None:
            dtype = np.float32 if name == "features" else np.uint8
            _check_array(path, f"{split_name}/{name}", part, dtype, 2)
            rows[name] = part.shape[0]
    if len(set(rows.values())) > 1:
        counts = ", ".join(f"{name}={count}" for name, count in rows.items())
        _fail(path, f"row counts differ in group '{split_name}': {counts}.")


def _check_splits_agree(query: CodesSplit, database: CodesSplit, path) -> None:
    """Query and database have as many label, feature and index columns."""
    if query.labels.shape[1] != database.labels.shape[1]:
        _fail(
            path,
            f"query/labels has {query.labels.shape[1]} columns but database/labels has "
            f"{database.labels.shape[1]}.",
        )
    for name in ("features", "indices"):
        query_part, database_part = getattr(query, name), getattr(database, name)
        both_present = query_part is not None and database_part is not None
        if both_present and query_part.shape[1] != database_part.shape[1]:
            _fail(
                path,
                f"query/{name} has {query_part.shape[1]} columns but database/{name} has "
                f"{database_part.shape[1]}.",
            )


def _check_codebooks(contents: CodesFile, path) -> None:
    """(M, 256, D) float32 codebooks, present with and matching the splits' indices."""
    codebooks = contents.codebooks
    if codebooks is not None:
        _check_array(path, "codebooks", codebooks, np.float32, 3)
        if codebooks.shape[1] != _CODEWORDS_PER_CODEBOOK:
            _fail(path, f"codebooks has shape {codebooks.shape}, expected (M, 256, D).")
    for split_name in SPLITS:
        indices = getattr(contents, split_name).indices
        if indices is None:
            continue
        if codebooks is None:
            _fail(path, f"{split_name}/indices is present but the root dataset 'codebooks' is not.")
        if indices.shape[1] != codebooks.shape[0]:
            _fail(
                path,
                f"{split_name}/indices has {indices.shape[1]} columns but there are "
                f"{codebooks.shape[0]} codebooks.",
            )


DIGEST_ATTRIBUTE = "sha256"


def strings_digest(values) -> str:
    """SHA-256 (hex) of a sequence of strings, each UTF-8 encoded with its length."""
    digest = hashlib.sha256()
    for value in values:
        data = str(value).encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def create_checked_dataset(group: h5py.Group, name: str, data, **kwargs) -> h5py.Dataset:
    """A dataset HDF5 can check on read: Fletcher-32 on numeric data (chunked; empty
    arrays have nothing to check), a SHA-256 attribute on strings."""
    if isinstance(data, np.ndarray) and data.dtype.kind in "biuf" and data.size:
        kwargs.setdefault("chunks", True)
        dataset = group.create_dataset(name, data=data, fletcher32=True, **kwargs)
    else:
        dataset = group.create_dataset(name, data=data, **kwargs)
        if dataset.dtype.kind in ("O", "S", "U"):
            dataset.attrs[DIGEST_ATTRIBUTE] = strings_digest(dataset.asstr()[()])
    return dataset


def read_checked_dataset(dataset: h5py.Dataset, what: str, strings: bool = False):
    """All of `dataset`, its checksums verified; `what` (e.g. "Codes file 'x.h5'")
    starts the ValueError raised for corrupted data."""
    try:
        values = dataset.asstr()[()] if strings else dataset[()]
    except OSError as error:  # a Fletcher-32 mismatch: "filter returned failure"
        raise ValueError(
            f"{what}: dataset '{dataset.name}' is corrupted (checksum mismatch or unreadable: "
            f"{error})."
        ) from None
    expected = dataset.attrs.get(DIGEST_ATTRIBUTE)
    if strings and expected is not None:
        values = np.atleast_1d(values)
        if strings_digest(values) != str(expected):
            raise ValueError(
                f"{what}: dataset '{dataset.name}' is corrupted (its SHA-256 does not match)."
            )
    return values


def write_codes_file(path: str | os.PathLike, contents: CodesFile) -> None:
    """Validates `contents` and writes it atomically to `path`.

    Bool labels are stored as uint8; every other field must already have its dtype.

    Args:
      path: the .h5 file to create or replace.
      contents: what to write.

    Raises:
      ValueError: naming `path`, when the contents are inconsistent.
    """
    splits = {}
    for split_name in SPLITS:
        split = getattr(contents, split_name)
        labels = np.asarray(split.labels)
        if labels.dtype == np.bool_:
            labels = labels.astype(np.uint8)
        ids = None if split.ids is None else np.asarray(split.ids, dtype=object)
        splits[split_name] = dataclasses.replace(
            split,
            codes=np.asarray(split.codes),
            labels=labels,
            ids=ids,
            features=None if split.features is None else np.asarray(split.features),
            indices=None if split.indices is None else np.asarray(split.indices),
        )
    contents = dataclasses.replace(contents, **splits)
    validate_codes_file(contents, path)

    with atomic_files.atomic_path(path) as temporary:
        with h5py.File(temporary, "w", userblock_size=USERBLOCK_SIZE) as h5:
            _write_contents(h5, contents)
        seal(temporary)


def _content_digest(f) -> bytes:
    """SHA-256 of an open file's bytes from USERBLOCK_SIZE to its end."""
    digest = hashlib.sha256()
    f.seek(USERBLOCK_SIZE)
    for block in iter(lambda: f.read(_BLOCK), b""):
        digest.update(block)
    return digest.digest()


def seal(path: str | os.PathLike) -> None:
    """Writes the user block (module doc) of an HDF5 file created with a
    USERBLOCK_SIZE user block: the last step of `write_codes_file`."""
    with open(path, "r+b") as f:
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, _content_digest(f))
        f.seek(0)
        f.write(header.ljust(USERBLOCK_SIZE, b"\0"))
        f.flush()
        os.fsync(f.fileno())


def _write_contents(h5: h5py.File, contents: CodesFile) -> None:
    h5.attrs["bits"] = int(contents.bits)
    h5.attrs["scorer"] = contents.scorer
    h5.attrs["database_codes"] = contents.database_codes
    if contents.model_fingerprint is not None:
        h5.attrs["model_fingerprint"] = contents.model_fingerprint
    if contents.codebooks is not None:
        create_checked_dataset(h5, "codebooks", contents.codebooks)
    for split_name in SPLITS:
        split = getattr(contents, split_name)
        group = h5.create_group(split_name)
        create_checked_dataset(group, "codes", split.codes)
        create_checked_dataset(group, "labels", split.labels)
        if split.ids is not None:
            create_checked_dataset(
                group,
                "ids",
                [str(i) for i in split.ids],
                dtype=h5py.string_dtype("utf-8"),
            )
        if split.features is not None:
            create_checked_dataset(group, "features", split.features)
        if split.indices is not None:
            create_checked_dataset(group, "indices", split.indices)


def _read_dataset(path, group: h5py.Group, name: str, required: bool) -> np.ndarray | None:
    if name not in group:
        if required:
            where = "the file root" if group.name == "/" else f"group '{group.name.strip('/')}'"
            _fail(path, f"missing dataset '{name}' in {where}.")
        return None
    dataset = group[name]
    if not isinstance(dataset, h5py.Dataset):
        _fail(path, f"'{dataset.name}' is not a dataset.")
    if name == "ids":
        if dataset.dtype.kind not in ("O", "S", "U"):
            _fail(path, f"'{dataset.name}' must hold strings; has dtype {dataset.dtype}.")
        ids = read_checked_dataset(dataset, f"Codes file {os.fspath(path)!r}", strings=True)
        return np.asarray(ids, dtype=object)
    return read_checked_dataset(dataset, f"Codes file {os.fspath(path)!r}")


def _check_header(path, f) -> None:
    """Refuses a file whose user block or content digest is not what `seal` wrote."""
    head = f.read(USERBLOCK_SIZE)
    if head.startswith(_HDF5_SIGNATURE):
        _fail(
            path,
            "written by an older wsdhash, without the checksum over its contents that this "
            "version needs; rewrite it with `python -m wsdhash.evaluate --codes="
            f"{os.fspath(path)} --upgrade_codes` (or write it again).",
        )
    if len(head) < USERBLOCK_SIZE or not head.startswith(MAGIC):
        _fail(path, "not a wsdhash codes file (no wsdhash header before the HDF5 data).")
    _, version, expected = _HEADER.unpack_from(head)
    if version != FORMAT_VERSION:
        _fail(
            path,
            f"codes file format version {version}; this wsdhash reads version "
            f"{FORMAT_VERSION} (or the header is damaged).",
        )
    if head[_HEADER.size :].count(0) != USERBLOCK_SIZE - _HEADER.size:
        _fail(path, "corrupted (non-zero bytes in its header's padding).")
    if _content_digest(f) != expected:
        _fail(
            path,
            "corrupted or edited (checksum mismatch over its contents); write it again "
            "from its run or baseline.",
        )


def read_codes_file(path: str | os.PathLike) -> CodesFile:
    """Reads, checks (module doc) and validates a codes file.

    Args:
      path: an .h5 file written by `write_codes_file`.

    Returns:
      The `CodesFile`; ids come back as an object array of `str`.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: naming the file, when it is not a codes file of this version, is
        damaged or edited, or its layout is wrong.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Codes file {os.fspath(path)!r} does not exist.")
    with open(path, "rb") as f:
        _check_header(path, f)
        f.seek(0)
        # HDF5 reads the file just checked, whatever has happened to `path` since: by
        # its descriptor's name where the system has one (Linux; fast), else through
        # the Python file object (several times slower on string datasets).
        same_file = f"/proc/self/fd/{f.fileno()}"
        try:
            h5 = h5py.File(same_file if os.path.exists(same_file) else f, "r")
        except OSError as error:
            _fail(path, f"cannot be opened as HDF5 ({error}).")
        with h5:
            return _read_contents(path, h5, required=("bits", "scorer", "database_codes"))


def upgrade_codes_file(path: str | os.PathLike, output: str | os.PathLike | None = None):
    """Rewrites a codes file of an older wsdhash (no user block) in this format.

    Its layout is validated as before; its metadata cannot be checked (it holds no
    digest), so upgrade only files you trust.

    Args:
      path: the old file.
      output: where to write (default: replace `path`).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Codes file {os.fspath(path)!r} does not exist.")
    with open(path, "rb") as f:
        if f.read(len(_HDF5_SIGNATURE)) != _HDF5_SIGNATURE:
            _fail(path, "not a codes file of an older wsdhash (no HDF5 signature at byte 0).")
    try:
        h5 = h5py.File(path, "r")
    except OSError as error:
        _fail(path, f"cannot be opened as HDF5 ({error}).")
    with h5:
        contents = _read_contents(path, h5, required=("bits",))
    write_codes_file(path if output is None else output, contents)


def _read_contents(path, h5: h5py.File, required: tuple[str, ...]) -> CodesFile:
    """The validated contents of an open codes file."""
    for name in required:
        if name not in h5.attrs:
            _fail(path, f"missing root attribute {name!r}.")
    bits = h5.attrs["bits"]
    if isinstance(bits, np.ndarray) and bits.size == 1:
        bits = bits.item()
    bits = int(bits) if isinstance(bits, (int, np.integer)) and not isinstance(bits, bool) else bits
    splits = {}
    for split_name in SPLITS:
        if split_name not in h5:
            _fail(path, f"missing group '{split_name}'.")
        group = h5[split_name]
        if not isinstance(group, h5py.Group):
            _fail(path, f"'{split_name}' is not a group.")
        splits[split_name] = CodesSplit(
            codes=_read_dataset(path, group, "codes", required=True),
            labels=_read_dataset(path, group, "labels", required=True),
            ids=_read_dataset(path, group, "ids", required=False),
            features=_read_dataset(path, group, "features", required=False),
            indices=_read_dataset(path, group, "indices", required=False),
        )
    codebooks = _read_dataset(path, h5, "codebooks", required=False)
    scorer = h5.attrs.get("scorer")
    if isinstance(scorer, bytes):
        scorer = scorer.decode("utf-8")
    if scorer is not None and not isinstance(scorer, str):
        _fail(path, f"root attribute 'scorer' must be a string; got {scorer!r}.")
    text = {}
    for name in ("database_codes", "model_fingerprint"):
        value = h5.attrs.get(name)
        text[name] = value.decode("utf-8") if isinstance(value, bytes) else value
    contents = CodesFile(
        bits=bits,
        codebooks=codebooks,
        scorer=scorer,
        database_codes=text["database_codes"] or "network",
        model_fingerprint=text["model_fingerprint"],
        **splits,
    )
    validate_codes_file(contents, path)
    return contents
