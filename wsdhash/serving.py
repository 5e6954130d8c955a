"""Serving: a trained run as a SavedModel with its preprocessing inside the graph.

Signatures (both return `packed_codes` uint8 (B, ceil(K/8)) in the codes-file layout,
`codes` int8 (B, K) of +-1, `embedding` float32 (B, K) and `valid` bool (B,); a WSDHQ
model also returns `quantization_codes` uint8 (B, M), the codeword indices its quantizer
assigns to the embedding (graph_encoder.py: the database side of AQD search, while
queries use `embedding`), and the loaded object's `quantization_encoder.codebooks_additive`
holds the (M, 256, D) codebooks AQD needs:

* `serving_default(images)`: a batch of encoded JPEG or PNG files (tf.string (B,)).
  Each is decoded, resized to the run's image size (bilinear, aspect ratio not kept,
  rounded to whole pixel values as the training pipeline's uint8 images are), centre
  cropped and normalised. Bytes that are neither JPEG nor PNG give `valid = False` and
  zero outputs for that item instead of failing the batch; truncated JPEGs are decoded
  as far as they go.
* `encode_images(images)`: float32 (B, S, S, 3) RGB in [0, 255], already cropped to
  the run's crop size S.

A model trained on precomputed features (`--backbone=features`) has one signature
instead, `serving_default(features)`: float32 (B, F) features from the same backbone
and settings as the features file (`python -m wsdhash.extract`).

The SavedModel needs only TensorFlow to load (not wsdhash).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import keras
import tensorflow as tf

from wsdhash.training import trainer

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load_trained_model(workdir: str, checkpoint: str = "best"):
    """Rebuilds a run's model from `run_info.json` and restores a checkpoint.

    Args:
        workdir: the run folder.
        checkpoint: "best" (the selected checkpoint, falling back to the latest when the
            run kept none), "latest", or a checkpoint path.

    Returns:
        (model, TrainConfig, PipelineConfig).
    """
    info_path = os.path.join(workdir, "run_info.json")
    if not os.path.exists(info_path):
        raise FileNotFoundError(f"Not a wsdhash run folder (no run_info.json): {workdir}")
    with open(info_path) as f:
        config = trainer.config_from_dict(json.load(f)["config"])
    # Weights come from the checkpoint; never download or unpickle anything here.
    config = dataclasses.replace(config, weights="none", allow_pickle=False)
    model, backbone, _ = trainer.build_model(config)
    path = checkpoint_path(workdir, checkpoint)
    tf.train.Checkpoint(model=model).restore(
        path
    ).expect_partial().assert_existing_objects_matched()
    return model, config, trainer.pipeline_config_for(config, backbone)


def checkpoint_path(workdir: str, checkpoint: str = "best") -> str:
    """The checkpoint `load_trained_model` restores (see there for `checkpoint`)."""
    directory = os.path.join(workdir, "checkpoints")
    if checkpoint == "best":
        path = tf.train.latest_checkpoint(os.path.join(directory, "best"))
        path = path or tf.train.latest_checkpoint(directory)
    elif checkpoint == "latest":
        path = tf.train.latest_checkpoint(directory)
    else:
        path = checkpoint
    if not path:
        raise FileNotFoundError(f"No checkpoint found in {directory}.")
    return path


def pack_bits(codes: tf.Tensor) -> tf.Tensor:
    """(B, K) bool -> (B, ceil(K/8)) uint8, most significant bit first (np.packbits)."""
    bits = tf.shape(codes)[1]
    padding = (8 - bits % 8) % 8
    padded = tf.pad(tf.cast(codes, tf.int32), [[0, 0], [0, padding]])
    groups = tf.reshape(padded, [tf.shape(codes)[0], -1, 8])
    weights = tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.int32)
    return tf.cast(tf.reduce_sum(groups * weights, axis=2), tf.uint8)


class HashingServingModule(tf.Module):
    """Wraps a trained model with in-graph decoding and preprocessing."""

    def __init__(
        self, model: keras.Model, image_size: int, crop_size: int, quantization_encoder=None
    ):
        super().__init__()
        self.model = model
        self.quantization_encoder = quantization_encoder
        self.image_size = image_size
        self.crop_size = crop_size
        self.normalization = model.get_layer("normalization")
        self.hashing = model.layers[-1]
        self.takes_features = len(model.input_shape) == 2  # (B, F): --backbone=features
        if self.takes_features:
            spec = tf.TensorSpec([None, model.input_shape[1]], tf.float32, name="features")
            self.serving_default = tf.function(self._encode_features, input_signature=[spec])
            return
        spec = tf.TensorSpec([None], tf.string, name="images")
        self.serving_default = tf.function(self._encode_bytes, input_signature=[spec])
        pixels = tf.TensorSpec([None, crop_size, crop_size, 3], tf.float32, name="images")
        self.encode_images = tf.function(self._encode_pixels, input_signature=[pixels])

    def _outputs(self, pixels: tf.Tensor, valid: tf.Tensor) -> dict[str, tf.Tensor]:
        embedding = tf.cast(self.hashing(self.normalization(pixels), training=False), tf.float32)
        embedding = embedding * tf.cast(valid, tf.float32)[:, None]
        positive = embedding >= 0
        outputs = {
            "embedding": embedding,
            "codes": tf.where(positive, tf.constant(1, tf.int8), tf.constant(-1, tf.int8)),
            "packed_codes": pack_bits(positive),
            "valid": valid,
        }
        if self.quantization_encoder is not None:
            outputs["quantization_codes"] = self.quantization_encoder(embedding)
        return outputs

    def _decode_one(self, data: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        size, crop = self.image_size, self.crop_size

        def decoded(image):
            image = tf.image.resize(image, [size, size], method="bilinear")
            image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
            top = (size - crop) // 2
            return image[top : top + crop, top : top + crop, :], tf.constant(True)

        def jpeg():
            return decoded(
                tf.io.decode_jpeg(
                    data, channels=3, try_recover_truncated=True, acceptable_fraction=0.0
                )
            )

        def png():
            return decoded(tf.io.decode_png(data, channels=3))

        def invalid():
            return tf.zeros([crop, crop, 3], tf.float32), tf.constant(False)

        is_png = tf.strings.substr(data, 0, len(_PNG_MAGIC)) == _PNG_MAGIC
        return tf.case(
            [(tf.io.is_jpeg(data), jpeg), (is_png, png)], default=invalid, exclusive=False
        )

    def _encode_bytes(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels, valid = tf.map_fn(
            self._decode_one,
            images,
            fn_output_signature=(
                tf.TensorSpec([self.crop_size, self.crop_size, 3], tf.float32),
                tf.TensorSpec([], tf.bool),
            ),
        )
        return self._outputs(pixels, valid)

    def _encode_features(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._outputs(features, tf.ones([tf.shape(features)[0]], tf.bool))

    def _encode_pixels(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._outputs(images, tf.ones([tf.shape(images)[0]], tf.bool))


def load_quantization_encoder(workdir: str, checkpoint: str = "best"):
    """A WSDHQ run's quantizer as graph ops (None for binary-code methods).

    The codebooks come from the loss state of the chosen checkpoint when its quantizer
    had run, else from the run's `codes.h5` (the trainer fits the quantizer at the end
    when no checkpoint had one).
    """
    from wsdhash.eval import read_codes_file
    from wsdhash.training import quantized

    with open(os.path.join(workdir, "run_info.json")) as f:
        config = trainer.config_from_dict(json.load(f)["config"])
    if config.method != "wsdhq":
        return None
    tag_embeddings, _ = quantized.load_tag_model(config.tag_dir)
    form = config.method_options.get("quantization_form", "faithful")
    quantizer = quantized.TrainingQuantizer(
        config.bits, tag_embeddings, 1, config.seed, kind=config.quantizer, form=form
    )
    reader = tf.train.load_checkpoint(checkpoint_path(workdir, checkpoint))
    names = reader.get_variable_to_shape_map()
    active = [n for n in names if n.startswith("loss/") and "quantization_active" in n]
    books = [n for n in names if n.startswith("loss/") and "codebooks" in n]
    if active and books and float(reader.get_tensor(active[0])) > 0:
        quantizer.set_codebooks(reader.get_tensor(books[0]))
    else:
        codes_path = os.path.join(workdir, "codes.h5")
        if not os.path.exists(codes_path):
            raise FileNotFoundError(
                f"{workdir}: the checkpoint has no quantizer state yet and there is no "
                "codes.h5 with codebooks; finish (or resume) the training run first."
            )
        quantizer.set_codebooks(read_codes_file(codes_path).codebooks)
    return quantizer.graph_encoder()


def export_saved_model(
    model: keras.Model,
    pipeline_config,
    output: str,
    overwrite: bool = False,
    quantization_encoder=None,
) -> str:
    """Writes the SavedModel to `output` atomically (a temporary folder, then a rename).

    Args:
        quantization_encoder: `load_quantization_encoder(...)` for WSDHQ runs; adds the
            `quantization_codes` output.

    Returns:
        `output`.
    """
    output = os.path.abspath(output)
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it.")
    module = HashingServingModule(
        model, pipeline_config.image_size, pipeline_config.crop_size, quantization_encoder
    )
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    temporary = f"{output}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        tf.saved_model.save(
            module,
            temporary,
            signatures=(
                {"serving_default": module.serving_default}
                if module.takes_features
                else {
                    "serving_default": module.serving_default,
                    "encode_images": module.encode_images,
                }
            ),
        )
        if os.path.exists(output):
            old = f"{output}.old-{os.getpid()}"
            os.replace(output, old)
            os.replace(temporary, output)
            shutil.rmtree(old)
        else:
            os.replace(temporary, output)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return output
