"""The search behind the service: an exported SavedModel and an index that fit it.

The index's kind decides what a query is, as `python -m wsdhash.search query --images`
does: an AQD index (WSDHQ quantization codes) is queried with the model's float
`embedding`, every binary kind (flat, ivf, hnsw, multihash) with its `packed_codes`.
No method is named anywhere here.

`SearchEngine` refuses (`MismatchError`, one line) a model and an index that do not
fit: a model that takes features rather than images, codes of another width than the
index holds, an AQD index with a model that has no quantizer, or with other
codebooks than the model's, or an index whose manifest names another network than the
model's (weights fingerprints, wsdhash/model_fingerprint.py, where both recorded one).
When the database images can be read, it also encodes a few of them and compares their
codes with the ones the index holds (an index built with another model of the same
width does not reproduce them). An index whose manifest says its database codes were
learned by the method (`"database_codes": "learned"`, from an ADSH codes file) skips
that comparison: the model encodes queries only, and the fingerprints tie the two.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import stat
import threading

import numpy as np

from wsdhash.index.fit import MismatchError, check_codebooks, check_provenance
from wsdhash.index.kinds import INDEX_KINDS
from wsdhash.model_fingerprint import export_fingerprint
from wsdhash.service.errors import input_error

_OUTPUTS = ("valid", "status", "embedding", "packed_codes")
# image_header.STATUS_NAMES, repeated so that the engine also serves exports whose module
# is not importable; statuses it does not know read as "not decodable".
STATUS_OK, STATUS_NOT_AN_IMAGE, STATUS_UNDECODABLE, STATUS_TOO_LARGE = 0, 1, 2, 3


def _probe_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def folder_sha256(path: str) -> str:
    """SHA-256 over a file, or over a folder's files (relative names and contents)."""
    digest = hashlib.sha256()
    if os.path.isfile(path):
        files = [("", path)]
    else:
        files = sorted(
            (os.path.relpath(os.path.join(d, f), path), os.path.join(d, f))
            for d, _, names in os.walk(path)
            for f in names
        )
    for name, full in files:
        digest.update(name.encode() + b"\0")
        with open(full, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _modified(path: str) -> str | None:
    try:
        stamp = os.path.getmtime(path)
    except OSError:
        return None
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).isoformat(timespec="seconds")


def _opened_path(descriptor: int, path: str) -> str | None:
    """Where the file open on `descriptor` lies: its /proc/self/fd link (Linux), else
    `path` resolved now if that is the same file (device and inode), else None."""
    try:
        return os.readlink(f"/proc/self/fd/{descriptor}").removesuffix(" (deleted)")
    except OSError:
        pass
    real = os.path.realpath(path)
    try:
        same = os.path.samestat(os.stat(real), os.fstat(descriptor))
    except OSError:
        return None
    return real if same else None


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives, or one relative
        return False


class SearchEngine:
    """A loaded model and index, checked against each other (module doc).

    Args:
        model: a loaded SavedModel (`tf.saved_model.load`) or anything with the same
            `signatures["serving_default"](images=...)` (and, for AQD,
            `quantization_encoder.codebooks_additive`).
        index: a `ShardedIndex`.
        images_root: the folder database images are read from (thumbnails, paths);
            default: the folder the index was built from, when it exists.
        model_dir, index_dir: where they were loaded from (for `describe`).
        check_images: database images encoded at start-up to check that the model
            reproduces the index's codes (0: none).
    """

    def __init__(
        self,
        model,
        index,
        images_root: str | None = None,
        model_dir: str | None = None,
        index_dir: str | None = None,
        check_images: int = 8,
    ):
        self.model, self.index = model, index
        self.model_dir, self.index_dir = model_dir, index_dir
        self.kind = index.kind
        self.index_kind = INDEX_KINDS.get(self.kind)
        self.metric = self.index_kind.metric
        self.query_key = self.index_kind.query_output
        self.database_key = self.index_kind.database_output
        if "serving_default" not in getattr(model, "signatures", {}):
            raise MismatchError(f"{self._model_name}: the SavedModel has no serving_default.")
        self._serve = model.signatures["serving_default"]
        inputs = getattr(self._serve, "structured_input_signature", None)
        if inputs is not None and "images" not in inputs[1]:
            raise MismatchError(
                f"{self._model_name} takes {sorted(inputs[1])}, not encoded images: a head "
                "trained on features (--backbone=features) exported without its feature "
                "model; export one that takes images (python -m wsdhash.export "
                "--workdir=RUN --output=DIR --feature_model=FILE, FILE: the model the "
                "features were extracted with)."
            )
        source = index.manifest.get("images")
        if images_root is None and isinstance(source, str) and os.path.isdir(source):
            images_root = source
        self.images_root = os.path.realpath(images_root) if images_root else None
        self._source = os.path.normpath(source) if isinstance(source, str) else None
        self._files: dict[int, str | None] = {}
        self._files_lock = threading.Lock()
        self._paths: dict[int, str | None] = {}  # item_path's answers (they never change)
        self._ids = [str(item) for item in index.ids]  # the answer's "ids", by position
        self._positions = {item: p for p, item in enumerate(self._ids)}
        self.labels = self._read_labels(index.manifest.get("labels"))
        self.bits, self.quantizer_shape = self._check_fit()
        self._check_provenance()
        self.checked = None
        if index.manifest.get("database_codes") == "learned":
            # Codes the method learned (ADSH's V), not the model's codes of the images:
            # re-encoding the images is no test of the pair.
            self.checked = {"skipped": "the index holds database codes the method learned"}
        elif check_images:
            self.checked = self._spot_check(check_images)

    # ------------------------------------------------------------------ checks
    @property
    def _model_name(self) -> str:
        return f"--model={self.model_dir}" if self.model_dir else "the model"

    @property
    def _index_name(self) -> str:
        return f"--index={self.index_dir}" if self.index_dir else "the index"

    def _rebuild(self) -> str:
        return (
            f"build the index with this model (python -m wsdhash.search build "
            f"--images=FOLDER --model={self.model_dir or 'EXPORTED'} --output=INDEX)"
        )

    def _codebooks(self):
        encoder = getattr(self.model, "quantization_encoder", None)
        books = getattr(encoder, "codebooks_additive", None)
        return None if books is None else np.asarray(books.numpy(), np.float32)

    def _check_fit(self):
        outputs = self.encode([_probe_png()])
        missing = [key for key in (*_OUTPUTS, self.query_key) if key not in outputs]
        if missing:
            raise MismatchError(f"{self._model_name} has no output {missing[0]!r}.")
        if not outputs["valid"][0]:
            raise MismatchError(f"{self._model_name} cannot decode a PNG image.")
        bits = int(outputs["embedding"].shape[1])  # sign bits of the embedding
        if self.index_kind.needs_codebooks:
            books = self._codebooks()
            if books is None:
                raise MismatchError(
                    f"{self._index_name} is an AQD index of quantization codes, but "
                    f"{self._model_name} has no quantizer (its {bits}-bit codes need a binary "
                    f"index: {self._rebuild()})."
                )
            check_codebooks(self.index, books, self._index_name, self._model_name, self._rebuild())
            # The code is M codeword indices of log2(K) bits (32 bits = 4 x 256), not
            # the embedding's dimension.
            return int(books.shape[0] * np.ceil(np.log2(books.shape[1]))), list(books.shape)
        width = int(outputs["packed_codes"].shape[1])
        theirs = int(self.index.shards[0].num_bytes)
        if width != theirs:
            raise MismatchError(
                f"{self._model_name} gives {bits}-bit codes ({width} bytes) but "
                f"{self._index_name} holds {theirs * 8}-bit codes ({theirs} bytes): "
                f"{self._rebuild()}."
            )
        return bits, None

    @property
    def model_fingerprint(self) -> str | None:
        return export_fingerprint(self.model_dir) if self.model_dir else None

    def _check_provenance(self) -> None:
        """Refuses an index whose manifest names another network than the model's own
        (both fingerprints recorded: wsdhash/model_fingerprint.py)."""
        check_provenance(
            self.index,
            self.model_fingerprint,
            self._index_name,
            self._model_name,
            f"{self._rebuild()}, or export the checkpoint its codes file was written from "
            "(--checkpoint=best)",
        )

    def _stored(self, position: int):
        """The codes the index holds for an item, or None where the kind hides them."""
        for shard, offset in zip(self.index.shards, self.index.offsets, strict=True):
            if offset <= position < offset + shard.num_items:
                return shard.stored_codes(position - offset)
        return None

    def _spot_check(self, count: int) -> dict | None:
        """Encodes up to `count` database images and compares them with the index."""
        positions = np.unique(np.linspace(0, self.index.num_items - 1, count).astype(int))
        stored, blobs = [], []
        for position in positions:
            codes = self._stored(int(position))
            opened = None if codes is None else self.open_item(int(position))
            if opened is None:
                continue
            with opened:
                blobs.append(opened.read())
            stored.append(codes)
        if len(blobs) < 2:
            return None
        outputs = self.encode(blobs)
        ours = outputs[self.database_key][outputs["valid"]]
        theirs = np.asarray(stored)[outputs["valid"]]
        if len(ours) < 2:
            return None
        agreement = self.index_kind.agreement(ours, theirs, self.bits)
        if not agreement >= self.index_kind.min_agreement:
            raise MismatchError(
                f"{self._model_name} does not reproduce the codes of {self._index_name}: "
                f"{len(ours)} of its database images re-encoded agree in {agreement:.0%} "
                f"of their {self.index_kind.code_unit}, so the index "
                f"was built with another model; {self._rebuild()} (or --check_images=0)."
            )
        return {"images": len(ours), "agreement": round(agreement, 4)}

    def _read_labels(self, labels):
        if isinstance(labels, dict):
            table = [labels.get(str(item)) for item in self.index.ids]
        elif isinstance(labels, list) and len(labels) == self.index.num_items:
            table = labels
        else:
            return None
        return [", ".join(map(str, value)) if isinstance(value, list) else value for value in table]

    # ------------------------------------------------------------------ search
    def encode(self, blobs: list[bytes]) -> dict[str, np.ndarray]:
        """One model call over encoded images: its outputs as numpy arrays."""
        import tensorflow as tf

        outputs = self._serve(images=tf.constant(blobs, dtype=tf.string))
        return {key: np.asarray(value.numpy()) for key, value in outputs.items()}

    def neighbours(self, outputs: dict[str, np.ndarray], k: int):
        """The index's top-k for every (valid) row of `encode`'s outputs."""
        return self.index.search(outputs[self.query_key], k)

    def direct_search(self, blobs: list[bytes], k: int):
        """Model and index without HTTP (the load benchmark's reference path)."""
        return self.neighbours(self.encode(blobs), k)

    def predictions(self, outputs, result) -> list[dict]:
        """Per query: ids, positions, paths, distances, labels and the query's code."""
        answers = []
        ids, item_path = self._ids, self.item_path
        integer_distances = self.index_kind.integer_distances
        bits = None  # the codes' signs as ASCII "0"/"1" bytes, row by row
        if "codes" in outputs:
            bits = (np.asarray(outputs["codes"]) > 0).astype(np.uint8) + ord("0")
        for row in range(len(result.positions)):
            keep = result.positions[row] >= 0
            positions = [int(p) for p in np.asarray(result.positions[row])[keep].tolist()]
            distances = np.asarray(result.distances[row])[keep].tolist()  # Python numbers
            answer = {
                "ids": [ids[p] for p in positions],
                "positions": positions,
                "paths": [item_path(p) for p in positions],
                "distances": (
                    [int(d) for d in distances]
                    if integer_distances
                    else [round(float(d), 6) for d in distances]
                ),
                "code": None if bits is None else bits[row].tobytes().decode("ascii"),
            }
            if self.labels is not None:
                answer["labels"] = [self.labels[p] for p in positions]
            if "quantization_codes" in outputs:
                answer["quantization_codes"] = outputs["quantization_codes"][row].tolist()
            answers.append(answer)
        return answers

    # ------------------------------------------------------------------ items
    def position(self, item: str) -> int | None:
        """An item's position from its position number (ASCII digits) or its exact id,
        else None."""
        digits = (item.lstrip("0") or "0") if item.isascii() and item.isdigit() else None
        # No int() of a long string (Python refuses over 4,300 digits): a position has
        # at most as many digits as the item count.
        count = self.index.num_items
        if digits is not None and len(digits) <= len(str(count)) and int(digits) < count:
            return int(digits)
        return self._positions.get(item)

    def item_file(self, position: int) -> str | None:
        """The database image of an item, if it is a file inside `images_root`."""
        with self._files_lock:
            if position in self._files:
                return self._files[position]
        found = None
        if self.images_root is not None:
            stored = os.path.normpath(str(self.index.ids[position]))
            candidates = []
            if os.path.isabs(stored):
                candidates.append(stored)
            else:
                if self._source and _inside(stored, self._source) and stored != self._source:
                    candidates.append(
                        os.path.join(self.images_root, os.path.relpath(stored, self._source))
                    )
                candidates.append(os.path.join(self.images_root, stored))
            for candidate in candidates:
                real = os.path.realpath(candidate)
                if _inside(real, self.images_root) and os.path.isfile(real):
                    found = real
                    break
        with self._files_lock:
            self._files[position] = found
        return found

    def open_item(self, position: int):
        """The database image of an item opened for reading (binary), or None when it
        has none inside `images_root` now.

        Checked at every open, not only when the item was first looked up: the final
        component is opened without following a symlink (O_NOFOLLOW), and the file
        actually opened must lie inside the root (its /proc/self/fd link, or where
        /proc is missing, the path resolved again and compared by device and inode),
        so a file or folder swapped for a symlink out of the root later is refused."""
        path = self.item_file(position)
        if path is None:
            return None
        flags = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            file = open(path, "rb", opener=lambda name, mode: os.open(name, mode | flags))  # noqa: SIM115
        except OSError:  # gone, a symlink now, or unreadable
            return None
        try:
            opened = _opened_path(file.fileno(), path)
            regular = stat.S_ISREG(os.fstat(file.fileno()).st_mode)
        except OSError:
            opened, regular = None, False
        if opened is None or not regular or not _inside(opened, self.images_root):
            file.close()
            return None
        return file

    def item_path(self, position: int) -> str | None:
        """`item_file` relative to `images_root` (remembered: a search answers with it)."""
        try:
            return self._paths[position]
        except KeyError:
            pass
        found = self.item_file(position)
        path = None if found is None else os.path.relpath(found, self.images_root)
        self._paths[position] = path
        return path

    def describe(self) -> dict:
        """Model and index: method, bits, size, build date, checksum (`GET /info`)."""
        model = {"path": self.model_dir, "bits": self.bits, "quantizer": self.quantizer_shape}
        if self.model_dir:
            run_info = os.path.join(
                os.path.dirname(os.path.abspath(self.model_dir)), "run_info.json"
            )
            method = None
            try:
                with open(run_info, encoding="utf-8") as f:
                    method = json.load(f)["config"]["method"]
            except (OSError, ValueError, KeyError, TypeError):
                pass
            model.update(
                method=method,
                fingerprint=self.model_fingerprint,
                built=_modified(os.path.join(self.model_dir, "saved_model.pb")),
                sha256=folder_sha256(self.model_dir),
            )
        index = {
            "path": self.index_dir,
            "kind": self.kind,
            "metric": self.metric,
            "num_items": int(self.index.num_items),
            "shards": len(self.index.manifest["shards"]),  # files (they load as one)
            "labels": self.labels is not None,
            "model_fingerprint": self.index.manifest.get("model_fingerprint"),
        }
        if self.index_dir:
            manifest = os.path.join(self.index_dir, "index.json")
            index.update(built=_modified(manifest), sha256=folder_sha256(manifest))
        return {
            "model": model,
            "index": index,
            "images_root": self.images_root,
            "start_check": self.checked,
        }


def load(model_dir: str, index_dir: str, images_root: str | None = None, check_images: int = 8):
    """Loads both from disk and checks them (module doc); errors name the flag."""
    import tensorflow as tf

    from wsdhash.index.sharded import ShardedIndex

    if not os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        raise FileNotFoundError(f"--model={model_dir} is not a SavedModel (no saved_model.pb).")
    if images_root is not None and not os.path.isdir(images_root):
        raise FileNotFoundError(f"--images_root={images_root} is not a folder.")
    index = ShardedIndex(index_dir)
    model = tf.saved_model.load(model_dir)
    return SearchEngine(model, index, images_root, model_dir, index_dir, check_images)


def status_error(what: str, status: int):
    """The 4xx answer for an item the model marked invalid."""
    from wsdhash.service.errors import limit_error

    if status == STATUS_TOO_LARGE:
        return limit_error(
            "max_pixels", f"{what}: larger than the model's pixel limit (export --max_pixels)."
        )
    if status == STATUS_NOT_AN_IMAGE:
        return input_error(what, "not a JPEG or PNG image.", status=415)
    return input_error(what, "corrupt or truncated image: it cannot be decoded.")
