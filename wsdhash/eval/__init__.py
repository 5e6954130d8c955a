"""Retrieval evaluation: binary codes, ranking with explicit tie policies, metrics, codes files.

Conventions are documented in docs/evaluation.md and gathered in one value, the
`EvalProtocol` (protocol.py). Rankings come from scorers (scorers.py: Hamming, AQD,
features, a given matrix), all evaluated by the one chunked evaluator in metrics.py,
`evaluate_retrieval(scorer, labels, protocol)`. This package imports only numpy, h5py and the numpy-only
`wsdhash.quantization` score arithmetic (never TensorFlow), so evaluation stays light.
"""

from wsdhash.eval.binary import binarize, hamming_distances, pack_codes, unpack_codes
from wsdhash.eval.codes_file import CodesFile, CodesSplit, read_codes_file, write_codes_file
from wsdhash.eval.metrics import RetrievalMetrics, evaluate_retrieval, mean_average_precision
from wsdhash.eval.protocol import (
    DEFAULT_PRECISION_AT,
    EMPTY_POLICIES,
    TIE_POLICIES,
    EvalProtocol,
)
from wsdhash.eval.ranking import rank_database
from wsdhash.eval.relevance import relevance_matrix
from wsdhash.eval.scorers import (
    SCORERS,
    AQDScorer,
    FeatureScorer,
    HammingScorer,
    MatrixScorer,
    Scorer,
)

__all__ = [
    "DEFAULT_PRECISION_AT",
    "EMPTY_POLICIES",
    "SCORERS",
    "TIE_POLICIES",
    "AQDScorer",
    "CodesFile",
    "CodesSplit",
    "EvalProtocol",
    "FeatureScorer",
    "HammingScorer",
    "MatrixScorer",
    "RetrievalMetrics",
    "Scorer",
    "binarize",
    "evaluate_retrieval",
    "hamming_distances",
    "mean_average_precision",
    "pack_codes",
    "rank_database",
    "read_codes_file",
    "relevance_matrix",
    "unpack_codes",
    "write_codes_file",
]
