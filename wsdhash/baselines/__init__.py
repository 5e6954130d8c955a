"""Classic unsupervised hashing baselines (numpy only) that learned methods must beat:
LSH, PCAH, ITQ and the training-free PCA-RR (PCA, a random rotation, the sign).

Each baseline has `fit(features)`, `encode_relaxed(features)`, `encode(features)`,
`get_state()` and `from_state(state)`; look them up by name in `BASELINES`.
"""

from wsdhash.baselines.itq import ITQ
from wsdhash.baselines.lsh import LSH
from wsdhash.baselines.pcah import PCAH
from wsdhash.baselines.pcarr import PCARR
from wsdhash.registry import Registry

BASELINES = Registry("baseline")
BASELINES.register("lsh")(LSH)
BASELINES.register("pcah")(PCAH)
BASELINES.register("itq")(ITQ)
BASELINES.register("pcarr")(PCARR)

__all__ = ["BASELINES", "ITQ", "LSH", "PCAH", "PCARR"]
