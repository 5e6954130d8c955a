"""Whether codes, or a model, fit an index: the checks the service and the search CLI
share.

An index's manifest records the weights fingerprint of the network whose codes it holds
(wsdhash/model_fingerprint.py), when the build knew one; a codes file and an export
record theirs. Queries from another network than the index's rank its items by codes
that mean something else, so they are refused (`MismatchError`, one line naming both)
when both fingerprints are recorded and differ. An AQD index also needs the same
codebooks as the queries' codes file or model, a binary index codes of its width.
"""

from __future__ import annotations

import numpy as np

from wsdhash.index.kinds import INDEX_KINDS


class MismatchError(ValueError):
    """Codes or a model and an index that do not fit each other (the message says how)."""


def check_provenance(
    index, fingerprint: str | None, index_name: str, other_name: str, remedy: str
) -> None:
    """Refuses `other_name` (fingerprint `fingerprint`) for an index whose manifest
    names another network; `remedy` ends the message (what to do)."""
    theirs = index.manifest.get("model_fingerprint")
    if theirs and fingerprint and theirs != fingerprint:
        raise MismatchError(
            f"{index_name} holds the codes of another network than {other_name} (weights "
            f"fingerprints {str(theirs)[:12]} and {fingerprint[:12]}: another run or "
            f"checkpoint): {remedy}."
        )


def check_codebooks(index, codebooks, index_name: str, other_name: str, remedy: str) -> None:
    """Refuses codebooks (None: none) other than an AQD index's."""
    theirs = index.shards[0].codebooks
    if codebooks is None:
        raise MismatchError(
            f"{index_name} is an AQD index of quantization codes, but {other_name} has no "
            f"quantizer codebooks: {remedy}."
        )
    codebooks = np.asarray(codebooks, np.float32)
    if codebooks.shape != theirs.shape:
        raise MismatchError(
            f"{index_name} holds codes of {theirs.shape[0]} codebooks of {theirs.shape[1]} "
            f"codewords in {theirs.shape[2]} dimensions, {other_name} has "
            f"{codebooks.shape[0]} x {codebooks.shape[1]} in {codebooks.shape[2]}: {remedy}."
        )
    if not np.allclose(codebooks, theirs, rtol=1e-5, atol=1e-6):
        raise MismatchError(
            f"{index_name} was built with other codebooks than {other_name}'s (another run "
            f"or checkpoint): {remedy}."
        )


def check_codes_fit_index(contents, index, index_name: str, codes_name: str) -> None:
    """Refuses a codes file whose queries cannot rank `index`'s items: another
    network, other codebooks (AQD) or another code width (binary)."""
    remedy = "query with the codes file the index was built from, or rebuild the index"
    check_provenance(index, contents.model_fingerprint, index_name, codes_name, remedy)
    if INDEX_KINDS.get(index.kind).needs_codebooks:
        check_codebooks(index, contents.codebooks, index_name, codes_name, remedy)
        return
    width, theirs = int(contents.query.codes.shape[1]), int(index.shards[0].num_bytes)
    if width != theirs:
        raise MismatchError(
            f"{codes_name} holds {contents.bits}-bit codes ({width} bytes) but {index_name} "
            f"holds {8 * theirs}-bit codes ({theirs} bytes): {remedy}."
        )


def check_model_fits_index(
    model, fingerprint: str | None, index, index_name: str, model_name: str
) -> None:
    """Refuses an exported model of another network than the index's, or, for an AQD
    index, with other codebooks."""
    remedy = (
        "query with the model the index was built with, or rebuild the index with this one "
        f"(python -m wsdhash.search build --images=FOLDER --{model_name.lstrip('-')} "
        "--output=INDEX)"
    )
    check_provenance(index, fingerprint, index_name, model_name, remedy)
    if INDEX_KINDS.get(index.kind).needs_codebooks:
        encoder = getattr(model, "quantization_encoder", None)
        books = getattr(encoder, "codebooks_additive", None)
        check_codebooks(
            index, None if books is None else books.numpy(), index_name, model_name, remedy
        )
