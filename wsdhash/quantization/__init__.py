"""WSDHQ's quantizers and asymmetric (AQD) search.

- `AdditiveQuantizer` (additive.py): the original WSDHQ / DVSQ quantizer: M full-D
  codebooks, tag-weighted ICM encoding, closed-form ridge codebook update.
- `ProductQuantizer` (product.py): product quantization on the hypersphere.
- aqd.py: lookup-table AQD, SQD and feature scores, and their mAP in query chunks.
- kmeans.py: seeded (spherical) k-means for the initialisations (import the module;
  its function `kmeans` is not re-exported, so the module name stays the module).

This package imports only numpy (and the numpy-only `wsdhash.eval`), never TensorFlow.
"""

from wsdhash.quantization.additive import AdditiveQuantizer, metric_factor
from wsdhash.quantization.aqd import (
    LAYOUTS,
    aqd_evaluate,
    aqd_mean_average_precision,
    aqd_scores,
    evaluate_in_query_chunks,
    feature_mean_average_precision,
    feature_scores,
    lookup_tables,
    reconstruct,
    scores_from_tables,
    sqd_mean_average_precision,
    sqd_scores,
)
from wsdhash.quantization.product import ProductQuantizer, split_subvectors

__all__ = [
    "LAYOUTS",
    "AdditiveQuantizer",
    "ProductQuantizer",
    "aqd_evaluate",
    "aqd_mean_average_precision",
    "aqd_scores",
    "evaluate_in_query_chunks",
    "feature_mean_average_precision",
    "feature_scores",
    "lookup_tables",
    "metric_factor",
    "reconstruct",
    "scores_from_tables",
    "split_subvectors",
    "sqd_mean_average_precision",
    "sqd_scores",
]
