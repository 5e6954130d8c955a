"""The evaluation protocol: every convention a retrieval figure depends on, as one value.

An `EvalProtocol` says how a ranking is scored (docs/evaluation.md): the cut-off R of
mAP@R (`topk`), the order within equal distance (`ties`), what a query with no relevant
item in the top R counts (`empty`), the seed of "random" ties, the N of precision@N,
the Hamming radius of "precision within radius", and which optional figures to compute
(the radius curve, the optimistic / pessimistic tie bounds). It is frozen and checked
when built, so a protocol that exists is a valid one.

The command-line tools build one from their flags, training builds one from its
settings, and `wsdhash.eval.metrics.evaluate_retrieval` takes it whole. Each default
below is the library's one default for that convention: flags and signatures refer to
it (`EvalProtocol.ties`, ...) instead of repeating it.

To add a convention: add a field here (default = today's behaviour, checked in
`__post_init__`), use it in `metrics.py`, and if commands should set it, add its flag
where the command builds its protocol (docs/contributing.md, "Evaluation protocol").
"""

from __future__ import annotations

import dataclasses

import numpy as np

TIE_POLICIES = ("index", "random", "optimistic", "pessimistic")
EMPTY_POLICIES = ("zero", "skip")
DEFAULT_PRECISION_AT = tuple(range(100, 1001, 100))
# docs/evaluation.md, "Ties": report tie-order bounds next to the headline when they differ by more.
TIE_BOUND_TOLERANCE = 0.005


def check_tie_policy(ties: str) -> str:
    """Returns `ties` if it is a known tie policy, else raises ValueError."""
    if ties not in TIE_POLICIES:
        raise ValueError(f"Unknown tie policy {ties!r}; expected one of {', '.join(TIE_POLICIES)}.")
    return ties


def check_empty_policy(empty: str) -> str:
    """Returns `empty` if it is a known policy for queries without relevant results."""
    if empty not in EMPTY_POLICIES:
        raise ValueError(
            f"Unknown empty policy {empty!r}; expected one of {', '.join(EMPTY_POLICIES)}."
        )
    return empty


def check_topk(topk: int | None) -> int | None:
    """Validates a cut-off R: a positive integer, or None for the whole database.

    Raises:
      TypeError: for non-integers (booleans included).
      ValueError: for 0 and negative numbers (no -1 sentinel).
    """
    if topk is None:
        return None
    if isinstance(topk, (bool, np.bool_)) or not isinstance(topk, (int, np.integer)):
        raise TypeError(f"topk must be a positive integer or None (whole database); got {topk!r}.")
    if topk < 1:
        raise ValueError(
            f"topk must be a positive integer or None (whole database); got {topk}. "
            "Use None, not -1 or 0, for the whole database."
        )
    return int(topk)


@dataclasses.dataclass(frozen=True)
class EvalProtocol:
    """How a ranking is evaluated (docs/evaluation.md); checked when built.

    Attributes:
      topk: R of mAP@R; None for the whole database. R > N is clipped to N.
      ties: the order within equal distance, one of `TIE_POLICIES`: "index" (database
        order), "random" (one database permutation seeded by `seed`), "optimistic" or
        "pessimistic" (relevant items first / last).
      empty: queries with no relevant item in the top R, one of `EMPTY_POLICIES`: "zero"
        (AP = 0) or "skip" (left out of the mean).
      seed: seeds the database permutation of "random" ties.
      precision_at: the N of the precision@N curve (clipped to the database size).
      hamming_radius: the radius of "precision within radius" (None: not computed); a
        radius above K is clipped to K. Hamming rankings only.
      radius_curve: compute precision-recall over radius 0..K (Hamming rankings only;
        it needs every item's relevance to every query).
      tie_bounds: also compute the optimistic and pessimistic mAP.
    """

    topk: int | None = None
    ties: str = "index"
    empty: str = "zero"
    seed: int = 0
    precision_at: tuple[int, ...] = DEFAULT_PRECISION_AT
    hamming_radius: int | None = 2
    radius_curve: bool = True
    tie_bounds: bool = False

    def __post_init__(self):
        check_tie_policy(self.ties)
        check_empty_policy(self.empty)
        # Frozen: normalised values are set through object.__setattr__.
        object.__setattr__(self, "topk", check_topk(self.topk))
        precision_at = tuple(int(n) for n in self.precision_at)
        if any(n < 1 for n in precision_at):
            raise ValueError(f"precision_at values must be positive; got {precision_at}.")
        object.__setattr__(self, "precision_at", precision_at)
        if self.hamming_radius is not None and self.hamming_radius < 0:
            raise ValueError(f"hamming_radius must be >= 0; got {self.hamming_radius}.")

    @property
    def map_name(self) -> str:
        """The full name of the mAP figure, e.g. `mAP@5000[ties=index,empty=zero]`; the
        seed is part of it for "random" ties, whose value depends on it."""
        cutoff = "all" if self.topk is None else str(self.topk)
        tie_part = f"ties={self.ties}"
        if self.ties == "random":
            tie_part += f",seed={self.seed}"
        return f"mAP@{cutoff}[{tie_part},empty={self.empty}]"

    def map_only(self) -> EvalProtocol:
        """The same conventions with every optional figure off: mAP@R alone."""
        return dataclasses.replace(
            self, precision_at=(), hamming_radius=None, radius_curve=False, tie_bounds=False
        )
