"""Tiny quantized TensorFlow Lite feature models, as `tf.lite.TFLiteConverter` makes them
from a representative dataset (integer-only, uint8 or int8 input and output)."""

import keras
import numpy as np
import tensorflow as tf


def write_quantized_tflite(path, *, side=16, input_type=tf.uint8, seed=0) -> keras.Model:
    """Writes a conv + pooling model quantized for inputs in [-1, 1] (the representative
    images span that range, so the input's scale is about 2/255); returns the float
    model."""
    keras.utils.set_random_seed(seed)
    images = keras.Input((side, side, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(images)
    model = keras.Model(images, keras.layers.GlobalAveragePooling2D()(x))

    def representative():
        rng = np.random.default_rng(seed)
        for _ in range(8):
            yield [rng.uniform(-1, 1, (1, side, side, 3)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = input_type
    converter.inference_output_type = input_type
    with open(path, "wb") as f:
        f.write(converter.convert())
    return model
