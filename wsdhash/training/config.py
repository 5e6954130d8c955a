"""The settings of one training run: `TrainConfig`, filled by `wsdhash.train` from
flags and stored flat in the run's `run_info.json` (`to_flat_dict`; `config_from_dict`
reads it back for resuming and export). Importing it does not import TensorFlow.

`TrainConfig` holds its settings in groups (`config.data`, `.model`, `.method`,
`.sampler`, `.optimizer`, `.schedule`, `.evaluation`; `seed` and `workdir` are its
own). Each field is declared once, in its group, with `wsdhash.settings.setting`: its
flag (name, kind, default, choices, help), the flag's range, the field's minimum and
its resume policy live in the field's metadata, which `wsdhash.commands.setting_flags` (the
flags), `wsdhash.training.run_info` (resuming) and `flag_bounds` (the ranges) read.
docs/contributing.md ("Adding a training setting") shows a new one."""

from __future__ import annotations

import dataclasses
from typing import Any

from wsdhash import settings
from wsdhash.eval.protocol import (
    EMPTY_POLICIES,
    TIE_POLICIES,
    EvalProtocol,
    check_empty_policy,
    check_tie_policy,
)
from wsdhash.flag_bounds import BITS, COUNT, FRACTION, OPTIONAL_COUNT, Bound
from wsdhash.settings import CHANGEABLE, FREE, PATH, setting

OPTIMIZERS = ("sgd", "adam")
HEAD_INITS = ("lsh", "pcah", "itq", "pcarr")


def _method_names() -> list[str]:
    from wsdhash.methods import METHODS  # read when the flag is defined

    return METHODS.names()


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Attributes:
    name: "sgd" (with momentum) or "adam".
    learning_rate: base learning rate (head and loss variables).
    backbone_lr_multiplier: the backbone's learning rate is this times the base.
    momentum: SGD momentum.
    beta_1, beta_2, epsilon: Adam.
    weight_decay: coupled L2 coefficient.
    boundaries: update numbers (0-based) from which the learning rate is multiplied
        by `decay` once more.
    decay: the multiplier.
    """

    name: str = setting("sgd", flag="optimizer", flag_choices=OPTIMIZERS, help="Optimizer.")
    learning_rate: float = setting(
        0.01,
        flag="lr",
        help="Base learning rate (head and loss variables).",
        bound=Bound(0, 100),
        resume=CHANGEABLE,
    )
    backbone_lr_multiplier: float = setting(
        1.0, help="Backbone learning-rate multiplier.", bound=Bound(0, 1000), resume=CHANGEABLE
    )
    momentum: float = setting(0.9, help="SGD momentum.", bound=FRACTION, resume=CHANGEABLE)
    beta_1: float = setting(0.9, flag=None)
    beta_2: float = setting(0.999, flag=None)
    epsilon: float = setting(1e-8, flag=None)
    weight_decay: float = setting(
        0.0, help="Coupled L2 weight decay (PyTorch style).", bound=FRACTION, resume=CHANGEABLE
    )
    boundaries: tuple[int, ...] = setting((), flag=None, set_by="lr_decay_every", resume=CHANGEABLE)
    decay: float = setting(
        0.1,
        flag="lr_decay",
        help="Learning-rate step factor.",
        bound=Bound(0, 1, above=True),
        resume=CHANGEABLE,
    )

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.name!r}; expected one of {OPTIMIZERS}.")
        if list(self.boundaries) != sorted(self.boundaries):
            raise ValueError(f"Learning-rate boundaries must increase: {self.boundaries}.")
        settings.check(self)

    def learning_rate_at(self, step: int, multiplier: float = 1.0) -> float:
        """The learning rate of update number `step` (0-based): decayed once for every
        boundary <= step, as PyTorch's StepLR does at epoch boundaries."""
        passed = sum(1 for boundary in self.boundaries if step >= boundary)
        return self.learning_rate * multiplier * self.decay**passed


SELECT_ON = ("validation", "test")
DATA_FORMATS = ("files", "tfrecord", "tfrecord_stream")
VALIDATION_DATABASES = ("train", "heldout")
SUPERVISIONS = ("labels", "tags")
MIXED_PRECISIONS = ("none", "bfloat16")
SAMPLERS = ("uniform", "class_balanced")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The training data and how its images are read and prepared.

    Attributes:
        dataset, data_dir, dataset_options: the registered dataset and its options.
        image_size, crop_size: override the backbone's defaults (0 = keep).
        ten_crop: evaluation averages the codes of WSDHQ's 10 crops.
        augment: the training augmentation (`preprocessing.AUGMENTATIONS` name:
            random_crop_flip, center_crop, resize, resize_flip); run_info.json files
            written before it existed resume with "random_crop_flip", the only one then.
        normalization: input normalisation (NORMALIZATIONS name); "" = the backbone's.
        data_format: where training images are read: "files" (each image's file),
            "tfrecord" (records of the TFRecord shards in `tfrecords`, looked up in the
            files' order: the same batches as "files") or "tfrecord_stream" (the shards
            read sequentially, interleaved, through a bounded shuffle buffer: another
            order). Evaluation reads files. run_info.json files written before it
            existed resume with "files" (docs/tfrecords.md).
        tfrecords: the shards folder (`python -m wsdhash.pipeline tfrecords`); "" with
            "files".
    """

    dataset: str = setting("builtin", help="Registered dataset name.")
    data_dir: str = setting("data/builtin", help="Dataset folder (list files).", resume=PATH)
    # Computed by the entry point from --image_root, --builtin_* and --seed; the
    # strings in it are compared as paths on resume.
    dataset_options: dict[str, Any] = setting(default_factory=dict, flag=None, resume=PATH)  # noqa: RUF009
    image_size: int = setting(0, help="Resize side before cropping (0: the backbone's).")
    crop_size: int = setting(0, help="Crop side (0: the backbone's).")
    ten_crop: bool = setting(False, help="Evaluate with WSDHQ's 10-crop averaging.")
    augment: str = setting(
        "random_crop_flip",
        unrecorded="random_crop_flip",
        help="Training augmentation (preprocessing.AUGMENTATIONS): random_crop_flip, "
        "center_crop (no flip), resize (the whole image, no crop or flip) or resize_flip; the "
        "last two need --image_size equal to --crop_size. Evaluation always takes the centre "
        "crop.",
    )
    normalization: str = setting(
        "", help="Input normalisation (NORMALIZATIONS name); empty: the backbone's."
    )
    data_format: str = setting(
        "files",
        choices=DATA_FORMATS,
        flag_default="auto",
        flag_choices=("auto", *DATA_FORMATS),
        unrecorded="files",
        help="Where training images are read: files, tfrecord (the --tfrecords shards, "
        "looked up in the files' order: the same batches), tfrecord_stream (the shards "
        "read sequentially through a shuffle buffer: another order) or auto (tfrecord "
        "when --tfrecords is given, else files). docs/tfrecords.md.",
    )
    tfrecords: str = setting(
        "",
        flag_default=None,
        resume=PATH,
        unrecorded="",
        help="Folder of TFRecord shards (`python -m wsdhash.pipeline tfrecords`).",
    )

    def __post_init__(self):
        settings.check(self)  # choices and minimums, from the fields' metadata
        if (self.data_format == "files") == bool(self.tfrecords):
            raise ValueError(
                "--tfrecords=DIR (the shards) goes with --data_format=tfrecord or "
                f"tfrecord_stream, and only with them; got --data_format={self.data_format} "
                f"and --tfrecords={self.tfrecords!r}."
            )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network.

    Attributes:
        backbone, weights, allow_pickle, head, bits: the backbone, its weights, the
            hash head and the code length K.
        head_init: "" (the head's own initialiser) or a registered baseline the head
            starts from, fitted on the training split's backbone features
            (wsdhash/training/head_init.py).
        mixed_precision: "none" or "bfloat16" (no loss scaling needed).
        head_hidden: units of a hidden ReLU layer between the backbone and the hash
            head (0: none, the published heads); with features extracted once, it plays
            the fully connected layers an end-to-end network would fine-tune.
        head_dropout: dropout after that hidden layer while training.
    """

    backbone: str = setting(
        "small_cnn", help="Registered backbone, or 'features' to train on --features."
    )
    weights: str = setting("none", help="'none', 'imagenet', or a weights file.", resume=PATH)
    allow_pickle: bool = setting(False, help="Allow loading a pickled .npy weights dict.")
    head: str = setting("linear_bn", help="Registered hash head: linear, tanh, linear_bn.")
    bits: int = setting(32, flag="hash_bit", help="Code length K.", bound=BITS)
    head_init: str = setting(
        "",
        flag_default="none",
        flag_choices=("none", *HEAD_INITS),
        help="Start the head from this unsupervised baseline fitted on the training split's "
        "backbone features (sign(head) = its codes at step 0), or 'none': the head's own "
        "random initialiser.",
    )
    mixed_precision: str = setting("none", choices=MIXED_PRECISIONS, help="Mixed precision.")
    head_hidden: int = setting(
        0,
        help="Units of a hidden ReLU layer (with dropout) before the hash head; 0: none.",
        bound=Bound(0, 2**16),
        unrecorded=0,
    )
    head_dropout: float = setting(
        0.5,
        help="Dropout rate after --head_hidden's layer while training.",
        bound=Bound(0, 0.95),
        unrecorded=0.5,
    )

    def __post_init__(self):
        settings.check(self)
        if self.head_init and self.head_hidden:
            raise ValueError(
                f"--head_init={self.head_init} starts the hash layer from the backbone's "
                f"features; with --head_hidden={self.head_hidden} its input is the hidden "
                "layer's instead. Use one of them."
            )


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """The method: its loss and own settings, and what it trains on.

    Attributes:
        name, options: the registered method and its loss's hyperparameters (the
            settings "method" and "method_options").
        supervision: "labels" (ground-truth classes) or "tags" (user tags).
        tag_dir: the output folder of `python -m wsdhash.tags`. With supervision "tags"
            every method trains on its merged tags (TagIdMergeMap.json) instead of the
            raw tag columns; WSDHQ, which needs it, also reads its tag embeddings.

    A method's own settings (WSDHQ's quantizer and its period among them) are its
    `Option`s, in `options`.
    """

    name: str = setting(
        "orthohash",
        key="method",
        flag_choices=_method_names,
        help="Registered method (wsdhash.methods.METHODS).",
    )
    # The method's own flags (--<method>_<name>, their Option in wsdhash/methods/).
    options: dict[str, Any] = setting(  # noqa: RUF009
        default_factory=dict, key="method_options", flag=None, resume=CHANGEABLE
    )
    supervision: str = setting("labels", choices=SUPERVISIONS, help="Train on labels or user tags.")
    tag_dir: str = setting(
        "",
        resume=PATH,
        help="Output folder of `python -m wsdhash.tags`: with --supervision=tags any method "
        "trains on its merged tags (WSDHQ needs it, for its tag embeddings too).",
    )

    def __post_init__(self):
        settings.check(self)
        if self.tag_dir and self.supervision != "tags":
            raise ValueError(
                f"--tag_dir={self.tag_dir}: processed tags are training targets only with "
                "--supervision=tags."
            )


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """How training batches are drawn.

    Attributes:
        kind: "uniform" (seeded shuffle) or "class_balanced" (P classes x Q images per
            batch, single-label data; DNNH re-implementation): the setting "sampler".
        batch_size: the global batch size.
        classes_per_batch, images_per_class: P and Q of the class-balanced sampler; the
            batch size must be P * Q.
    """

    kind: str = setting("uniform", key="sampler", choices=SAMPLERS, help="Training batch sampler.")
    batch_size: int = setting(64, help="Global batch size.", minimum=1)  # range: flag_bounds
    classes_per_batch: int = setting(
        10, help="Class-balanced sampler: classes per batch.", bound=Bound(1, 2**16)
    )
    images_per_class: int = setting(
        8, help="Class-balanced sampler: images per class.", bound=Bound(1, 2**16)
    )

    def __post_init__(self):
        settings.check(self)
        if self.kind == "class_balanced" and (
            self.batch_size != self.classes_per_batch * self.images_per_class
        ):
            raise ValueError(
                "--batch_size: the class-balanced sampler needs batch_size = "
                "classes_per_batch * images_per_class = "
                f"{self.classes_per_batch * self.images_per_class}, "
                f"got {self.batch_size}."
            )


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """How long a run trains and how often it validates, checkpoints and logs.

    Attributes:
        steps: training steps.
        eval_every: validation period in steps (0 = only at the end).
        checkpoint_every: checkpoint period in steps (a checkpoint is also written at
            every validation and at the end).
        keep_checkpoints: how many of the latest checkpoints to keep.
        log_every: console and TensorBoard period in steps.
    """

    steps: int = setting(
        1000,
        flag_default=0,
        help="Training steps (0: use --epochs).",
        bound=OPTIONAL_COUNT,
        minimum=1,
        resume=CHANGEABLE,
    )
    eval_every: int = setting(
        0, help="Validation period (0: end only).", bound=OPTIONAL_COUNT, resume=CHANGEABLE
    )
    checkpoint_every: int = setting(
        500, help="Checkpoint period in steps.", bound=COUNT, resume=FREE
    )
    keep_checkpoints: int = setting(
        3, help="Latest checkpoints to keep.", bound=Bound(1, 10**4), resume=FREE
    )
    log_every: int = setting(50, help="Logging period in steps.", bound=COUNT, resume=FREE)

    def __post_init__(self):
        settings.check(self)


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """Validation (checkpoint selection) and the protocol of validation and the test.

    Attributes:
        validation_size: validation queries carved from the training split (their
            database is the rest of the training split, which is also what trains);
            -1 (the default): `validation_count`'s choice, which scales with the split;
            0: none (the final weights are kept). A carve that leaves less than half
            of the split to train on is refused.
        validation_database: what the validation queries are ranked against: "train",
            the rest of the training split (the items the head is fitted to), or
            "heldout", as many more items carved from the split and not trained on
            either (the database the test ranks against is mostly unseen items too).
        select_on: "validation" or "test" (the originals' test-set selection; results
            are then labelled as selected on test).
        topk: mAP cut-off R (None = the dataset's protocol value; 0 = all).
        empty: evaluation policy for queries with no relevant item ("zero" or "skip";
            WSDHQ's published numbers skip them).
        ties: evaluation order within equal distance (`EvalProtocol.ties`); "random"
            ties are seeded by the protocol's default seed, not by the run's seed.
    """

    validation_size: int = setting(
        -1,
        bound=Bound(-1, 10**9),
        help="Validation queries carved from the training split, for checkpoint selection: "
        "-1 (a tenth of the split, at most 500), 0 (none: the final weights are kept) or a "
        "count; a carve that leaves less than half of the split to train on is refused.",
    )
    validation_database: str = setting(
        "train",
        choices=VALIDATION_DATABASES,
        unrecorded="train",
        help="What validation queries are ranked against: the rest of the training split, "
        "or 'heldout': as many more items carved from it and not trained on (unseen, like "
        "most of a test database).",
    )
    select_on: str = setting("validation", choices=SELECT_ON, help="Checkpoint selection.")
    topk: int | None = setting(
        None, kind="string", help="mAP cut-off R: an integer or 'all' (default: protocol)."
    )
    empty: str = setting(
        EvalProtocol.empty,
        flag_choices=EMPTY_POLICIES,
        help="Queries with no relevant item: AP 0 or skipped.",
    )
    ties: str = setting(
        EvalProtocol.ties,
        flag_choices=TIE_POLICIES,
        unrecorded=EvalProtocol.ties,
        help="Order within equal distance in validation and the test evaluation "
        "(docs/evaluation.md).",
    )

    def __post_init__(self):
        settings.check(self)
        check_empty_policy(self.empty)
        check_tie_policy(self.ties)

    def protocol(self, dataset_topk: int | None) -> EvalProtocol:
        """The protocol of validation and of the test evaluation: R (`topk`, else the
        dataset's `dataset_topk`), `ties` and `empty`, with the tie bounds and without
        the radius curve (the run's metrics keep none)."""
        topk = dataset_topk if self.topk is None else (self.topk or None)
        return EvalProtocol(
            topk=topk, ties=self.ties, empty=self.empty, tie_bounds=True, radius_curve=False
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; `wsdhash.train` fills it from flags.

    The settings live in groups, each documenting its own: `data` (`DataConfig`),
    `model` (`ModelConfig`), `method` (`MethodConfig`), `sampler` (`SamplerConfig`),
    `optimizer` (`OptimizerConfig`), `schedule` (`ScheduleConfig`) and `evaluation`
    (`EvaluationConfig`). A group adds no name to its settings (`settings.group`):
    `config.model.bits` is the setting "bits" (flag --hash_bit), recorded flat in
    run_info.json (`to_flat_dict`); the optimizer's are "optimizer.<name>".

    Attributes:
        seed: seeds the model, the data order, the augmentation and the loss.
        workdir: checkpoints, logs, codes file and metrics go here.
    """

    data: DataConfig = settings.group(DataConfig)
    model: ModelConfig = settings.group(ModelConfig)
    method: MethodConfig = settings.group(MethodConfig)
    sampler: SamplerConfig = settings.group(SamplerConfig)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = settings.group(ScheduleConfig)
    evaluation: EvaluationConfig = settings.group(EvaluationConfig)
    seed: int = setting(0, help="Seeds everything.")  # range: flag_bounds (shared)
    workdir: str = setting(
        "checkpoints/run",
        kind="string",
        flag_default=None,
        help="Run folder (default: checkpoints/<run name>).",
        resume=FREE,
    )

    def __post_init__(self):
        settings.check(self)  # each group checks its own settings


def to_flat_dict(config: TrainConfig) -> dict[str, Any]:
    """The flat form of `config`, which `run_info.json`'s "config" holds: every
    setting under its key ("bits", "method_options"; the optimizer's in "optimizer")."""
    return settings.to_flat_dict(config)


def config_from_dict(values: dict) -> TrainConfig:
    """Rebuilds a `TrainConfig` from its flat form (`run_info.json`'s "config" entry,
    read through `upgrade_recorded`); a setting it lacks (recorded before the setting
    existed) takes its default.

    Raises:
        TypeError: a key that is no setting.
    """
    return settings.from_flat_dict(TrainConfig, upgrade_recorded(values))


def upgrade_recorded(values: dict) -> dict:
    """A stored flat config in today's form. Settings that runs recorded at the top
    level before they became a method's `Option`s (`Option.recorded_as`: WSDHQ's
    "quantizer" and "quantizer_update_every") move into "method_options" for that
    method's runs and are dropped from other methods' runs, which never read them.
    `values` itself is not changed."""
    from wsdhash.methods import METHODS  # no TensorFlow

    moved = {}
    for name in METHODS.names():
        for option in METHODS.get(name).options:
            if option.recorded_as:
                moved.setdefault(option.recorded_as, []).append((name, option.argument))
    if not moved.keys() & values.keys():
        return values
    upgraded = {k: v for k, v in values.items() if k not in moved}
    options = dict(upgraded.get("method_options") or {})
    for key, owners in moved.items():
        for method, argument in owners:
            if key in values and method == values.get("method"):
                options.setdefault(argument, values[key])
    upgraded["method_options"] = options
    return upgraded


VALIDATION_CAP = 500


def carved_count(train_size: int, validation_size: int, validation_database: str) -> int:
    """How many items of a training split of `train_size` the validation takes away
    from training: the queries, and with a "heldout" database as many again."""
    count = validation_count(train_size, validation_size)
    return 2 * count if validation_database == "heldout" else count


def validation_count(train_size: int, validation_size: int) -> int:
    """The number of validation queries carved from a training split of `train_size`
    items: `validation_size` itself, or with -1 (auto) a tenth of the split, at most
    500 (the published protocols' 500 queries whenever the split has 5,000 items or
    more)."""
    if validation_size >= 0:
        return validation_size
    return min(VALIDATION_CAP, train_size // 10)
