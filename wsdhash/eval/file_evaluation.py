"""Evaluating a codes file the way it says it ranks.

The file names its scorer (`CodesFile.scorer`): "hamming" ranks the packed binary
codes by Hamming distance, "aqd" the database's codeword indices by asymmetric
quantizer distance to the continuous query features (wsdhash/eval/scorers.py). The
evaluate CLI, the report and the demo all go through this, so their numbers agree.
"""

from __future__ import annotations

from wsdhash.eval import metrics
from wsdhash.eval.codes_file import CodesFile
from wsdhash.eval.protocol import EvalProtocol
from wsdhash.eval.scorers import scorer_for_codes_file


def evaluate_codes_file(
    contents: CodesFile,
    protocol: EvalProtocol,
    *,
    num_threads: int | None = None,
    source: str = "codes file",
) -> metrics.RetrievalMetrics:
    """mAP@R and the curves of one codes file under `protocol` (module doc); `source`
    names it in errors.

    The protocol's Hamming radius and radius curve apply to Hamming codes only (an AQD
    file has neither); `radius_curve=False` saves the work of every item's relevance.
    """
    scorer = scorer_for_codes_file(contents, source)
    labels = (contents.query.labels, contents.database.labels)
    return metrics.evaluate_retrieval(scorer, labels, protocol, num_threads=num_threads)
