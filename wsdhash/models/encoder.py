"""Encoding whole splits with a model: relaxed codes (or features) in file order."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from wsdhash.data import pipeline
from wsdhash.data.types import SplitData


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
