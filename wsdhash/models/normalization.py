"""Image normalisation as the model's first layer.

The input pipeline can hand uint8 crops to the model (half the host-side cost, a
quarter of the bytes to the accelerator); this layer then applies the backbone's
registered normalisation on the device, and the same layer goes into exported
SavedModels, so serving preprocesses exactly as training did.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from wsdhash.data import preprocessing


class ImageNormalization(keras.layers.Layer):
    """Casts images to float32 and applies `preprocessing.NORMALIZATIONS[name]`.

    Args:
        normalization: a name registered in `wsdhash.data.preprocessing.NORMALIZATIONS`.
    """

    def __init__(self, normalization: str, **kwargs):
        # float32 whatever the global policy: bfloat16 would round normalised pixels.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self._normalize = preprocessing.NORMALIZATIONS.get(normalization)
        self.normalization = normalization

    def call(self, images):
        return self._normalize(tf.cast(images, tf.float32))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "normalization": self.normalization}
