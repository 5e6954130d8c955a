"""The `tf.data` input pipeline.

Elements are dicts `{"image", "labels", "tags", "index"}`:

* `image`: float32 (S, S, 3) normalised crop, or (10, S, S, 3) with `ten_crop`; uint8
  when the normalisation is left to the model (`PipelineConfig.normalization=None`);
  float32 (F,) precomputed features, used as they are, when the split carries them
  (`SplitData.features`, from `python -m wsdhash.extract`);
* `labels`: float32 (C,) ground-truth multi-hot labels (C = 0 when the split has none);
* `tags`: float32 (T,) user-tag indicators (T = 0 when the split has none);
* `index`: int64 position of the item in its split's list file.

`make_dataset` reads as a straight line: records -> shard -> (cache) -> shuffle -> repeat
-> seed -> skip -> decode -> augment / crop -> normalise -> batch -> prefetch. Training
augments with the recipe `PipelineConfig.augment` names (`preprocessing.AUGMENTATIONS`).
Evaluation keeps file order and the last partial batch.
"""

from __future__ import annotations

import dataclasses
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
            before reading any image, to resume mid-epoch (cheap: only records are
            skipped).
        corrupt_log: when given, undecodable images are skipped and recorded there;
            otherwise they raise an error naming the file.
        num_parallel_calls: parallelism of the decode and augment maps.
        index_stream: training only: a callable returning an endless iterator of item
            indices (e.g. a flattened `ClassBalancedSampler`), used instead of the
            seeded shuffle. It must be deterministic for resuming to be exact. With
            several input pipelines, pipeline i takes every i-th index, so each global
            batch is still one batch of the stream.
        image_reader: reads the encoded image of the item at `index` (its position in
            `split`), e.g. from a TFRecord shard (`tfrecords.ShardedImages.reader`),
            called from `tf.data`'s threads; default: the file at its path is read.
            Nothing else changes: the same elements, order, decoding and augmentation.
        stream: training only: an endless stream of this pipeline's elements
            `{"path", "labels", "tags", "index", "image_bytes"}`, already shuffled (and
            sharded by `input_context`), used instead of the split's shuffled records,
            e.g. `tfrecords.stream_records`; seeds, skipping, decoding and augmentation
            are as for the records.

    Returns:
        A `tf.data.Dataset` of batched element dicts.
    """
    if len(split) == 0:
        raise ValueError(f"Split {split.name!r} is empty.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    num_pipelines, pipeline_id = 1, 0
    if input_context is not None:
        num_pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    decode_image = preprocessing.make_image_decoder(config.image_size, corrupt_log)
    decode_indexed = preprocessing.make_image_decoder(
        config.image_size, corrupt_log, read=image_reader
    )
    train_augment = preprocessing.AUGMENTATIONS.get(config.augment)
    normalize = None
    if config.normalization is not None:
        normalize = preprocessing.NORMALIZATIONS.get(config.normalization)

    def decode(element):
        element = dict(element)
        if split.features is not None:  # precomputed features: nothing to read
            element.pop("path")
            element["image"], element["decoded"] = element.pop("features"), tf.constant(True)
            return element
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

    def drop_undecodable(element):
        return element["decoded"]

    def augment(element):
        # Crops and flips on uint8, before the cast to float, to move 4x fewer bytes.
        element = dict(element)
        element.pop("decoded")
        seed_pair = element.pop("seed")
        image = element["image"]
        if split.features is not None:  # features are not augmented
            return element
        if training:
            image = train_augment(image, config.crop_size, seed_pair)
        elif config.ten_crop:
            image = preprocessing.ten_crop(image, config.crop_size)
        else:
            image = preprocessing.center_crop(image, config.crop_size)
        element["image"] = image if normalize is None else normalize(tf.cast(image, tf.float32))
        return element

    def attach_seed(position, element):
        # A distinct stateless seed per element of the stream and per input pipeline.
        element = dict(element)
        element["seed"] = tf.stack(
            [tf.constant(seed, tf.int64), position * num_pipelines + pipeline_id]
        )
        return element

    if stream is not None:
        if not training or cache or index_stream is not None:
            raise ValueError("stream needs training=True, cache=False and no index_stream.")
        dataset = stream
    elif index_stream is not None:
        if not training or cache:
            raise ValueError("index_stream needs training=True and cache=False.")
        columns = {key: tf.constant(value) for key, value in _columns(split).items()}

        def lookup(index):
            return {key: tf.gather(column, index) for key, column in columns.items()}

        dataset = tf.data.Dataset.from_generator(
            index_stream, output_signature=tf.TensorSpec([], tf.int64)
        )
        if num_pipelines > 1:
            dataset = dataset.shard(num_pipelines, pipeline_id)
        dataset = dataset.map(lookup)
    else:
        dataset = _records(split)
        if num_pipelines > 1:
            dataset = dataset.shard(num_pipelines, pipeline_id)
        if cache:
            dataset = dataset.map(decode, num_parallel_calls=num_parallel_calls).cache()
        if training:
            buffer = shuffle_buffer or len(split)
            dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.enumerate().map(attach_seed)
    if skip_elements:
        if not training:
            raise ValueError("skip_elements is only meaningful for a training pipeline.")
        dataset = dataset.skip(skip_elements)
    if not cache:
        dataset = dataset.map(decode, num_parallel_calls=num_parallel_calls)
    if corrupt_log is not None:
        dataset = dataset.filter(drop_undecodable)
    dataset = dataset.map(augment, num_parallel_calls=num_parallel_calls)
    dataset = dataset.batch(batch_size, drop_remainder=training)
    options = tf.data.Options()
    # Evaluation must keep file order; training order is fixed by the seeded shuffle.
    options.deterministic = True
    dataset = dataset.with_options(options)
    return dataset.prefetch(tf.data.AUTOTUNE)
