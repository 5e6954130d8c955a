"""The training loop: read top to bottom, one banner-marked section per stage.

`train(config)` trains a hashing model with a registered loss under a `tf.distribute`
strategy, selects checkpoints on validation queries carved from the training data,
and finishes by encoding the query and database splits into a codes file and a
metrics JSON in the workdir. An interrupted run started again with the same workdir
resumes from its last checkpoint: weights, optimiser state, step, data position and
checkpoint selection.

Reliability rules:

* One training per workdir: `train` holds an exclusive lock on it (`file_lock`).
* A resumed run must have the settings it was started with (`run_info.json`'s
  "config"): `run_info.check_resume` refuses other ones, listing them, except the
  fields in `run_info.RESUME_FREE_FIELDS`, and the `RESUME_CHANGEABLE` ones when the
  caller allows them (`train(allow_changes=...)`, `--resume_with_changes`); `steps`
  may then only grow.
* The checkpoint of a validation step is written before validating, and a run resumed
  at a validation step validates it again, so a failure or a kill during validation
  loses neither the training since the last checkpoint nor that validation.
* Image files: every image of the splits must be a file with an image header that
  OpenCV recognises, checked at start-up (`check_image_files`): a missing or non-image
  file stops the run before training, naming it. An image that passes this check but
  still does not decode (a truncated body) stops the run when it is read, naming the
  file; the last checkpoint is kept, and after fixing the file the run resumes.
  Images are never skipped: evaluation needs a code for every query and database item,
  and skipping training items would make resuming inexact.
* A training split whose labels (or tags) are all zero is refused: every loss would
  be 0 and nothing would train.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import gc
import math
import os
import re
import time
import traceback
from collections.abc import Iterable, Iterator
from typing import Any

import cv2
import keras
import numpy as np
import tensorflow as tf
from absl import logging

from wsdhash import atomic_files, file_lock
from wsdhash.data import datasets, features_file, pipeline
from wsdhash.data.list_files import SplitData
from wsdhash.data.preprocessing import CorruptImageError
from wsdhash.eval import (
    write_codes_file,
)
from wsdhash.losses.class_balanced_sampler import ClassBalancedSampler
from wsdhash.methods import METHODS
from wsdhash.models import build_backbone, build_hashing_model
from wsdhash.models.backbones import FEATURES, features_backbone
from wsdhash.models.normalization import ImageNormalization
from wsdhash.training import run_info
from wsdhash.training.checkpoints import CheckpointKeeper
from wsdhash.training.optimization import GroupedOptimizer, OptimizerConfig
from wsdhash.training.run_info import check_resume

SELECT_ON = ("validation", "test")


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
        eval_every: validation period in steps (0 = only at the end).
        checkpoint_every: checkpoint period in steps (a checkpoint is also written at
            every validation and at the end).
        keep_checkpoints: how many of the latest checkpoints to keep.
        validation_size: validation queries carved from the training split (their
            database is the rest of the training split, which is also what trains).
        select_on: "validation" or "test" (the originals' test-set selection; results
            are then labelled as selected on test).
        topk: mAP cut-off R (None = the dataset's protocol value; 0 = all).
        mixed_precision: "none" or "bfloat16" (no loss scaling needed).
        log_every: console and TensorBoard period in steps.
        sampler: "uniform" (seeded shuffle) or "class_balanced" (P classes x Q images
            per batch, single-label data; DNNH re-implementation).
        classes_per_batch, images_per_class: P and Q of the class-balanced sampler; the
            batch size must be P * Q.
        tag_dir: WSDHQ: the output folder of `python -m wsdhash.tags`.
        quantizer_update_every: WSDHQ: steps between quantizer updates (0 = 2 epochs).
        quantizer: WSDHQ: "additive" (the original's) or "product" (PQ on the
            hypersphere); the loss's quantization form must match (quantized.py).
        normalization: input normalisation (NORMALIZATIONS name); "" = the backbone's.
        empty: evaluation policy for queries with no relevant item ("zero" or "skip";
            WSDHQ's published numbers skip them).
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
    eval_every: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    validation_size: int = 500
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
    empty: str = "zero"

    def __post_init__(self):
        if self.select_on not in SELECT_ON:
            raise ValueError(f"--select_on must be one of {SELECT_ON}, got {self.select_on!r}.")
        if self.supervision not in ("labels", "tags"):
            raise ValueError(f"--supervision must be 'labels' or 'tags', got {self.supervision!r}.")
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


# The smallest value of TrainConfig's integer fields, and the flags that set them.
_MINIMUMS = {
    "steps": 1, "batch_size": 1, "bits": 1, "checkpoint_every": 1, "log_every": 1,
    "keep_checkpoints": 1, "eval_every": 0, "validation_size": 0,
    "quantizer_update_every": 0, "classes_per_batch": 1, "images_per_class": 1,
}  # fmt: skip
_FLAG_NAMES = {"bits": "hash_bit"}


def gather_across_replicas(context: tf.distribute.ReplicaContext, values: tf.Tensor) -> tf.Tensor:
    """Concatenates every replica's (B, ...) values in replica order: (replicas * B, ...).

    Written as a SUM all-reduce of one-hot placed copies rather than with
    `ReplicaContext.all_gather`, whose gradient fails under
    MultiWorkerMirroredStrategy ("destinations can not be empty", TF 2.21). The
    gradient of the all-reduce sums every replica's upstream gradient for the local
    slice, which is exactly what the pairwise terms need. Costs replicas x the memory
    of `values`, which are small (codes and labels).
    """
    replicas = context.num_replicas_in_sync
    if replicas == 1:
        return values
    placement = tf.one_hot(context.replica_id_in_sync_group, replicas, dtype=values.dtype)
    placed = tf.reshape(placement, [replicas] + [1] * values.shape.rank) * values[None]
    # placed: (replicas, B, ...), zero except at this replica's row.
    gathered = context.all_reduce(tf.distribute.ReduceOp.SUM, placed)
    return tf.reshape(gathered, tf.concat([[-1], tf.shape(values)[1:]], 0))


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# -----------------------------------------------------------------------------
# Model
# -----------------------------------------------------------------------------


def build_model(config: TrainConfig, sync_batch_norm: bool = False, output_dim: int | None = None):
    """The model a run trains: uint8 images -> normalisation -> backbone -> head.

    Returns:
        (model, backbone spec, hashing model without the normalisation layer).
    """
    if config.backbone == FEATURES:  # precomputed features; the dataset is the file
        feature_dim = features_file.read_attributes(config.data_dir)["feature_dim"]
        backbone = features_backbone(int(feature_dim))
    else:
        backbone = build_backbone(
            config.backbone,
            weights=config.weights,
            crop_size=config.crop_size or None,
            allow_pickle=config.allow_pickle,
            seed=config.seed,
        )
    output_dim = output_dim or model_output_dim(config)
    hashing = build_hashing_model(backbone, config.head, output_dim, seed=config.seed)
    if sync_batch_norm:
        # Batch statistics over the global batch, so replicas train like one device.
        for layer in hashing._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
    normalization = config.normalization or backbone.normalization
    input_dtype = "uint8"
    if config.backbone == FEATURES:  # normalised at extraction; the input is used as is
        normalization, input_dtype = backbone.normalization, "float32"
    return with_normalization(hashing, normalization, input_dtype), backbone, hashing


def model_output_dim(config: TrainConfig) -> int:
    """The width of the model's output, as the run's method says (K for binary codes;
    WSDHQ's tag-embedding dimension D)."""
    return METHODS.get(config.method)(config).output_dim()


def pipeline_config_for(config: TrainConfig, backbone) -> pipeline.PipelineConfig:
    if config.backbone == FEATURES:  # crops (and their 10-crop mean) fixed at extraction
        return pipeline.PipelineConfig(image_size=1, crop_size=1, normalization=None)
    return pipeline.PipelineConfig(
        image_size=config.image_size or max(backbone.image_size, backbone.crop_size),
        crop_size=config.crop_size or backbone.crop_size,
        normalization=None,  # uint8 crops; the model's first layer normalises.
        ten_crop=config.ten_crop,
    )


def config_from_dict(values: dict) -> TrainConfig:
    """Rebuilds a `TrainConfig` from `run_info.json`'s "config" entry."""
    values = dict(values)
    optimizer = OptimizerConfig(**{**values.pop("optimizer"), "boundaries": ()})
    return TrainConfig(**values, optimizer=optimizer)


# -----------------------------------------------------------------------------
# Run folder: lock, input files (resume settings: run_info.check_resume)
# -----------------------------------------------------------------------------

_held_locks: set[str] = set()


@contextlib.contextmanager
def workdir_lock(output_dir: str, what: str = "workdir") -> Iterator[None]:
    """Holds the exclusive lock on a run folder (`file_lock`); nested calls in one
    process (the command line around `train`) share it.

    Raises:
        file_lock.LockedError: another process holds it.
    """
    key = os.path.realpath(output_dir)
    if key in _held_locks:
        yield
        return
    with file_lock.exclusive(output_dir, what, folder=True):
        _held_locks.add(key)
        try:
            yield
        finally:
            _held_locks.discard(key)


def check_image_files(splits: Iterable[SplitData], show: int = 5) -> None:
    """Raises `CorruptImageError` naming the image files that are missing or whose
    header no OpenCV decoder recognises (OpenCV decodes the images in training).

    Reads a few bytes of each file (about 25 us each); truncated bodies are found when
    an image is decoded. OpenCV probes the files on a worker thread: on the main
    thread it changes the last bits of what oneDNN's kernels compute later in training
    (observed: 1e-6 differences in the weights, flipping quantization codes).
    """
    paths, seen = [], set()
    for split in splits:
        if split is None or split.features is not None:
            continue
        for path in map(str, split.paths):
            if path not in seen:
                seen.add(path)
                paths.append(path)

    def probe() -> list[str]:
        return [p for p in paths if not (os.path.isfile(p) and cv2.haveImageReader(p))]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        bad = pool.submit(probe).result()
    if bad:
        more = f" and {len(bad) - show} more" if len(bad) > show else ""
        raise CorruptImageError(
            f"{len(bad)} image file(s) missing or not an image: {', '.join(bad[:show])}{more}; "
            "fix or remove them (python -m wsdhash.data.prepare checks a dataset's images)."
        )


@contextlib.contextmanager
def _naming_undecodable_images(output_dir: str) -> Iterator[None]:
    """Turns the input pipeline's error for an undecodable image into a
    `CorruptImageError` naming the file and the checkpoint a rerun resumes from."""
    try:
        yield
    except tf.errors.OpError as error:
        match = re.search(r"Cannot decode image file: ([^\n]+)", error.message or "")
        if not match:
            raise
        latest = tf.train.latest_checkpoint(os.path.join(output_dir, "checkpoints"))
        raise CorruptImageError(
            f"Cannot decode image file: {match.group(1).strip()}; fix or remove it and run "
            f"again to resume from {latest or 'the start'}."
        ) from error


def with_normalization(
    hashing: keras.Model, normalization: str, input_dtype: str = "uint8"
) -> keras.Model:
    """uint8 images (float32 features) -> normalisation -> `hashing` -> relaxed codes."""
    images = keras.Input(hashing.input_shape[1:], dtype=input_dtype, name="image")
    codes = hashing(ImageNormalization(normalization, name="normalization")(images))
    return keras.Model(images, codes, name="wsdhash_model")


# -----------------------------------------------------------------------------
# Data
# -----------------------------------------------------------------------------


def carve_validation(train: SplitData, size: int, seed: int) -> tuple[SplitData, SplitData]:
    """Splits `size` seeded random items off the training split as validation queries.

    Returns:
        (the remaining training items, the validation queries).
    """
    if size <= 0:
        return train, None
    if size >= len(train):
        raise ValueError(
            f"--validation_size={size} leaves no training data ({len(train)} training items)."
        )
    held_out = np.sort(np.random.default_rng(seed).choice(len(train), size, replace=False))
    keep = np.setdiff1d(np.arange(len(train)), held_out)
    return train.take(keep, "train"), train.take(held_out, "validation")


def relevance_labels(split: SplitData) -> np.ndarray:
    """Ground-truth labels when the split has them, else its tags (weak supervision:
    validation then measures tag overlap, which is all a tags-only dataset offers)."""
    return split.labels if split.num_classes else split.tags


# -----------------------------------------------------------------------------
# Encoding and evaluation
# -----------------------------------------------------------------------------


class Encoder:
    """Relaxed codes of whole splits, in file order; 10-crop codes are averaged.

    One traced forward function per model (and shape), reused across calls.
    """

    def __init__(self, model: keras.Model, config: pipeline.PipelineConfig, batch_size: int):
        self.config, self.batch_size = config, batch_size

        @tf.function(reduce_retracing=True)
        def forward(images):
            if config.ten_crop:
                shape = tf.shape(images)
                flat = tf.reshape(images, tf.concat([[-1], shape[2:]], 0))
                codes = tf.cast(model(flat, training=False), tf.float32)
                return tf.reduce_mean(tf.reshape(codes, [shape[0], 10, -1]), axis=1)
            return tf.cast(model(images, training=False), tf.float32)

        self._forward = forward

    def batches(self, split: SplitData):
        """The split's codes batch by batch, in file order."""
        dataset = pipeline.make_dataset(
            split, self.config, training=False, batch_size=self.batch_size
        )
        for batch in dataset:
            yield self._forward(batch["image"]).numpy()

    def __call__(self, split: SplitData) -> np.ndarray:
        return np.concatenate(list(self.batches(split)))


# -----------------------------------------------------------------------------
# Training
# -----------------------------------------------------------------------------


def train(
    config: TrainConfig,
    strategy: tf.distribute.Strategy | None = None,
    allow_changes: Iterable[str] = (),
) -> dict:
    """Trains, selects, evaluates; returns the final metrics (also in metrics.json).

    Args:
        allow_changes: `TrainConfig` fields a resumed run may change (see
            `check_resume`).

    Raises:
        file_lock.LockedError: another process trains in the workdir.
        run_info.ResumeMismatchError: the workdir holds a run with other settings.
    """
    strategy = strategy or tf.distribute.get_strategy()
    output_dir = output_dir_for(config.workdir, strategy)
    os.makedirs(output_dir, exist_ok=True)
    with workdir_lock(output_dir), _naming_undecodable_images(output_dir):
        try:
            return _train(config, strategy, output_dir, tuple(allow_changes))
        except BaseException as error:
            _release_frames(error)
            raise


def _release_frames(error: BaseException) -> None:
    """Drops the local variables of the frames a failed run's traceback holds (input
    pipelines, their iterators, the model), so that TensorFlow's iterator threads stop
    now rather than at interpreter shutdown, where they can hang or abort the exit.
    The traceback still prints (files, lines and code are kept)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__
    gc.collect()


def _train(
    config: TrainConfig, strategy: tf.distribute.Strategy, output_dir: str, allow_changes
) -> dict:
    resume = check_resume(config, output_dir, allow_changes)
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")

    # --- Data ---------------------------------------------------------------
    dataset = datasets.get_dataset(config.dataset, config.data_dir, **config.dataset_options)
    train_split, validation = carve_validation(
        dataset.split("train"), config.validation_size, config.seed
    )
    targets_key = config.supervision
    method = METHODS.get(config.method)(config)
    train_split, validation = method.prepare_splits(train_split, validation)
    targets = getattr(train_split, targets_key)
    other = "tags" if config.supervision == "labels" else "labels"
    if targets.shape[1] == 0:
        raise ValueError(
            f"Dataset {config.dataset!r} has no training {config.supervision}; "
            f"use --supervision={other}."
        )
    if not np.any(targets):
        raise ValueError(
            f"Dataset {config.dataset!r} ({config.data_dir}): every item of its training "
            f"split has all-zero {config.supervision}, so the loss would be 0 and nothing "
            f"would train; check its list files (--data_dir) or use --supervision={other}."
        )
    if config.backbone != FEATURES:
        check_image_files([dataset.split(name) for name in ("train", "query", "database")])
    topk = dataset.topk if config.topk is None else (config.topk or None)

    # --- Model, loss, optimiser (created in the strategy's scope) -------------
    with strategy.scope():
        model, backbone, hashing = build_model(
            config, sync_batch_norm=strategy.num_replicas_in_sync > 1,
            output_dim=method.output_dim(),
        )  # fmt: skip
        loss_layer = method.build_loss(targets.shape[1])
        output_dim = model.output_shape[-1]
        loss_layer(
            tf.zeros([1, output_dim]), tf.zeros([1, targets.shape[1]])
        )  # Builds its variables (e.g. HyP2 proxies) before the optimiser sees them.
        backbone_variables = hashing.backbone.trainable_variables
        head_variables = [
            v for v in model.trainable_variables if not any(v is b for b in backbone_variables)
        ] + list(loss_layer.trainable_variables)
        optimizer = GroupedOptimizer(config.optimizer, backbone_variables, head_variables)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")

    pipeline_config = pipeline_config_for(config, backbone)

    # --- Checkpoints and resume ------------------------------------------------
    keeper = CheckpointKeeper(
        os.path.join(output_dir, "checkpoints"),
        keep=config.keep_checkpoints,
        model=model,
        loss=loss_layer,
        step=step,
        **optimizer.optimizers,
    )
    restored = keeper.restore_latest()
    method.after_restore(loss_layer)
    start = int(step.numpy())
    resumes = []
    if restored:
        logging.info("Resumed from %s at step %d.", restored, start)
        resumes = run_info.read_resumes(output_dir)
        if resume and resume[1]:
            logging.warning("Resumed with changed settings: %s.", "; ".join(map(str, resume[1])))
            changes = {change.field: [change.stored, change.new] for change in resume[1]}
            resumes.append({"step": start, "changes": changes})
    run_info.write_run_info(output_dir, config, resumes=resumes)

    num_pipelines = max(strategy.num_replicas_in_sync // _replicas_per_worker(strategy), 1)

    index_stream = None
    if config.sampler == "class_balanced":
        sampler = ClassBalancedSampler(
            train_split.labels,
            classes_per_batch=config.classes_per_batch,
            images_per_class=config.images_per_class,
            seed=config.seed,
        )

        def index_stream():
            for batch in sampler:
                yield from batch

    def input_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return pipeline.make_dataset(
            train_split,
            pipeline_config,
            training=True,
            batch_size=config.batch_size,
            seed=config.seed,
            input_context=context,
            skip_elements=start * config.batch_size // num_pipelines,
            index_stream=index_stream,
        )

    iterator = iter(strategy.distribute_datasets_from_function(input_fn))
    global_batch = float(config.batch_size)

    # --- One step --------------------------------------------------------------
    @tf.function
    def train_step(iterator):
        def step_fn(batch):
            context = tf.distribute.get_replica_context()
            with tf.GradientTape() as tape:
                codes = tf.cast(model(batch["image"], training=True), tf.float32)
                labels = batch[targets_key]
                # References from every replica, so pairwise terms see the global batch;
                # gradients flow back to the replica that owns each code.
                terms = loss_layer(
                    codes,
                    labels,
                    ref_codes=gather_across_replicas(context, codes),
                    ref_labels=gather_across_replicas(context, labels),
                    anchor_offset=context.replica_id_in_sync_group * tf.shape(codes)[0],
                    **method.loss_inputs(batch),
                )
                loss = tf.reduce_sum(terms["loss"]) / global_batch
            gradients = tape.gradient(loss, optimizer.variables)
            optimizer.apply(gradients)
            return {name: tf.reduce_sum(value) / global_batch for name, value in terms.items()}

        per_replica = strategy.run(step_fn, args=(next(iterator),))
        return {
            name: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
            for name, value in per_replica.items()
        }

    # --- Validation --------------------------------------------------------------
    encode = Encoder(model, pipeline_config, max(config.batch_size, 32))

    def evaluate_test():
        query, database = dataset.split("query"), dataset.split("database")
        features = {"query": encode(query), "database": encode(database)}
        result = method.evaluate(
            features["query"], query.labels, features["database"], database.labels, topk,
            config.empty,
        )  # fmt: skip
        return result, features

    def validate() -> dict[str, float]:
        scores = {}
        if validation is not None:
            result = method.evaluate(
                encode(validation),
                relevance_labels(validation),
                encode(train_split),
                relevance_labels(train_split),
                topk,
                config.empty,
            )
            scores["validation"] = result.map
            scores["validation_name"] = result.map_name
        if config.select_on == "test":
            result = evaluate_test()[0]
            scores["test"] = result.map
            scores["test_name"] = result.map_name
        return scores

    # --- Loop ----------------------------------------------------------------------
    writer = tf.summary.create_file_writer(os.path.join(output_dir, "logs"))

    def is_validation_step(current: int) -> bool:
        return bool(config.eval_every and current % config.eval_every == 0) or (
            current == config.steps
        )

    def validate_and_select(current: int) -> None:
        """Validates the state of step `current`, whose checkpoint is written."""
        scores = validate()
        with writer.as_default(step=current):
            for name in ("validation", "test"):
                if name in scores:
                    tf.summary.scalar(f"map/{name}", scores[name])
        name = config.select_on
        if name in scores and keeper.offer_best(current, scores[name], name):
            logging.info("step %d: new best %s mAP %.4f", current, name, scores[name])

    if restored and (is_validation_step(start) or (resume and start == resume[0]["steps"])):
        # Stopped during (or right after) this step's validation: it is run again
        # (a repeat changes nothing: the score must beat the best to count).
        validate_and_select(start)
    progress = _Progress(config.steps, start)
    while int(step.numpy()) < config.steps:
        terms = train_step(iterator)
        step.assign_add(1)
        current = int(step.numpy())
        values = {name: float(value) for name, value in terms.items()}
        if not math.isfinite(values["loss"]):
            raise NonFiniteLossError(
                f"Loss is {values['loss']} at step {current}; stopping. The last good "
                f"checkpoint in {keeper.directory} is kept ({keeper.latest.latest_checkpoint})."
            )
        if current % config.log_every == 0 or current == config.steps:
            progress.report(current, values)
            with writer.as_default(step=current):
                for name, value in values.items():
                    tf.summary.scalar(f"loss/{name}", value)
                for name, rate in optimizer.learning_rates(current - 1).items():
                    tf.summary.scalar(f"learning_rate/{name}", rate)
        method.after_step(current, lambda: encode(train_split), loss_layer)
        if is_validation_step(current):
            keeper.save(current)  # first: a failure in validation loses no training
            validate_and_select(current)
        elif current % config.checkpoint_every == 0:
            keeper.save(current)
    writer.flush()

    # --- Final evaluation with the selected checkpoint -----------------------------
    selected = keeper.restore_best()
    method.before_final(lambda: encode(train_split), loss_layer)
    result, features = evaluate_test()
    query, database = dataset.split("query"), dataset.split("database")
    contents = method.codes_file(query, features["query"], database, features["database"])
    write_codes_file(os.path.join(output_dir, "codes.h5"), contents)
    metrics = {
        **result.to_dict(include_radius_curve=False),
        "selected_on": config.select_on,
        "selected_checkpoint": selected,
        "best_selection_score": keeper.best_score(),
        "steps": config.steps,
    }
    if config.select_on == "test":
        metrics["note"] = (
            "checkpoint selected on the test queries, as the original code does; "
            "optimistic compared with validation selection"
        )
    atomic_files.write_json(os.path.join(output_dir, "metrics.json"), metrics)
    logging.info("%s = %.4f (selected on %s)", result.map_name, result.map, config.select_on)
    return metrics


def _replicas_per_worker(strategy: tf.distribute.Strategy) -> int:
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return len(strategy.extended.worker_devices)
    return strategy.num_replicas_in_sync


def _worker_role(strategy: tf.distribute.Strategy) -> tuple[bool, int]:
    """(is this the chief, task id); a single-process run is its own chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True, 0
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0), task_id


def output_dir_for(workdir: str, strategy: tf.distribute.Strategy) -> str:
    """Where this process writes. Every worker of a multi-worker run must take part in
    saving checkpoints, but only the chief's outputs are kept: the others write to a
    throw-away folder of their own inside the workdir."""
    chief, task_id = _worker_role(strategy)
    return workdir if chief else os.path.join(workdir, f".worker_{task_id}")


class _Progress:
    """A one-line progress bar with the loss terms, images/s and time left."""

    def __init__(self, total: int, start: int):
        self.total, self.start, self.started = total, start, time.perf_counter()

    def report(self, current: int, values: dict[str, float]) -> None:
        elapsed = time.perf_counter() - self.started
        done = max(current - self.start, 1)
        left = elapsed / done * (self.total - current)
        width = 20
        filled = int(width * current / self.total)
        bar = "#" * filled + "." * (width - filled)
        terms = " ".join(f"{name}={value:.4f}" for name, value in sorted(values.items()))
        logging.info(
            "[%s] step %d/%d %s (%.1f steps/s, %.0f s left)",
            bar, current, self.total, terms, done / max(elapsed, 1e-9), left,
        )  # fmt: skip
