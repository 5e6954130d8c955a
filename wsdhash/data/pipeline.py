"""The `tf.data` input pipeline.

Elements are dicts `{"image", "labels", "tags", "index"}`:

* `image`: float32 (S, S, 3) normalised crop, or (10, S, S, 3) with `ten_crop`; uint8
  when the normalisation is left to the model (`PipelineConfig.normalization=None`);
  float32 (F,) precomputed features, used as they are, when the split carries them
  (`SplitData.features`, from `python -m wsdhash.extract`);
* `labels`: float32 (C,) ground-truth multi-hot labels (C = 0 when the split has none);
* `tags`: float32 (T,) user-tag indicators (T = 0 when the split has none);
* `index`: int64 position of the item in its split's list file.

Two pipelines share their stages (module-level functions below, in pipeline order):

* images (`make_dataset`): the source of records (the split's records -> shard ->
  (decode + cache) -> shuffle -> repeat; or the items an `index_stream` names; or a
  ready `stream` of encoded images) -> augmentation seed -> skip -> decode -> augment /
  crop -> normalise -> batch -> prefetch. Training augments with the recipe
  `PipelineConfig.augment` names (`preprocessing.AUGMENTATIONS`).
* precomputed features (`make_features_dataset`, which `make_dataset` calls for a split
  that carries them): the same source of records (no stream) -> skip -> features as
  `image` -> batch -> prefetch; nothing is decoded or augmented.

Evaluation keeps file order and the last partial batch.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from wsdhash.data import preprocessing
from wsdhash.data.types import SplitData


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How images are turned into model inputs.

    Attributes:
        image_size: images are resized to (image_size, image_size) after decoding.
        crop_size: the side of the training random crop and the evaluation centre crop.
        normalization: name in `preprocessing.NORMALIZATIONS`, or None to yield uint8
            images and normalise inside the model instead. None roughly doubles
            host-side throughput (the float conversion is the most expensive step after
            decoding) and sends 4x fewer bytes to the accelerator.
        ten_crop: evaluation yields WSDHQ's 10 crops per image instead of the centre crop.
        augment: the training augmentation, a name in `preprocessing.AUGMENTATIONS`:
            "random_crop_flip" (the default), "center_crop" (no flip), "resize" (the
            whole image, no flip) or "resize_flip"; the last two need image_size ==
            crop_size. Evaluation always takes the centre crop (or 10 crops).
    """

    image_size: int = 256
    crop_size: int = 224
    normalization: str | None = "torch_imagenet"
    ten_crop: bool = False
    augment: str = "random_crop_flip"

    def __post_init__(self):
        if not 0 < self.crop_size <= self.image_size:
            raise ValueError(
                f"crop_size must be in (0, image_size={self.image_size}], got {self.crop_size}."
            )
        if self.normalization is not None:
            preprocessing.NORMALIZATIONS.get(self.normalization)  # Fails early on a typo.
        preprocessing.AUGMENTATIONS.get(self.augment)
        if (
            self.augment in preprocessing.WHOLE_IMAGE_AUGMENTATIONS
            and self.image_size != self.crop_size
        ):
            raise ValueError(
                f"--augment={self.augment} trains on the whole image, so it needs "
                f"--image_size equal to --crop_size (evaluation centre-crops crop_size out "
                f"of image_size); got image_size={self.image_size}, "
                f"crop_size={self.crop_size}."
            )


def _columns(split: SplitData) -> dict:
    columns = {
        "path": split.paths,
        "labels": split.labels.astype("float32"),
        "tags": split.tags.astype("float32"),
        "index": np.arange(len(split), dtype=np.int64),
    }
    if split.features is not None:
        columns["features"] = split.features.astype("float32")
    return columns


def _records(split: SplitData) -> tf.data.Dataset:
    """One record per item, in file order; images are not read yet."""
    return tf.data.Dataset.from_tensor_slices(_columns(split))


def make_dataset(
    split: SplitData,
    config: PipelineConfig,
    *,
    training: bool,
    batch_size: int,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    shuffle_buffer: int | None = None,
    cache: bool = False,
    skip_elements: int = 0,
    corrupt_log: preprocessing.CorruptImageLog | None = None,
    num_parallel_calls: int = tf.data.AUTOTUNE,
    index_stream: Callable[[], Iterator[int]] | None = None,
    image_reader: Callable[[int], bytes] | None = None,
    stream: tf.data.Dataset | None = None,
) -> tf.data.Dataset:
    """Builds the input pipeline of one split.

    Args:
        split: the items (`SplitData`, file order).
        config: image preprocessing.
        training: shuffle, repeat forever, the config's training augmentation
            (`config.augment`; random crop + flip by default), drop the last partial
            batch. Otherwise: one pass in file order, centre crop (or 10-crop), keep the
            last partial batch.
        batch_size: the global batch size; with `input_context`, each input pipeline
            batches `input_context.get_per_replica_batch_size(batch_size)`.
        seed: seeds the shuffle order and the augmentation. The order and the crops of
            the n-th element are the same in every run with the same seed.
        input_context: from `tf.distribute.Strategy.distribute_datasets_from_function`;
            each input pipeline then reads its own shard of the items.
        shuffle_buffer: training shuffle buffer; default: the whole split (exact
            uniform shuffle of the lightweight records). With `cache`, decoded images are
            shuffled instead, so a smaller buffer bounds memory.
        cache: keep decoded, resized uint8 images in memory after the first epoch
            (as WSDHQ does); augmentation still differs every epoch.
        skip_elements: training only: skip this many elements of the shuffled stream
            before reading any image, to resume mid-epoch (cheap: records are skipped).
        corrupt_log: when given, undecodable images are skipped and recorded there;
            otherwise they raise an error naming the file.
        num_parallel_calls: parallelism of the decode and augment maps.
        index_stream: training only: a callable returning an endless iterator of item
            indices (e.g. a flattened `ClassBalancedSampler`), used instead of the
            seeded shuffle. It must be deterministic for resuming to be exact. With
            several input pipelines, pipeline i takes every i-th index, so each global
            batch is still one batch of the stream.
        image_reader: reads the encoded image of the item at `index` (its position in
            `split`), e.g. `tfrecords.ShardedImages.reader`, from `tf.data`'s threads;
            default: the file at its path. Nothing else changes.
        stream: training only: an endless, already shuffled (and sharded) stream of
            `{"path", "labels", "tags", "index", "image_bytes"}` (e.g.
            `tfrecords.stream_records`) instead of the split's records; seeds, skipping,
            decoding and augmentation are as for them.

    A split with precomputed features (`SplitData.features`) goes to
    `make_features_dataset`, which ignores the image arguments and refuses a `stream`.

    Returns:
        A `tf.data.Dataset` of batched element dicts.
    """
    _check_request(split, batch_size, training, cache, skip_elements, index_stream, stream)
    order = _Order.of(
        input_context, training, batch_size, seed, shuffle_buffer, skip_elements, index_stream
    )
    if split.features is not None:
        return _features_pipeline(split, order)
    decode = _image_decoding(config, corrupt_log, image_reader)
    cached = functools.partial(_decode_and_cache, decode, num_parallel_calls) if cache else None
    dataset = stream if stream is not None else _ordered_records(split, order, cached)
    dataset = _skipped(_with_augmentation_seeds(dataset, order), order)
    if not cache:
        dataset = dataset.map(decode, num_parallel_calls=num_parallel_calls)
    if corrupt_log is not None:
        dataset = dataset.filter(_was_decoded)
    finish = _image_finishing(config, training)
    dataset = dataset.map(finish, num_parallel_calls=num_parallel_calls)
    return _batched(dataset, order)


def make_features_dataset(
    split: SplitData,
    *,
    training: bool,
    batch_size: int,
    seed: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    shuffle_buffer: int | None = None,
    skip_elements: int = 0,
    index_stream: Callable[[], Iterator[int]] | None = None,
) -> tf.data.Dataset:
    """The pipeline of a split with precomputed features: no decoding, no augmentation.

    Elements are `make_dataset`'s, with the (F,) features as `image`; the arguments and
    the order (sharding, shuffle, skipping) are `make_dataset`'s too: the same seed
    gives the same order as for the split's images.
    """
    if split.features is None:
        raise ValueError(f"Split {split.name!r} carries no precomputed features.")
    _check_request(split, batch_size, training, False, skip_elements, index_stream, None)
    order = _Order.of(
        input_context, training, batch_size, seed, shuffle_buffer, skip_elements, index_stream
    )
    return _features_pipeline(split, order)


# ---------------------------------------------------------------------------------------
# Stages, in pipeline order.


def _check_request(split, batch_size, training, cache, skip_elements, index_stream, stream):
    """ValueError for an empty split or a combination of arguments that does not apply."""
    if len(split) == 0:
        raise ValueError(f"Split {split.name!r} is empty.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if stream is not None and (not training or cache or index_stream is not None):
        raise ValueError("stream needs training=True, cache=False and no index_stream.")
    if index_stream is not None and (not training or cache):
        raise ValueError("index_stream needs training=True and cache=False.")
    if skip_elements and not training:
        raise ValueError("skip_elements is only meaningful for a training pipeline.")
    if stream is not None and split.features is not None:
        raise ValueError(
            f"Split {split.name!r} carries precomputed features; a stream of encoded "
            "images cannot feed it."
        )


@dataclasses.dataclass(frozen=True)
class _Order:
    """Which items this input pipeline reads, in which order, and its batch size."""

    training: bool
    batch_size: int  # this input pipeline's
    seed: int
    num_pipelines: int = 1
    pipeline_id: int = 0
    shuffle_buffer: int | None = None
    skip_elements: int = 0
    index_stream: Callable[[], Iterator[int]] | None = None

    @classmethod
    def of(
        cls, input_context, training, batch_size, seed, shuffle_buffer, skip_elements, index_stream
    ):
        placement = {}
        if input_context is not None:
            placement = {
                "num_pipelines": input_context.num_input_pipelines,
                "pipeline_id": input_context.input_pipeline_id,
            }
            batch_size = input_context.get_per_replica_batch_size(batch_size)
        return cls(
            training,
            batch_size,
            seed,
            **placement,
            shuffle_buffer=shuffle_buffer,
            skip_elements=skip_elements,
            index_stream=index_stream,
        )


def _features_pipeline(split: SplitData, order: _Order) -> tf.data.Dataset:
    """records -> shard -> shuffle -> repeat -> skip -> features as `image` -> batch."""
    dataset = _skipped(_ordered_records(split, order), order)
    return _batched(dataset.map(_features_as_image), order)


def _ordered_records(
    split: SplitData,
    order: _Order,
    before_shuffle: Callable[[tf.data.Dataset], tf.data.Dataset] | None = None,
) -> tf.data.Dataset:
    """The records this pipeline reads: those `index_stream` names, in its order; else
    the split's, for training shuffled (seeded, a new order each epoch) without end."""
    if order.index_stream is not None:
        return _indexed_records(split, order)
    dataset = _sharded(_records(split), order)
    if before_shuffle is not None:
        dataset = before_shuffle(dataset)
    if order.training:
        buffer = order.shuffle_buffer or len(split)
        dataset = dataset.shuffle(buffer, seed=order.seed, reshuffle_each_iteration=True)
        dataset = dataset.repeat()
    return dataset


def _sharded(dataset: tf.data.Dataset, order: _Order) -> tf.data.Dataset:
    """This input pipeline's share: every `num_pipelines`-th element."""
    if order.num_pipelines > 1:
        dataset = dataset.shard(order.num_pipelines, order.pipeline_id)
    return dataset


def _indexed_records(split: SplitData, order: _Order) -> tf.data.Dataset:
    """The records of the items `order.index_stream` names, in its order, sharded."""
    columns = {key: tf.constant(value) for key, value in _columns(split).items()}

    def lookup(index):
        return {key: tf.gather(column, index) for key, column in columns.items()}

    indices = tf.data.Dataset.from_generator(
        order.index_stream, output_signature=tf.TensorSpec([], tf.int64)
    )
    return _sharded(indices, order).map(lookup)


def _skipped(dataset: tf.data.Dataset, order: _Order) -> tf.data.Dataset:
    """Resuming mid-epoch: the first `skip_elements` elements are dropped unread."""
    return dataset.skip(order.skip_elements) if order.skip_elements else dataset


def _decode_and_cache(decode, num_parallel_calls, dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.map(decode, num_parallel_calls=num_parallel_calls).cache()


def _with_augmentation_seeds(dataset: tf.data.Dataset, order: _Order) -> tf.data.Dataset:
    """Adds `seed`: a distinct stateless seed per element of the stream and per pipeline."""

    def attach_seed(position, element):
        element = dict(element)
        stream_position = position * order.num_pipelines + order.pipeline_id
        element["seed"] = tf.stack([tf.constant(order.seed, tf.int64), stream_position])
        return element

    return dataset.enumerate().map(attach_seed)


def _image_decoding(
    config: PipelineConfig,
    corrupt_log: preprocessing.CorruptImageLog | None,
    image_reader: Callable[[int], bytes] | None,
) -> Callable[[dict], dict]:
    """The map that replaces `path` (and `image_bytes`) by the decoded, resized uint8
    `image` and its `decoded` flag (False only for an image skipped into `corrupt_log`)."""
    decode_image = preprocessing.make_image_decoder(config.image_size, corrupt_log)
    decode_indexed = preprocessing.make_image_decoder(
        config.image_size, corrupt_log, read=image_reader
    )

    def decode(element):
        element = dict(element)
        path = element.pop("path")
        if "image_bytes" in element:  # a stream of records
            data = element.pop("image_bytes")
        elif image_reader is not None:  # read in the decoder's own Python call
            element["image"], element["decoded"] = decode_indexed(element["index"], path)
            return element
        else:
            data = tf.io.read_file(path)
        element["image"], element["decoded"] = decode_image(data, path)
        return element

    return decode


def _was_decoded(element: dict) -> tf.Tensor:
    return element["decoded"]


def _image_finishing(config: PipelineConfig, training: bool) -> Callable[[dict], dict]:
    """The map that augments (training) or crops (evaluation) the image, then normalises
    it; it drops the `decoded` flag and the `seed`."""
    train_augment = preprocessing.AUGMENTATIONS.get(config.augment)
    normalize = None
    if config.normalization is not None:
        normalize = preprocessing.NORMALIZATIONS.get(config.normalization)

    def finish(element):
        # Crops and flips on uint8, before the cast to float, to move 4x fewer bytes.
        element = dict(element)
        element.pop("decoded")
        seed_pair = element.pop("seed")
        image = element["image"]
        if training:
            image = train_augment(image, config.crop_size, seed_pair)
        elif config.ten_crop:
            image = preprocessing.ten_crop(image, config.crop_size)
        else:
            image = preprocessing.center_crop(image, config.crop_size)
        element["image"] = image if normalize is None else normalize(tf.cast(image, tf.float32))
        return element

    return finish


def _features_as_image(element: dict) -> dict:
    """A features record as an element: the features, used as they are, are `image`."""
    element = dict(element)
    element.pop("path")
    element["image"] = element.pop("features")
    return element


def _batched(dataset: tf.data.Dataset, order: _Order) -> tf.data.Dataset:
    """Batches (training drops the last partial batch), fixes the order, prefetches."""
    dataset = dataset.batch(order.batch_size, drop_remainder=order.training)
    options = tf.data.Options()
    # Evaluation must keep file order; training order is fixed by the seeded shuffle.
    options.deterministic = True
    dataset = dataset.with_options(options)
    return dataset.prefetch(tf.data.AUTOTUNE)
