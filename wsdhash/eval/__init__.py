"""Retrieval evaluation: binary codes, ranking with explicit tie policies, metrics, codes files.

Conventions are documented in docs/evaluation.md and in each module. Rankings come
from scorers (scorers.py: Hamming, AQD, features), all evaluated by the one chunked
evaluator in metrics.py. This package imports only numpy, h5py and the numpy-only
`wsdhash.quantization` score arithmetic (never TensorFlow), so evaluation stays light.
"""

from wsdhash.eval.binary import binarize, hamming_distances, pack_codes, unpack_codes
from wsdhash.eval.codes_file import CodesFile, CodesSplit, read_codes_file, write_codes_file
from wsdhash.eval.metrics import (
    DEFAULT_PRECISION_AT,
    EMPTY_POLICIES,
    RetrievalMetrics,
    evaluate_retrieval,
    mean_average_precision,
    metric_name,
)
from wsdhash.eval.ranking import TIE_POLICIES, rank_database
from wsdhash.eval.relevance import relevance_matrix
from wsdhash.eval.scorers import SCORERS, AQDScorer, FeatureScorer, HammingScorer, Scorer

__all__ = [
    "DEFAULT_PRECISION_AT",
    "EMPTY_POLICIES",
    "SCORERS",
    "TIE_POLICIES",
    "AQDScorer",
    "CodesFile",
    "CodesSplit",
    "FeatureScorer",
    "HammingScorer",
    "RetrievalMetrics",
    "Scorer",
    "binarize",
    "evaluate_retrieval",
    "hamming_distances",
    "mean_average_precision",
    "metric_name",
    "pack_codes",
    "rank_database",
    "read_codes_file",
    "relevance_matrix",
    "unpack_codes",
    "write_codes_file",
]
