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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import cv2
import keras
import numpy as np
import tensorflow as tf
from absl import logging

from wsdhash import atomic_files, file_lock
from wsdhash.data import datasets, pipeline, tfrecords
from wsdhash.data.preprocessing import CorruptImageError
from wsdhash.data.samplers import ClassBalancedSampler
from wsdhash.data.types import SplitData
from wsdhash.eval import write_codes_file
from wsdhash.methods import METHODS
from wsdhash.model_fingerprint import weights_fingerprint
from wsdhash.models.assembly import backbone_features_model, build_model, with_backbone_features
from wsdhash.models.encoder import Encoder
from wsdhash.models.heads import split_hashing_model
from wsdhash.tagging import files as tag_files
from wsdhash.training import head_init, run_info
from wsdhash.training.checkpoints import CheckpointKeeper
from wsdhash.training.config import VALIDATION_CAP, TrainConfig, carved_count, validation_count
from wsdhash.training.optimization import GroupedOptimizer
from wsdhash.training.run_info import check_resume


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


class ValidationCarveError(ValueError):
    """--validation_size asks for more validation queries than the split can spare."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def non_finite_message(config: TrainConfig, loss: float, step: int, keeper) -> str:
    """What stopped the run, what was kept and what to change: most divergences are a
    learning rate too high for the model being trained (e.g. a published end-to-end
    rate used for a head on frozen features)."""
    latest = keeper.latest.latest_checkpoint
    kept = (
        f"the last good checkpoint {latest} is kept" if latest else "no checkpoint was written yet"
    )
    rate = config.optimizer.learning_rate
    hint = f"lower --lr (now {rate:g}; try {rate / 10:g})"
    if config.model.backbone == "features":
        hint += " or drop the flags that override the features recipe (--recipe)"
    return f"Loss is {loss} at step {step}; stopping ({kept}). To fix: {hint}."


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


# -----------------------------------------------------------------------------
# Data
# -----------------------------------------------------------------------------


def carve_validation(
    train: SplitData, size: int, seed: int, database: str = "train"
) -> tuple[SplitData, SplitData | None, SplitData | None]:
    """Splits seeded random items off the training split as validation queries:
    `validation_count(len(train), size)` of them (-1: a tenth, at most 500); with
    `database="heldout"`, as many more as their database.

    Returns:
        (the remaining training items, the validation queries or None, the held-out
        validation database or None: then the queries rank against the training items).

    Raises:
        ValidationCarveError: the carve would leave less than half of the split to
            train on.
    """
    queries = validation_count(len(train), size)
    count = carved_count(len(train), size, database)
    if count <= 0:
        return train, None, None
    if 2 * count > len(train):
        held = "" if count == queries else " (and as many held-out database items)"
        raise ValidationCarveError(
            f"--validation_size={queries}{held} would leave {len(train) - count} of the "
            f"{len(train)} training items to train on, less than half; use at most "
            f"{len(train) // 2 * queries // count}, -1 (a tenth of the split, at most {VALIDATION_CAP}) or 0 "
            "(no validation: the final weights are kept)."
        )
    # The queries are drawn first, so the same seed carves the same queries whatever
    # the database.
    rng = np.random.default_rng(seed)
    drawn = rng.choice(len(train), queries, replace=False)
    rest = np.setdiff1d(np.arange(len(train)), drawn)
    carved = np.concatenate([drawn, rng.choice(rest, count - queries, replace=False)])
    keep = np.setdiff1d(np.arange(len(train)), carved)
    logging.info(
        "Validation: %d queries carved from the %d training items (--validation_size=%d), "
        "ranked against %s.",
        queries,
        len(train),
        size,
        "the rest" if count == queries else f"{count - queries} more held-out items",
    )
    validation = train.take(np.sort(carved[:queries]), "validation")
    held_out = train.take(np.sort(carved[queries:]), "validation_database")
    return train.take(keep, "train"), validation, held_out if count > queries else None


def relevance_labels(split: SplitData) -> np.ndarray:
    """Ground-truth labels when the split has them, else its tags (weak supervision:
    validation then measures tag overlap, which is all a tags-only dataset offers)."""
    return split.labels if split.num_classes else split.tags


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
    run = _Run.start(config, strategy, output_dir, resume)
    _training_loop(run)
    return _final_evaluation(run)


@dataclasses.dataclass
class _Run:
    """What the stages of one training run share: its data, state, checkpoints,
    evaluation, summaries and input, positioned at step `start_step`."""

    config: TrainConfig
    output_dir: str
    data: _RunData
    state: _TrainingState
    keeper: CheckpointKeeper
    evaluation: _Evaluation
    encode: Encoder
    writer: Any
    iterator: Any
    train_step: Callable
    start_step: int
    restored: Any
    resume: Any

    @classmethod
    def start(cls, config: TrainConfig, strategy, output_dir: str, resume) -> _Run:
        keras.utils.set_random_seed(config.seed)
        if config.model.mixed_precision == "bfloat16":
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        data = _RunData.load(config)
        method = data.method
        state = _TrainingState.build(config, strategy, method, data.num_targets)
        pipeline_config = state.backbone.pipeline_config(
            config.data.image_size,
            config.data.crop_size,
            config.data.ten_crop,
            augment=config.data.augment,
        )
        keeper = CheckpointKeeper(
            os.path.join(output_dir, "checkpoints"),
            keep=config.schedule.keep_checkpoints,
            model=state.model,
            loss=state.loss,
            step=state.step,
            **state.optimizer.optimizers,
        )
        restored = keeper.restore_latest()
        if config.model.head_init and not restored:
            _initialize_head(config, state, data, pipeline_config)
        method.after_restore(state.loss)
        start = int(state.step.numpy())
        _record_start(config, output_dir, restored, start, resume)
        iterator = iter(
            strategy.distribute_datasets_from_function(
                _training_input(config, strategy, data, pipeline_config, start)
            )
        )
        train_step = _make_train_step(strategy, state, method, config)
        encode = Encoder(state.model, pipeline_config, max(config.sampler.batch_size, 32))
        return cls(
            config=config,
            output_dir=output_dir,
            data=data,
            state=state,
            keeper=keeper,
            evaluation=_Evaluation(config, data, encode),
            encode=encode,
            writer=tf.summary.create_file_writer(os.path.join(output_dir, "logs")),
            iterator=iterator,
            train_step=train_step,
            start_step=start,
            restored=restored,
            resume=resume,
        )

    def encode_train(self, rows=None) -> np.ndarray:
        """The model's outputs for the training split (or its `rows`, in that order)."""
        return self.encode(self.data.train if rows is None else self.data.train.take(rows))

    def is_validation_step(self, current: int) -> bool:
        config = self.config
        return bool(config.schedule.eval_every and current % config.schedule.eval_every == 0) or (
            current == config.schedule.steps
        )

    def validate_and_select(self, current: int) -> None:
        """Validates the state of step `current`, whose checkpoint is written."""
        scores = self.evaluation.selection_scores()
        with self.writer.as_default(step=current):
            for name in ("validation", "test"):
                if name in scores:
                    tf.summary.scalar(f"map/{name}", scores[name])
        name = self.config.evaluation.select_on
        if name in scores and self.keeper.offer_best(current, scores[name], name):
            logging.info("step %d: new best %s mAP %.4f", current, name, scores[name])


def _training_loop(run: _Run) -> None:
    """Steps from `run.start_step` to the last, with logging, checkpoints and validation."""
    config, state, keeper, method = run.config, run.state, run.keeper, run.data.method
    start, resume = run.start_step, run.resume
    if run.restored and (run.is_validation_step(start) or (resume and start == resume[0]["steps"])):
        # Stopped during (or right after) this step's validation: it is run again
        # (a repeat changes nothing: the score must beat the best to count).
        run.validate_and_select(start)
    progress = _Progress(config.schedule.steps, start)
    while int(state.step.numpy()) < config.schedule.steps:
        terms = run.train_step(run.iterator)
        state.step.assign_add(1)
        current = int(state.step.numpy())
        values = {name: float(value) for name, value in terms.items()}
        if not math.isfinite(values["loss"]):
            raise NonFiniteLossError(non_finite_message(config, values["loss"], current, keeper))
        if current % config.schedule.log_every == 0 or current == config.schedule.steps:
            progress.report(current, values)
            _write_summaries(run.writer, current, values, state.optimizer)
        method.after_step(current, run.encode_train, state.loss)
        if run.is_validation_step(current):
            keeper.save(current)  # first: a failure in validation loses no training
            run.validate_and_select(current)
        elif current % config.schedule.checkpoint_every == 0:
            keeper.save(current)
    run.writer.flush()


def _final_evaluation(run: _Run) -> dict:
    """The selected checkpoint on the test queries: codes.h5 and metrics.json."""
    config, data, method = run.config, run.data, run.data.method
    selected = run.keeper.restore_best()
    method.before_final(run.encode_train, run.state.loss)
    result, features = run.evaluation.test()
    query, database = data.dataset.split("query"), data.dataset.split("database")
    contents = method.codes_file(query, features["query"], database, features["database"])
    # Which network these codes are (the export records the same for its model).
    contents.model_fingerprint = weights_fingerprint(run.state.model)
    write_codes_file(os.path.join(run.output_dir, "codes.h5"), contents)
    # Without validation queries nothing is selected: the final weights are evaluated.
    selected_on = "final" if selected is None else config.evaluation.select_on
    metrics = {
        **result.to_dict(include_radius_curve=False),
        "selected_on": selected_on,
        "selected_checkpoint": selected,
        "best_selection_score": run.keeper.best_score(),
        "steps": config.schedule.steps,
    }
    if config.evaluation.select_on == "test":
        metrics["note"] = (
            "checkpoint selected on the test queries, as the original code does; "
            "optimistic compared with validation selection"
        )
    atomic_files.write_json(os.path.join(run.output_dir, "metrics.json"), metrics)
    logging.info("%s = %.4f (selected on %s)", result.map_name, result.map, selected_on)
    return metrics


# -----------------------------------------------------------------------------
# The stages of a run
# -----------------------------------------------------------------------------


@dataclasses.dataclass
class _RunData:
    """The run's dataset and method, with the training split as the method trains on
    it and the validation queries carved from it."""

    dataset: datasets.RetrievalDataset
    method: Any
    train: SplitData
    validation: SplitData | None
    # The items the validation queries rank against when not the training split.
    validation_database: SplitData | None = None

    @property
    def num_targets(self) -> int:
        return getattr(self.train, self.method.config.method.supervision).shape[1]

    @classmethod
    def load(cls, config: TrainConfig) -> _RunData:
        dataset = datasets.get_dataset(
            config.data.dataset, config.data.data_dir, **config.data.dataset_options
        )
        method = METHODS.get(config.method.name)(config)
        # The split the method trains on: "train", or "database" for a method that learns
        # the database's codes (ADSH).
        train_split, validation, validation_database = carve_validation(
            dataset.split(method.training_split),
            config.evaluation.validation_size,
            config.seed,
            config.evaluation.validation_database,
        )
        train_split, validation, validation_database = _processed_tags(
            config, train_split, validation, validation_database
        )
        train_split, validation = method.prepare_splits(train_split, validation)
        _check_targets(config, getattr(train_split, config.method.supervision))
        if dataset.image_files:
            check_image_files([dataset.split(name) for name in ("train", "query", "database")])
        return cls(dataset, method, train_split, validation, validation_database)


def _processed_tags(config: TrainConfig, *splits: SplitData | None) -> tuple:
    """With --supervision=tags and a --tag_dir, every method trains on the tags as tag
    processing left them (synonyms merged, rare and dropped tags gone), not on the raw
    columns: the merge map is applied here, once, whatever the method, to the training
    split and the validation splits carved from it (None stays None)."""
    if config.method.supervision != "tags" or not config.method.tag_dir:
        return splits
    merge_map = tag_files.load_tag_targets(config.method.tag_dir, splits[0].tags.shape[1])
    return tuple(tag_files.merged_split(split, merge_map) for split in splits)


def _check_targets(config: TrainConfig, targets: np.ndarray) -> None:
    """Refuses training targets that are missing or all zero (nothing would train)."""
    other = "tags" if config.method.supervision == "labels" else "labels"
    if targets.shape[1] == 0:
        raise ValueError(
            f"Dataset {config.data.dataset!r} has no training {config.method.supervision}; "
            f"use --supervision={other}."
        )
    if not np.any(targets):
        raise ValueError(
            f"Dataset {config.data.dataset!r} ({config.data.data_dir}): every item of its "
            f"training split has all-zero {config.method.supervision}, so the loss would be 0 "
            "and nothing would train; check its list files (--data_dir) or use "
            f"--supervision={other}."
        )


@dataclasses.dataclass
class _TrainingState:
    """What trains and is checkpointed: model, loss layer, optimisers, step."""

    model: keras.Model
    backbone: Any  # BackboneSpec
    hashing: keras.Model
    # What the step calls: `model`, or its layers returning (codes, backbone features)
    # when the method's loss uses the features.
    forward: keras.Model
    loss: keras.layers.Layer
    optimizer: GroupedOptimizer
    step: tf.Variable

    @classmethod
    def build(cls, config, strategy, method, num_targets: int) -> _TrainingState:
        """Creates everything in the strategy's scope."""
        with strategy.scope():
            model, backbone, hashing = build_model(
                config, method.output_dim(), sync_batch_norm=strategy.num_replicas_in_sync > 1
            )
            # A HashingLoss creates its variables (e.g. HyP2 proxies) in its constructor,
            # so the optimiser sees them.
            loss_layer = method.build_loss(num_targets)
            backbone_variables = hashing.backbone.trainable_variables
            head_variables = [
                v for v in model.trainable_variables if not any(v is b for b in backbone_variables)
            ] + list(loss_layer.trainable_variables)
            optimizer = GroupedOptimizer(config.optimizer, backbone_variables, head_variables)
            step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            forward = (
                with_backbone_features(model, hashing) if method.uses_backbone_features else model
            )
        return cls(model, backbone, hashing, forward, loss_layer, optimizer, step)


def _initialize_head(config, state: _TrainingState, data: _RunData, pipeline_config) -> None:
    """--head_init: the head starts from a baseline fitted on the training split's
    backbone features (the stored rows of a features file, or the images encoded once)."""
    features = data.train.features
    if features is None:
        model = backbone_features_model(state.model, state.hashing)
        features = Encoder(model, pipeline_config, max(config.sampler.batch_size, 32))(data.train)
    _, head = split_hashing_model(state.hashing)
    head_init.initialize_head(head, features, config.model.head_init, config.seed)
    logging.info(
        "The head starts from %s fitted on %d training rows (--head_init).",
        config.model.head_init,
        len(features),
    )


def _record_start(config, output_dir: str, restored, start: int, resume) -> None:
    """Logs a resume and writes run_info.json with the run's resume history."""
    resumes = []
    if restored:
        logging.info("Resumed from %s at step %d.", restored, start)
        resumes = run_info.read_resumes(output_dir)
        if resume and resume[1]:
            logging.warning("Resumed with changed settings: %s.", "; ".join(map(str, resume[1])))
            changes = {change.field: [change.stored, change.new] for change in resume[1]}
            resumes.append({"step": start, "changes": changes})
    run_info.write_run_info(output_dir, config, resumes=resumes)


def _training_shards(config: TrainConfig, data: _RunData):
    """With --data_format=tfrecord*: (the shards of the split the method trains on,
    checked against the manifest and the list files; the shard row of each training
    item). None with files."""
    if config.data.data_format == "files":
        return None
    source = data.dataset.split(data.method.training_split)
    _, images = tfrecords.open_split(config.data.tfrecords, source)
    rows = tfrecords.source_rows(source, data.train)
    logging.info(
        "Training images from %d TFRecord shards in %s (%s).",
        len(images.files),
        config.data.tfrecords,
        config.data.data_format,
    )
    return images, rows


def _training_input(config, strategy, data: _RunData, pipeline_config, start: int):
    """The input function of `distribute_datasets_from_function`, positioned at step
    `start` (seeded order: resuming continues the same sequence of batches). The order
    is the method's own (`Method.index_stream`), class-balanced batches, or shuffled;
    images come from their files or from TFRecord shards (`config.data.data_format`)."""
    train_split, method = data.train, data.method
    num_pipelines = max(strategy.num_replicas_in_sync // _replicas_per_worker(strategy), 1)
    index_stream = method.index_stream(train_split)
    shards = _training_shards(config, data)
    image_reader = None if shards is None else shards[0].reader(shards[1])
    streamed = config.data.data_format == "tfrecord_stream"
    if streamed and (index_stream is not None or config.sampler.kind != "uniform"):
        raise ValueError(
            "--data_format=tfrecord_stream reads the shards in its own order; --method="
            f"{config.method.name} with --sampler={config.sampler.kind} needs "
            "--data_format=tfrecord."
        )
    if index_stream is not None and config.sampler.kind == "class_balanced":
        raise ValueError(
            f"--method={config.method.name} orders its own training items; it cannot use "
            "--sampler=class_balanced."
        )
    if config.sampler.kind == "class_balanced":
        sampler = ClassBalancedSampler(
            train_split.labels,
            classes_per_batch=config.sampler.classes_per_batch,
            images_per_class=config.sampler.images_per_class,
            seed=config.seed,
        )

        def index_stream():
            for batch in sampler:
                yield from batch

    def input_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        stream = None
        if streamed:
            stream = tfrecords.stream_records(
                shards[0],
                train_split,
                shards[1],
                seed=config.seed,
                num_pipelines=context.num_input_pipelines,
                pipeline_id=context.input_pipeline_id,
            )
        return pipeline.make_dataset(
            train_split,
            pipeline_config,
            training=True,
            batch_size=config.sampler.batch_size,
            seed=config.seed,
            input_context=context,
            skip_elements=start * config.sampler.batch_size // num_pipelines,
            index_stream=index_stream,
            image_reader=None if streamed else image_reader,
            stream=stream,
        )

    return input_fn


def _make_train_step(strategy, state: _TrainingState, method, config: TrainConfig):
    """One optimisation step over the global batch; returns the loss terms' means."""
    forward, loss_layer, optimizer = state.forward, state.loss, state.optimizer
    targets_key, global_batch = config.method.supervision, float(config.sampler.batch_size)
    with_features = method.uses_backbone_features

    @tf.function
    def train_step(iterator):
        def step_fn(batch):
            context = tf.distribute.get_replica_context()
            with tf.GradientTape() as tape:
                extra = dict(method.loss_inputs(batch))
                if with_features:
                    codes, features = forward(batch["image"], training=True)
                    features = tf.cast(features, tf.float32)
                    extra["features"] = features
                    extra["ref_features"] = gather_across_replicas(context, features)
                else:
                    codes = forward(batch["image"], training=True)
                codes = tf.cast(codes, tf.float32)
                labels = batch[targets_key]
                # References from every replica, so pairwise terms see the global batch;
                # gradients flow back to the replica that owns each code.
                terms = loss_layer(
                    codes,
                    labels,
                    ref_codes=gather_across_replicas(context, codes),
                    ref_labels=gather_across_replicas(context, labels),
                    anchor_offset=context.replica_id_in_sync_group * tf.shape(codes)[0],
                    **extra,
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

    return train_step


class _Evaluation:
    """Validation (checkpoint selection) and the test evaluation, through the method's
    scorer."""

    def __init__(self, config: TrainConfig, data: _RunData, encode: Encoder):
        self.config, self.data, self.encode = config, data, encode
        self.protocol = config.evaluation.protocol(data.dataset.topk)

    def test(self):
        """(metrics, {"query": features, "database": features}) on the test splits."""
        query, database = self.data.dataset.split("query"), self.data.dataset.split("database")
        features = {"query": self.encode(query), "database": self.encode(database)}
        result = self.data.method.evaluate(
            features["query"],
            query.labels,
            features["database"],
            database.labels,
            self.protocol,
            database_ids=database.paths,
        )
        return result, features

    def selection_scores(self) -> dict[str, float]:
        """The scores checkpoints are selected on: validation and, with
        `--select_on=test`, the test mAP."""
        scores = {}
        validation, database = self.data.validation, self.data.validation_database
        database = self.data.train if database is None else database
        if validation is not None:
            result = self.data.method.evaluate(
                self.encode(validation),
                relevance_labels(validation),
                self.encode(database),
                relevance_labels(database),
                self.protocol,
                database_ids=database.paths,
            )
            scores["validation"] = result.map
            scores["validation_name"] = result.map_name
        if self.config.evaluation.select_on == "test":
            result = self.test()[0]
            scores["test"] = result.map
            scores["test_name"] = result.map_name
        return scores


def _write_summaries(writer, current: int, values: dict, optimizer: GroupedOptimizer) -> None:
    with writer.as_default(step=current):
        for name, value in values.items():
            tf.summary.scalar(f"loss/{name}", value)
        for name, rate in optimizer.learning_rates(current - 1).items():
            tf.summary.scalar(f"learning_rate/{name}", rate)


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
            bar,
            current,
            self.total,
            terms,
            done / max(elapsed, 1e-9),
            left,
        )
