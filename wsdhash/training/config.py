"""The settings of one training run: `TrainConfig`, filled by `wsdhash.train` from
flags and stored in the run's `run_info.json` (which `config_from_dict` reads back for
resuming and export). Importing it does not import TensorFlow."""

from __future__ import annotations

import dataclasses
from typing import Any

from wsdhash.eval.protocol import EvalProtocol, check_empty_policy, check_tie_policy

OPTIMIZERS = ("sgd", "adam")


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

    name: str = "sgd"
    learning_rate: float = 0.01
    backbone_lr_multiplier: float = 1.0
    momentum: float = 0.9
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    weight_decay: float = 0.0
    boundaries: tuple[int, ...] = ()
    decay: float = 0.1

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"Unknown optimizer {self.name!r}; expected one of {OPTIMIZERS}.")
        if list(self.boundaries) != sorted(self.boundaries):
            raise ValueError(f"Learning-rate boundaries must increase: {self.boundaries}.")

    def learning_rate_at(self, step: int, multiplier: float = 1.0) -> float:
        """The learning rate of update number `step` (0-based): decayed once for every
        boundary <= step, as PyTorch's StepLR does at epoch boundaries."""
        passed = sum(1 for boundary in self.boundaries if step >= boundary)
        return self.learning_rate * multiplier * self.decay**passed


SELECT_ON = ("validation", "test")
DATA_FORMATS = ("files", "tfrecord", "tfrecord_stream")
VALIDATION_DATABASES = ("train", "heldout")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; `wsdhash.train` fills it from flags.

    Attributes:
        dataset, data_dir, dataset_options: the registered dataset and its options.
        backbone, weights, allow_pickle, head, bits: the model.
        method, method_options: the registered loss and its hyperparameters.
        supervision: "labels" (ground-truth classes) or "tags" (user tags).
        batch_size: the global batch size.
        steps: training steps.
        optimizer: see `OptimizerConfig`.
        seed: seeds the model, the data order, the augmentation and the loss.
        workdir: checkpoints, logs, codes file and metrics go here.
        image_size, crop_size: override the backbone's defaults (0 = keep).
        ten_crop: evaluation averages the codes of WSDHQ's 10 crops.
        augment: the training augmentation (`preprocessing.AUGMENTATIONS` name:
            random_crop_flip, center_crop, resize, resize_flip); run_info.json files
            written before it existed resume with "random_crop_flip", the only one then.
        eval_every: validation period in steps (0 = only at the end).
        checkpoint_every: checkpoint period in steps (a checkpoint is also written at
            every validation and at the end).
        keep_checkpoints: how many of the latest checkpoints to keep.
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
        mixed_precision: "none" or "bfloat16" (no loss scaling needed).
        log_every: console and TensorBoard period in steps.
        sampler: "uniform" (seeded shuffle) or "class_balanced" (P classes x Q images
            per batch, single-label data; DNNH re-implementation).
        classes_per_batch, images_per_class: P and Q of the class-balanced sampler; the
            batch size must be P * Q.
        tag_dir: the output folder of `python -m wsdhash.tags`. With supervision "tags"
            every method trains on its merged tags (TagIdMergeMap.json) instead of the
            raw tag columns; WSDHQ, which needs it, also reads its tag embeddings.
        quantizer_update_every: WSDHQ: steps between quantizer updates (0 = 2 epochs, at
            least `wsdhq_quantizer.MIN_DEFAULT_PERIOD` = 100 steps).
        quantizer: WSDHQ: "additive" (the original's) or "product" (PQ on the
            hypersphere); the loss's quantization form must match (quantized.py).
        normalization: input normalisation (NORMALIZATIONS name); "" = the backbone's.
        empty: evaluation policy for queries with no relevant item ("zero" or "skip";
            WSDHQ's published numbers skip them).
        ties: evaluation order within equal distance (`EvalProtocol.ties`); "random"
            ties are seeded by the protocol's default seed, not by `seed`.
        head_init: "" (the head's own initialiser) or a registered baseline the head
            starts from, fitted on the training split's backbone features
            (wsdhash/training/head_init.py).
        data_format: where training images are read: "files" (each image's file),
            "tfrecord" (records of the TFRecord shards in `tfrecords`, looked up in the
            files' order: the same batches as "files") or "tfrecord_stream" (the shards
            read sequentially, interleaved, through a bounded shuffle buffer: another
            order). Evaluation reads files. run_info.json files written before it
            existed resume with "files" (docs/tfrecords.md).
        tfrecords: the shards folder (`python -m wsdhash.pipeline tfrecords`); "" with
            "files".
    """

    dataset: str = "builtin"
    data_dir: str = "data/builtin"
    dataset_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    backbone: str = "small_cnn"
    weights: str = "none"
    allow_pickle: bool = False
    head: str = "linear_bn"
    bits: int = 32
    method: str = "orthohash"
    method_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    supervision: str = "labels"
    batch_size: int = 64
    steps: int = 1000
    optimizer: OptimizerConfig = OptimizerConfig()
    seed: int = 0
    workdir: str = "checkpoints/run"
    image_size: int = 0
    crop_size: int = 0
    ten_crop: bool = False
    augment: str = "random_crop_flip"
    eval_every: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    validation_size: int = -1
    validation_database: str = "train"
    select_on: str = "validation"
    topk: int | None = None
    mixed_precision: str = "none"
    log_every: int = 50
    sampler: str = "uniform"
    classes_per_batch: int = 10
    images_per_class: int = 8
    tag_dir: str = ""
    quantizer_update_every: int = 0
    quantizer: str = "additive"
    normalization: str = ""
    empty: str = EvalProtocol.empty
    ties: str = EvalProtocol.ties
    head_init: str = ""
    data_format: str = "files"
    tfrecords: str = ""

    def __post_init__(self):
        if self.data_format not in DATA_FORMATS:
            raise ValueError(
                f"--data_format must be one of {DATA_FORMATS}, got {self.data_format!r}."
            )
        if (self.data_format == "files") == bool(self.tfrecords):
            raise ValueError(
                "--tfrecords=DIR (the shards) goes with --data_format=tfrecord or "
                f"tfrecord_stream, and only with them; got --data_format={self.data_format} "
                f"and --tfrecords={self.tfrecords!r}."
            )
        check_empty_policy(self.empty)
        check_tie_policy(self.ties)
        if self.select_on not in SELECT_ON:
            raise ValueError(f"--select_on must be one of {SELECT_ON}, got {self.select_on!r}.")
        if self.validation_database not in VALIDATION_DATABASES:
            raise ValueError(
                f"--validation_database must be one of {VALIDATION_DATABASES}, got "
                f"{self.validation_database!r}."
            )
        if self.supervision not in ("labels", "tags"):
            raise ValueError(f"--supervision must be 'labels' or 'tags', got {self.supervision!r}.")
        if self.tag_dir and self.supervision != "tags":
            raise ValueError(
                f"--tag_dir={self.tag_dir}: processed tags are training targets only with "
                "--supervision=tags."
            )
        if self.mixed_precision not in ("none", "bfloat16"):
            raise ValueError(
                f"--mixed_precision must be 'none' or 'bfloat16', got {self.mixed_precision!r}."
            )
        if self.sampler not in ("uniform", "class_balanced"):
            raise ValueError(
                f"--sampler must be 'uniform' or 'class_balanced', got {self.sampler!r}."
            )
        if self.sampler == "class_balanced" and (
            self.batch_size != self.classes_per_batch * self.images_per_class
        ):
            raise ValueError(
                "--batch_size: the class-balanced sampler needs batch_size = "
                "classes_per_batch * images_per_class = "
                f"{self.classes_per_batch * self.images_per_class}, "
                f"got {self.batch_size}."
            )
        for name, minimum in _MINIMUMS.items():
            value = getattr(self, name)
            if value < minimum:
                flag = _FLAG_NAMES.get(name, name)
                raise ValueError(f"--{flag} must be >= {minimum}, got {value}.")

    def evaluation_protocol(self, dataset_topk: int | None) -> EvalProtocol:
        """The protocol of validation and of the test evaluation: R (`topk`, else the
        dataset's `dataset_topk`), `ties` and `empty`, with the tie bounds and without
        the radius curve (the run's metrics keep none)."""
        topk = dataset_topk if self.topk is None else (self.topk or None)
        return EvalProtocol(
            topk=topk, ties=self.ties, empty=self.empty, tie_bounds=True, radius_curve=False
        )


# The smallest value of TrainConfig's integer fields, and the flags that set them.
_MINIMUMS = {
    "steps": 1, "batch_size": 1, "bits": 1, "checkpoint_every": 1, "log_every": 1,
    "keep_checkpoints": 1, "eval_every": 0, "validation_size": -1,
    "quantizer_update_every": 0, "classes_per_batch": 1, "images_per_class": 1,
}  # fmt: skip
_FLAG_NAMES = {"bits": "hash_bit"}


def config_from_dict(values: dict) -> TrainConfig:
    """Rebuilds a `TrainConfig` from `run_info.json`'s "config" entry."""
    values = dict(values)
    optimizer = OptimizerConfig(**{**values.pop("optimizer"), "boundaries": ()})
    return TrainConfig(**values, optimizer=optimizer)


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
