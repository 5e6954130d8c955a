"""The allowed range of every numeric command-line flag, in one table.

Every entry point's numeric flags are checked against `BOUNDS` right after parsing
(`wsdhash.cli.run`), before any work: a value outside its range, and any NaN or
infinity, is refused in one line with exit status 2, naming the flag, the value and
the range. Where the library checks the same value itself, the range lives there once
and the entry point that defines the flag adds it to the table (`declare`): a method's
own flags (`--<method>_<name>`, their `Option` in wsdhash/methods/), the training
settings' flags (`bound` in a `TrainConfig` field's metadata, wsdhash/settings.py,
declared by `wsdhash.commands.setting_flags.define_flags`), the index parameters
(wsdhash/index/binary.py) and the service's limits (wsdhash/service/errors.py).

A flag whose default is None ("not set", e.g. `--hyp2_zeta`) may stay unset. The
table lists every numeric flag of every command (tests/test_flag_bounds.py walks them
all with 0, -1, NaN, a huge value and a wrong type), so a new numeric flag needs a
line here (or a declared range) before its tests pass. The same name means the same quantity in every
command (`--seed`, `--batch_size`), so one line covers them all.

The upper bounds are not limits of the algorithms: they are values past which a run
cannot be meant (a batch of 2^17 images, 2^13 bits, a learning rate of 100) and which
would otherwise fail minutes later inside TensorFlow or FAISS, or run silently.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Bound:
    """The closed range [minimum, maximum]; `above`: the minimum itself excluded."""

    minimum: float
    maximum: float
    above: bool = False

    def describe(self) -> str:
        low = f"> {_number(self.minimum)}" if self.above else f">= {_number(self.minimum)}"
        return f"{low} and <= {_number(self.maximum)}"

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        low_ok = value > self.minimum if self.above else value >= self.minimum
        return low_ok and value <= self.maximum


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


BIG = 10**9  # counts of steps, items or seconds: "more than anyone means"
SEED = Bound(0, 2**31 - 1)
COUNT = Bound(1, BIG)  # at least one
OPTIONAL_COUNT = Bound(0, BIG)  # 0: off, all or automatic (each flag's help says which)
FRACTION = Bound(0, 1)
THREADS = Bound(0, 1024)  # 0: TensorFlow's or FAISS's choice
BATCH = Bound(1, 2**16)
BITS = Bound(1, 4096)
IMAGE_SIDE = Bound(0, 8192)  # 0: the model's own size

BOUNDS: dict[str, Bound] = {
    # Shared by several commands.
    "seed": SEED,
    "batch_size": BATCH,
    "builtin_image_size": Bound(8, 1024),
    "image_size": IMAGE_SIDE,
    "crop_size": IMAGE_SIDE,
    "max_pixels": Bound(1, 2**31),  # export's, and serve's Limits
    # train (and tune, which takes train's flags): the flags that are not settings; a
    # TrainConfig field's flag has its range in the field's metadata (declared by train).
    "epochs": Bound(0, 10**6),
    "lr_decay_every": OPTIONAL_COUNT,
    "cpu_replicas": Bound(0, 256),
    # tune.
    "trials": Bound(1, 10**6),
    "timeout_s": OPTIONAL_COUNT,
    # evaluate.
    "hamming_radius": Bound(0, 4096),
    "num_threads": THREADS,
    # extract.
    "max_batches": OPTIONAL_COUNT,
    # tags.
    "vectors_limit": OPTIONAL_COUNT,
    "min_count": COUNT,
    "correlation_threshold": FRACTION,
    "min_cooccurrence": COUNT,
    "enhance_weight": FRACTION,
    "merge_eps": Bound(0, 2),  # a cosine distance
    "merge_min_samples": COUNT,
    "w2v_dim": Bound(1, 10**4),
    "w2v_epochs": Bound(1, 10**4),
    "ppmi_dim": Bound(1, 10**4),
    "ppmi_eigenvalue_power": FRACTION,
    "ppmi_context_smoothing": Bound(0, 1, above=True),
    # search.
    "shard_size": OPTIONAL_COUNT,
    # pipeline encode: 0 is automatic; wsdhash/beam/encode.py's MAX_SHARDS.
    "num_shards": Bound(0, 10_000),
    # pipeline tfrecords.
    "records_per_shard": COUNT,
    # The index parameters' ranges: wsdhash/index/binary.py's PARAM_BOUNDS (declared).
    "k": Bound(1, 10**7),
    "num_queries": OPTIONAL_COUNT,
    # serve.
    "port": Bound(0, 65535),  # 0: any free port
    # The service's limits: wsdhash/service/errors.py's BOUNDS (declared by serve).
    "check_images": Bound(0, 10**6),
    "intra_op_threads": THREADS,
    "inter_op_threads": THREADS,
    # demo.
    "num_train": COUNT,
    "num_query": COUNT,
    "num_database": COUNT,
    "train_bits": BITS,
    "train_steps": COUNT,
    # report.
    "tsne_points": OPTIONAL_COUNT,
    "precision_n": COUNT,
    # prepare: a count, or below 1 a fraction.
    "query_size": Bound(0, BIG),
    "train_size": Bound(0, BIG),
}


def declare(name: str, bound: Bound) -> None:
    """Adds the bound of a flag whose range a library module declares beside the value
    it bounds (a method's `Option`, an index parameter, a service limit); the entry
    point that defines the flag calls this. The same name twice must agree."""
    if BOUNDS.get(name, bound) != bound:
        raise ValueError(f"--{name}: two bounds, {BOUNDS[name]} and {bound}.")
    BOUNDS[name] = bound


def declare_ranges(ranges: dict[str, tuple[float, float]]) -> None:
    """`declare` for a library's table of inclusive (lowest, highest) ranges."""
    for name, (low, high) in ranges.items():
        declare(name, Bound(low, high))


def numeric_flags(flag_values) -> list:
    """The integer and float flags the project defines in `flag_values` (absl's own,
    such as `-v`, are absl's business)."""
    from absl import flags

    numeric = (flags.IntegerParser, flags.FloatParser)
    found = {}
    for module, module_flags in flag_values.flags_by_module_dict().items():
        if module.startswith("absl."):
            continue
        for flag in module_flags:
            if isinstance(flag.parser, numeric):
                found[flag.name] = flag
    return list(found.values())


def check(flag_values) -> None:
    """Refuses a numeric flag outside its bound, NaN or infinite.

    Raises:
        ValueError: naming the flag, the value and the range.
    """
    for flag in numeric_flags(flag_values):
        value = flag.value
        if value is None:  # not set: the command chooses
            continue
        bound = BOUNDS.get(flag.name)
        if bound is None:
            if not math.isfinite(value):
                raise ValueError(f"--{flag.name} must be a finite number, got {value}.")
            continue
        if not bound.contains(value):
            raise ValueError(f"--{flag.name} must be {bound.describe()}, got {value}.")
