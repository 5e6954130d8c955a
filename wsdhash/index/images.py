"""Encoding image files through an exported SavedModel for an index or a query.

The library side of `python -m wsdhash.search build --images` / `query --images` (and
of the demo's index): every file is read and encoded in batches; items the model marks
invalid (`valid` False, with its `status`), or that fail when a failing batch is
re-encoded item by item, or that cannot be read, are named and never indexed. It
defines no flags, so tests and other commands can import it.
"""

from __future__ import annotations

import sys

from wsdhash import cli


def _status_name(status) -> str:
    try:
        from wsdhash.data.image_header import STATUS_NAMES  # pylint: disable=g-import-not-at-top
    except ImportError:  # pragma: no cover
        STATUS_NAMES = {}
    return STATUS_NAMES.get(int(status), "not a valid JPEG or PNG image")


def check_takes_images(model, source: str = "the SavedModel") -> None:
    """A UsageError unless the SavedModel's `serving_default` takes encoded `images`
    (a head trained on features and exported without its feature model takes
    `features`: a one-line error saying how to export one that takes images)."""
    signatures = getattr(model, "signatures", {})
    if "serving_default" not in signatures:
        raise cli.UsageError(f"{source} has no serving_default signature.")
    # A stand-in without a signature (tests, wrappers) is taken at its word.
    signature = getattr(signatures["serving_default"], "structured_input_signature", None)
    inputs = signature[1] if signature is not None else {"images": None}
    if "images" not in inputs:
        raise cli.UsageError(
            f"{source} takes {', '.join(sorted(inputs))}, not images: it is a head trained "
            "on features (--backbone=features) exported without its feature model; export "
            "one that takes images with `python -m wsdhash.export --workdir=RUN "
            "--output=DIR --feature_model=FILE` (FILE: the .keras, SavedModel or .tflite "
            "model the features were extracted with)."
        )


def encode_images(paths: list[str], key: str, model, batch_size: int = 64):
    """Runs a SavedModel's serving signature over image files.

    Args:
        paths: image files.
        key: the output to keep ("packed_codes", "quantization_codes", "embedding").
        model: the loaded SavedModel.
        batch_size: images per call.

    Returns:
        (the `key` rows of the valid items, in order; {path: why} of the items the
        model marked invalid, or whose batch failed when encoded alone, or that cannot
        be read).
    """
    import numpy as np
    import tensorflow as tf

    check_takes_images(model)
    serve = model.signatures["serving_default"]
    rows, invalid = [], {}

    def call(names, data):
        outputs = serve(images=tf.constant(data))
        if key not in outputs:
            raise cli.UsageError(f"The SavedModel has no output {key!r}.")
        valid = np.asarray(outputs["valid"].numpy(), bool)
        status = outputs["status"].numpy() if "status" in outputs else np.ones(len(names))
        for name, ok, code in zip(names, valid, status, strict=True):
            if not ok:
                invalid[name] = _status_name(code)
        if valid.any():
            rows.append(np.asarray(outputs[key].numpy())[valid])

    for start in range(0, len(paths), batch_size):
        names, batch = [], []
        for path in paths[start : start + batch_size]:
            try:
                with open(path, "rb") as f:
                    batch.append(f.read())
                names.append(path)
            except OSError as error:
                invalid[path] = f"cannot be read ({error.strerror or error})"
        if not names:
            continue
        try:
            call(names, batch)
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
            # A model that fails the whole batch on one bad image (older exports): encode
            # the items one by one to keep the good ones and name the bad.
            for name, data in zip(names, batch, strict=True):
                try:
                    call([name], [data])
                except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
                    message = " ".join(str(getattr(error, "message", error)).split())
                    invalid[name] = f"the model cannot decode it ({message[:200]})"
    return (np.concatenate(rows) if rows else np.zeros((0, 0), np.uint8)), invalid


def _describe(invalid: dict[str, str], limit: int = 10) -> str:
    shown = "; ".join(f"{path} ({why})" for path, why in list(invalid.items())[:limit])
    more = f"; and {len(invalid) - limit} more" if len(invalid) > limit else ""
    return shown + more


def images_for_index(paths: list[str], key: str, model, batch_size: int = 64):
    """(rows, ids) of the valid images; the invalid ones are named in one warning line
    on stderr and left out. All invalid is a UsageError."""
    import numpy as np

    rows, invalid = encode_images(paths, key, model, batch_size)
    if invalid:
        print(
            f"wsdhash.search: warning: skipped {len(invalid)} of {len(paths)} images, not "
            f"indexed: {_describe(invalid)}",
            file=sys.stderr,
            flush=True,
        )
    ids = [p for p in paths if p not in invalid]
    if not ids:
        raise cli.UsageError(f"--images: none of the {len(paths)} images is valid.")
    return rows, np.asarray(ids)


def images_for_query(paths: list[str], key: str, model, batch_size: int = 64):
    """The rows of query images, every one valid, else a UsageError naming the bad."""
    rows, invalid = encode_images(paths, key, model, batch_size)
    if invalid:
        raise cli.UsageError(f"--images: invalid query image: {_describe(invalid)}")
    return rows


def model_index_layout(model, kind: str = "auto", source: str = "the model"):
    """How an exported model's codes go into an index: (kind, output key, codebooks).

    A model with a quantizer (WSDHQ's `quantization_encoder`) fills an AQD index with
    its `quantization_codes` and carries the index's codebooks; any other fills a binary
    index (`flat` unless `kind` names another) with its `packed_codes`: the kind's
    `database_output` (wsdhash/index/kinds.py). A `kind` that needs codebooks ("aqd")
    for a model without a quantizer is a UsageError naming `source`.
    """
    from wsdhash.index.kinds import INDEX_KINDS, auto_kind

    encoder = getattr(model, "quantization_encoder", None)
    if kind == "auto":
        kind = auto_kind(needs_codebooks=encoder is not None).name
    index_kind = INDEX_KINDS.get(kind)
    if not index_kind.needs_codebooks:
        return kind, index_kind.database_output, None
    if encoder is None or not hasattr(encoder, "codebooks_additive"):
        raise cli.UsageError(f"{source} has no quantizer (not a WSDHQ model); use a binary --kind.")
    return kind, index_kind.database_output, encoder.codebooks_additive.numpy()
