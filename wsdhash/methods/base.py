"""What a hashing method is to the rest of wsdhash: the `Method` interface.

The training loop, export, evaluation and search know no method by name: they ask the
run's `Method` (registered in `wsdhash.methods.METHODS`) for everything that differs
between methods. One instance serves one run and may hold run state (WSDHQ's
quantizer). The life of a run:

    method = METHODS.get(config.method.name)(config)
    train, validation = method.prepare_splits(train, validation)   # e.g. merged tags
    output_dim = method.output_dim()                               # K, or WSDHQ's D
    loss = method.build_loss(num_targets)                          # a losses/ layer
    ... each step: loss(codes, targets, refs..., **method.loss_inputs(batch))
                   # + features, ref_features if method.uses_backbone_features
    method.after_restore(loss)                                     # resume
    method.after_step(step, encode_train, loss)                    # e.g. quantizer
    method.evaluate(query_features, ..., protocol)                 # its scorer
    method.before_final(encode_train, loss); method.codes_file(...)
    method.serving_encoder(checkpoint)                             # extra outputs

Settings of its own come from the command line through `options`: each `Option`
names its flag, the entry of `config.method.options` it fills (a loss keyword, or with
`loss_argument=False` a setting the method reads itself, as WSDHQ's quantizer), its
conversion and its resume policy; `wsdhash.train` defines the flags from every
registered method's options (flags live only in entry points), `options_from_flags`
turns flag values into that dict, and `loss_arguments` passes the loss its keywords.

Adding a method is a module with a `Method` subclass registered where it is defined
(`@METHODS.register("name")` on the class; `METHODS` lives here) and its loss under
losses/, plus the module's import in `wsdhash/methods/__init__.py`, which imports every
method module so the registry is complete; binary-code methods need only a
`BinaryHashMethod` subclass naming their loss and options. Importing this package
does not import TensorFlow (losses are imported when built), so entry points can
define flags from the options before TensorFlow starts.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from wsdhash import flag_bounds, settings
from wsdhash.eval import (
    CodesFile,
    CodesSplit,
    EvalProtocol,
    HammingScorer,
    binarize,
    evaluate_retrieval,
    pack_codes,
)
from wsdhash.eval.metrics import RetrievalMetrics
from wsdhash.registry import Registry


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting a method takes from the command line.

    Attributes:
        flag: the flag name (stable: flagfiles use it), e.g. "orthohash_margin".
        argument: its key in `config.method.options` (run_info.json's
            "method_options"): the loss keyword it fills, e.g. "margin".
        kind: "float", "integer", "bool", "string" or "enum".
        default: the flag's default.
        help: the flag's help text.
        choices: the values of an "enum" flag.
        convert: (flag value, all flag values) -> argument value; default: as is.
        minimum, maximum, above: the range of a "float" or "integer" flag, checked
            before the command does any work (wsdhash/flag_bounds.py); `above`: the
            minimum itself excluded. Default: any finite value in [0, 1e6].
        loss_argument: whether the loss takes it as a keyword (False: the method reads
            it from `config.method.options` itself, e.g. WSDHQ's quantizer).
        resume: its resume policy (`wsdhash.settings`): CHANGEABLE (a resumed run may
            change it when `--resume_with_changes` names its flag) or MUST_MATCH.
        recorded_as: the top-level run_info.json key that runs recorded it under before
            it became an option ("" for none): such runs are read with the value moved
            into "method_options" (`wsdhash.training.config.config_from_dict`).
    """

    flag: str
    argument: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    convert: Callable[[Any, Any], Any] | None = None
    minimum: float = 0.0
    maximum: float = 1e6
    above: bool = False
    loss_argument: bool = True
    resume: str = settings.CHANGEABLE
    recorded_as: str = ""

    def __post_init__(self):
        if self.resume not in (settings.CHANGEABLE, settings.MUST_MATCH):
            raise ValueError(f"Option {self.flag}: resume policy {self.resume!r}.")

    @property
    def bound(self) -> flag_bounds.Bound | None:
        """The flag's range (None for a flag that is not a number)."""
        if self.kind not in ("float", "integer"):
            return None
        return flag_bounds.Bound(self.minimum, self.maximum, self.above)

    def value(self, flag_values) -> Any:
        raw = getattr(flag_values, self.flag)
        return raw if self.convert is None else self.convert(raw, flag_values)


class _ClassAttribute:
    """A read-only attribute computed from the class, read on the class or an instance."""

    def __init__(self, compute: Callable[[type], Any]):
        self.compute = compute

    def __get__(self, instance, owner: type):
        return self.compute(owner)


class Method:
    """The interface (module doc). Subclasses set `name`, `options`, `loss_class` and
    override what differs from binary hashing.

    Args:
        config: the run's `TrainConfig` (wsdhash.training.config).
    """

    name = "method"
    options: tuple[Option, ...] = ()
    # The loss also takes the backbone's features of the batch: `features` (B, F) and
    # `ref_features` (R, F, every replica's), e.g. to preserve their similarities.
    uses_backbone_features: bool = False
    # The dataset split it trains on: "train", or "database" for a method that learns the
    # database's codes themselves (ADSH).
    training_split: str = "train"
    # Whether the codes file's database codes are learned (ADSH) rather than the
    # network's codes of the database images; served models then encode queries, and
    # an index of the database is built from the codes file.
    learned_database_codes: bool = False
    # "module:Class" of the loss layer, imported when the loss is built, so that the
    # entry points can read every method's options before TensorFlow is imported.
    loss_path: str = ""

    @_ClassAttribute
    def loss_class(cls) -> type:
        """The loss layer class (`loss_path` imported), on the class or an instance."""
        module, _, name = cls.loss_path.partition(":")
        return getattr(importlib.import_module(module), name)

    def __init__(self, config):
        self.config = config

    @classmethod
    def options_from_flags(cls, flag_values) -> dict[str, Any]:
        """`config.method.options` from parsed flag values."""
        return {option.argument: option.value(flag_values) for option in cls.options}

    @classmethod
    def option(cls, argument: str) -> Option | None:
        """The option filling `config.method.options[argument]` (None: no such option)."""
        return next((o for o in cls.options if o.argument == argument), None)

    def option_value(self, argument: str) -> Any:
        """The run's value of the option filling `argument`: the config's, or the
        option's default where the config (built in code, not from flags) omits it."""
        return self.config.method.options.get(argument, self.option(argument).default)

    # --- Data and model --------------------------------------------------------------

    def prepare_splits(self, train, validation):
        """(train, validation) as the method trains and validates on them."""
        return train, validation

    def output_dim(self) -> int:
        """The width of the model's output (K for binary codes)."""
        return self.config.model.bits

    def loss_arguments(self) -> dict[str, Any]:
        """Keyword arguments of the loss beyond bits, num_classes and seed: the run's
        method options that are loss arguments."""
        own = {o.argument for o in self.options if not o.loss_argument}
        return {k: v for k, v in self.config.method.options.items() if k not in own}

    def build_loss(self, num_targets: int):
        """The method's loss layer (losses/), with its variables built."""
        return self.loss_class(
            bits=self.config.model.bits,
            num_classes=num_targets,
            seed=self.config.seed,
            **self.loss_arguments(),
        )

    def index_stream(self, train):
        """A callable giving an endless iterator of `train` rows in the order the method
        trains on them (e.g. ADSH's sampled subsets), or None: the trainer shuffles (or
        forms class-balanced batches)."""
        del train

    def loss_inputs(self, batch: dict) -> dict:
        """Extra per-batch keyword inputs of the loss (e.g. the examples' indices)."""
        return {}

    # --- Between steps ---------------------------------------------------------------

    def after_restore(self, loss) -> None:
        """After a checkpoint was restored into the loss (resume, final selection)."""

    def after_step(self, step: int, encode_train: Callable[[], np.ndarray], loss) -> None:
        """After training step `step`; `encode_train(rows=None)` gives the model's
        outputs for the training split (or those rows)."""

    def before_final(self, encode_train: Callable[[], np.ndarray], loss) -> None:
        """Before the final evaluation, with the selected checkpoint restored."""

    # --- Evaluation and outputs ------------------------------------------------------

    def evaluate(
        self,
        query_features: np.ndarray,
        query_labels: np.ndarray,
        database_features: np.ndarray,
        database_labels: np.ndarray,
        protocol: EvalProtocol,
        database_ids=None,
    ) -> RetrievalMetrics:
        """Metrics of the model's relaxed outputs under the method's scorer and the
        run's `protocol` (`database_ids`: the database items' paths, for learned
        database codes)."""
        scorer = HammingScorer(
            pack_codes(binarize(query_features)),
            pack_codes(self.database_codes(database_features, database_ids)),
            query_features.shape[1],
        )
        return evaluate_retrieval(scorer, (query_labels, database_labels), protocol)

    def database_codes(self, database_features, database_ids=None) -> np.ndarray:
        """(N, K) +-1 codes of the database items: the signs of the network's outputs;
        a method with `learned_database_codes` returns the codes it learned."""
        return binarize(database_features)

    def codes_file(self, query, query_features, database, database_features) -> CodesFile:
        """The run's codes file: what search and evaluation read."""
        return CodesFile(
            bits=self.config.model.bits,
            query=CodesSplit(
                pack_codes(binarize(query_features)),
                query.labels,
                ids=query.paths,
                features=query_features,
            ),
            database=CodesSplit(
                pack_codes(self.database_codes(database_features, database.paths)),
                database.labels,
                ids=database.paths,
                features=database_features,
            ),
            database_codes="learned" if self.learned_database_codes else "network",
        )

    def serving_encoder(self, checkpoint: str, workdir: str):
        """A tf.Module mapping the embedding to extra serving outputs, or None (binary
        codes need none: the export's packed codes are the database side)."""
        del checkpoint, workdir


class BinaryHashMethod(Method):
    """Binary codes: sign of the model's output, ranked by Hamming distance. A method
    of this kind is its loss and its options."""


# name -> Method subclass; each method module registers its class where it defines it
# (wsdhash/methods/__init__.py imports them all).
METHODS: Registry[type[Method]] = Registry("method")
