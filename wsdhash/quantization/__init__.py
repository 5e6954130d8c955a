"""WSDHQ's quantizers and asymmetric (AQD) search.

- protocol.py: the `Quantizer` protocol every quantizer satisfies, and `QUANTIZERS`,
  the registry of quantizer classes by name (each registers itself where defined;
  importing this package registers them all).
- `AdditiveQuantizer` (additive.py): the original WSDHQ / DVSQ quantizer: M full-D
  codebooks, tag-weighted ICM encoding, closed-form ridge codebook update.
- `ProductQuantizer` (product.py): product quantization on the hypersphere.
- aqd.py: lookup-table AQD, SQD and feature scores (their mAP: wsdhash.eval.aqd_metrics).
- kmeans.py: seeded (spherical) k-means for the initialisations (import the module;
  its function `kmeans` is not re-exported, so the module name stays the module).

This package imports only numpy and scipy, never TensorFlow or `wsdhash.eval` (the
evaluator depends on it, not the other way round).
"""

from wsdhash.quantization.additive import AdditiveQuantizer, metric_factor
from wsdhash.quantization.aqd import (
    LAYOUTS,
    aqd_scores,
    feature_scores,
    lookup_tables,
    reconstruct,
    scores_from_tables,
    sqd_scores,
)
from wsdhash.quantization.product import ProductQuantizer, split_subvectors
from wsdhash.quantization.protocol import QUANTIZERS, Quantizer, quantizer_from_state

__all__ = [
    "LAYOUTS",
    "QUANTIZERS",
    "AdditiveQuantizer",
    "ProductQuantizer",
    "Quantizer",
    "aqd_scores",
    "feature_scores",
    "lookup_tables",
    "metric_factor",
    "quantizer_from_state",
    "reconstruct",
    "scores_from_tables",
    "split_subvectors",
    "sqd_scores",
]
