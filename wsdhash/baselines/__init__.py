"""Classic unsupervised hashing baselines (numpy only) that learned methods must beat.

Each baseline has `fit(features)`, `encode_relaxed(features)`, `encode(features)`,
`get_state()` and `from_state(state)`; look them up by name in `BASELINES`.
"""

from wsdhash.baselines.itq import ITQ
from wsdhash.baselines.lsh import LSH
from wsdhash.baselines.pcah import PCAH
from wsdhash.registry import Registry

BASELINES = Registry("baseline")
BASELINES.register("lsh")(LSH)
BASELINES.register("pcah")(PCAH)
BASELINES.register("itq")(ITQ)

__all__ = ["BASELINES", "ITQ", "LSH", "PCAH"]
