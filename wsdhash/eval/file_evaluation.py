"""Evaluating a codes file the way its contents call for.

A file with codebooks holds WSDHQ quantization codes: the database is ranked by AQD
(continuous query features against the database's codeword indices). Otherwise the
packed binary codes are ranked by Hamming distance. Both the evaluate CLI and the
report use this, so their numbers are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from wsdhash.eval import metrics
from wsdhash.eval.codes_file import CodesFile


def evaluate_codes_file(
    contents: CodesFile,
    *,
    topk: int | None,
    ties: str = "index",
    empty: str = "zero",
    seed: int = 0,
    precision_at: Sequence[int] = metrics.DEFAULT_PRECISION_AT,
    hamming_radius: int | None = 2,
    num_threads: int | None = None,
    source: str = "codes file",
) -> metrics.RetrievalMetrics:
    """mAP@R and the curves of one codes file (module doc); `source` names it in errors."""
    if contents.codebooks is None:
        return metrics.evaluate_retrieval(
            contents.query.labels,
            contents.database.labels,
            query_codes=contents.query.codes,
            database_codes=contents.database.codes,
            bits=contents.bits,
            topk=topk,
            ties=ties,
            empty=empty,
            seed=seed,
            precision_at=precision_at,
            hamming_radius=hamming_radius,
            tie_bounds=True,
            num_threads=num_threads,
        )
    from wsdhash.quantization.aqd import aqd_evaluate  # pylint: disable=g-import-not-at-top

    if contents.query.features is None or contents.database.indices is None:
        raise ValueError(
            f"{source} has codebooks but no query features or database indices, which AQD needs."
        )
    return aqd_evaluate(
        contents.query.features,
        contents.database.indices,
        contents.codebooks,
        contents.query.labels,
        contents.database.labels,
        topk=topk,
        ties=ties,
        empty=empty,
        seed=seed,
        precision_at=precision_at,
        num_threads=num_threads,
    )
