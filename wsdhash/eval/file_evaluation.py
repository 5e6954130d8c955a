"""Evaluating a codes file the way it says it ranks.

The file names its scorer (`CodesFile.scorer`): "hamming" ranks the packed binary
codes by Hamming distance, "aqd" the database's codeword indices by asymmetric
quantizer distance to the continuous query features (wsdhash/eval/scorers.py). The
evaluate CLI, the report and the demo all go through this, so their numbers agree.
"""

from __future__ import annotations

from collections.abc import Sequence

from wsdhash.eval import metrics
from wsdhash.eval.codes_file import CodesFile
from wsdhash.eval.scorers import scorer_for_codes_file


def evaluate_codes_file(
    contents: CodesFile,
    *,
    topk: int | None,
    ties: str = "index",
    empty: str = "zero",
    seed: int = 0,
    precision_at: Sequence[int] = metrics.DEFAULT_PRECISION_AT,
    hamming_radius: int | None = 2,
    tie_bounds: bool = True,
    radius_curve: bool = True,
    num_threads: int | None = None,
    source: str = "codes file",
) -> metrics.RetrievalMetrics:
    """mAP@R and the curves of one codes file (module doc); `source` names it in errors.

    `hamming_radius` and the radius curve (precision and recall at every radius; it
    needs every item's relevance, so `radius_curve=False` saves that work) apply to
    Hamming codes only.
    """
    scorer = scorer_for_codes_file(contents, source)
    return metrics.evaluate_retrieval(
        contents.query.labels,
        contents.database.labels,
        scorer=scorer,
        topk=topk,
        ties=ties,
        empty=empty,
        seed=seed,
        precision_at=precision_at,
        hamming_radius=hamming_radius if scorer.radius_bits is not None else None,
        radius_metrics=radius_curve and scorer.radius_bits is not None,
        tie_bounds=tie_bounds,
        num_threads=num_threads,
    )
