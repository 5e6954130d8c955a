"""The exported module: a trained model with in-graph decoding and preprocessing, and
its signatures (the package docstring, wsdhash/export/__init__.py, describes them).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from wsdhash.data import image_header


def pack_bits(codes: tf.Tensor) -> tf.Tensor:
    """(B, K) bool -> (B, ceil(K/8)) uint8, most significant bit first (np.packbits)."""
    bits = tf.shape(codes)[1]
    padding = (8 - bits % 8) % 8
    padded = tf.pad(tf.cast(codes, tf.int32), [[0, 0], [0, padding]])
    groups = tf.reshape(padded, [tf.shape(codes)[0], -1, 8])
    weights = tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.int32)
    return tf.cast(tf.reduce_sum(groups * weights, axis=2), tf.uint8)


class _Untracked:
    """Holds an object out of sight of `tf.Module`'s attribute tracking."""

    def __init__(self, value):
        self.value = value


class HashingServingModule(tf.Module):
    """Wraps a trained model with in-graph decoding and preprocessing (module doc).

    Args:
        model: the run's Keras model (uint8 images or float features -> relaxed codes).
        image_size, crop_size: the run's resize side and centre-crop side (for a model
            on features with a `feature_extractor`: the extraction's).
        quantization_encoder: `load_quantization_encoder(...)` for WSDHQ runs.
        max_pixels: the largest width x height `serving_default` decodes.
        feature_extractor: for a model on features, [0, 255] float32 images (B, P, P, 3)
            -> its input features (`extraction_model.ImageFeatures`, with `variables`
            and `input_side` P); the module then takes images.
    """

    def __init__(
        self,
        model: keras.Model,
        image_size: int,
        crop_size: int,
        quantization_encoder=None,
        max_pixels: int = image_header.DEFAULT_MAX_PIXELS,
        feature_extractor=None,
    ):
        super().__init__()
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {max_pixels}.")
        on_features = len(model.input_shape) == 2  # (B, F): --backbone=features
        if feature_extractor is not None and not on_features:
            raise ValueError("feature_extractor is for a model that takes features.")
        # The model's tf.Variables, tracked directly (see the module doc); the Keras
        # objects stay out of the saved object graph.
        self.model_variables = [variable.value for variable in model.variables]
        self._layers = _Untracked(
            (model.get_layer("normalization"), model.layers[-1])  # (normalisation, hashing)
        )
        self.quantization_encoder = quantization_encoder
        self.image_size = image_size
        self.crop_size = crop_size
        self.max_pixels = max_pixels
        self._extractor = _Untracked(feature_extractor)
        if feature_extractor is not None:
            # Tracked like the head's variables, so that both loaders restore them.
            self.feature_model_variables = list(feature_extractor.variables)
            # The decoder hands the extractor P x P images (ten-crop: the whole image).
            self.crop_size = crop_size = feature_extractor.input_side
        self.takes_features = on_features and feature_extractor is None
        if self.takes_features:
            spec = tf.TensorSpec([None, model.input_shape[1]], tf.float32, name="features")
            self.serving_default = tf.function(self._encode_features, input_signature=[spec])
            return
        spec = tf.TensorSpec([None], tf.string, name="images")
        self.serving_default = tf.function(self._encode_bytes, input_signature=[spec])
        pixels = tf.TensorSpec([None, crop_size, crop_size, 3], tf.float32, name="images")
        self.encode_images = tf.function(self._encode_pixels, input_signature=[pixels])

    def _outputs(self, pixels: tf.Tensor, status: tf.Tensor) -> dict[str, tf.Tensor]:
        normalization, hashing = self._layers.value
        valid = tf.equal(status, image_header.STATUS_OK)
        extractor = self._extractor.value
        inputs = pixels if extractor is None else extractor(pixels)
        embedding = tf.cast(hashing(normalization(inputs), training=False), tf.float32)
        embedding = tf.where(valid[:, None], embedding, 0.0)
        positive = (embedding >= 0) & valid[:, None]
        sign = tf.where(positive, tf.constant(1, tf.int8), tf.constant(-1, tf.int8))
        outputs = {
            "embedding": embedding,
            "codes": tf.where(valid[:, None], sign, tf.constant(0, tf.int8)),
            "packed_codes": pack_bits(positive),
            "valid": valid,
            "status": status,
        }
        if self.quantization_encoder is not None:
            indices = self.quantization_encoder(embedding)
            outputs["quantization_codes"] = tf.where(
                valid[:, None], indices, tf.zeros_like(indices)
            )
        return outputs

    def _decode_one(self, index: tf.Tensor, data: tf.Tensor):
        """(index, cropped float pixels, status) of one encoded image. Raises (inside
        the graph) on a broken body; `_encode_bytes` turns that into STATUS_UNDECODABLE."""
        size, crop = self.image_size, self.crop_size
        is_jpeg, status = image_header.header_status(data, self.max_pixels)

        def decode():
            def jpeg():
                image = tf.io.decode_jpeg(data, channels=3)
                return image_header.apply_orientation(image, image_header.exif_orientation(data))

            image = tf.cond(is_jpeg, jpeg, lambda: tf.io.decode_png(data, channels=3))
            image = tf.image.resize(image, [size, size], method="bilinear")
            image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
            top = (size - crop) // 2
            return image[top : top + crop, top : top + crop, :]

        pixels = tf.cond(
            tf.equal(status, image_header.STATUS_OK),
            decode,
            lambda: tf.zeros([crop, crop, 3], tf.float32),
        )
        return index, pixels, tf.cast(status, tf.int32)

    def _decode_all(self, images: tf.Tensor, parallel: bool):
        """(indices, pixels, statuses) of the items of `images` that decoded, in any
        order, followed by one sentinel row with index -1.

        Each item is one element of a tf.data pipeline whose failing elements are
        dropped (ignore_errors): an op error in one item's decoding then only marks that
        item, where a map over the batch would fail the whole call. The survivors are
        collected by a single `batch` (the sentinel makes sure there is exactly one
        batch, even when every item fails). A `Dataset.reduce` with TensorArrays, as
        here before, instantiates its reduce function on every call: 0.7-1 s per call
        at batch 1 on 2 busy CPU cores, against about 1 ms for this whole pipeline.
        """
        count = tf.shape(images)[0]
        crop = self.crop_size
        items = tf.data.Dataset.from_tensor_slices((tf.range(count), images))
        if parallel:
            items = items.map(
                self._decode_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False
            )
        else:  # one item: a parallel map's threads only add to the call's fixed cost
            items = items.map(self._decode_one)
        sentinel = tf.data.Dataset.from_tensors(
            (
                tf.constant(-1),
                tf.zeros([crop, crop, 3], tf.float32),
                tf.constant(image_header.STATUS_OK),
            )
        )
        decoded = items.ignore_errors().concatenate(sentinel)
        return decoded.batch(tf.cast(count, tf.int64) + 1).get_single_element()

    def _encode_bytes(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        count = tf.shape(images)[0]
        crop = self.crop_size
        indices, pixels, statuses = tf.cond(
            count > 1,
            lambda: self._decode_all(images, parallel=True),
            lambda: self._decode_all(images, parallel=False),
        )
        decoded = indices >= 0  # all but the sentinel
        where = tf.boolean_mask(indices, decoded)[:, None]
        pixels = tf.scatter_nd(where, tf.boolean_mask(pixels, decoded), [count, crop, crop, 3])
        # Items missing from the pipeline's output failed to decode.
        status = tf.tensor_scatter_nd_update(
            tf.fill([count], image_header.STATUS_UNDECODABLE),
            where,
            tf.boolean_mask(statuses, decoded),
        )
        return self._outputs(pixels, status)

    def _encode_features(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._outputs(features, tf.zeros([tf.shape(features)[0]], tf.int32))

    def _encode_pixels(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._outputs(images, tf.zeros([tf.shape(images)[0]], tf.int32))
