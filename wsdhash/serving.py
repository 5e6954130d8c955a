"""Serving: a trained run as a SavedModel with its preprocessing inside the graph.

Signatures (each returns `packed_codes` uint8 (B, ceil(K/8)) in the codes-file layout,
`codes` int8 (B, K) of +-1, `embedding` float32 (B, K), `valid` bool (B,) and `status`
int32 (B,); a WSDHQ model also returns `quantization_codes` uint8 (B, M), the codeword
indices its quantizer assigns to the embedding (graph_encoder.py: the database side of
AQD search, while queries use `embedding`), and the loaded object's
`quantization_encoder.codebooks_additive` holds the (M, 256, D) codebooks AQD needs):

* `serving_default(images)`: a batch of encoded JPEG or PNG files (tf.string (B,)).
  Every item is decoded on its own: one bad file never fails the batch. An item is
  valid when it has JPEG or PNG magic bytes, its header's width x height is at most
  the export's pixel limit (`DEFAULT_MAX_PIXELS` unless `--max_pixels` says otherwise;
  checked before decoding, so a decompression bomb costs nothing) and it decodes
  completely (a truncated JPEG or PNG is invalid, as it is for OpenCV in training).
  Two broken files are refused from their headers, without decoding: a PNG whose
  first chunk is not IHDR (e.g. PNG magic followed by a JPEG), and a JPEG far smaller
  than the size its header claims (`jpeg_too_small`: libjpeg would fill the missing
  scan with grey and report success).
  `status` says why an item is invalid (`STATUS_NAMES`). An invalid item has
  `valid = False` and all-zero outputs: zero embedding, zero `codes` (neither +1 nor
  -1), zero `packed_codes` and `quantization_codes`; callers must not index or match
  it by those values.
  A valid image is turned upright by its EXIF orientation tag (JPEG), as OpenCV's
  decoder does in training, then resized to the run's image size (bilinear, aspect
  ratio not kept, rounded to whole pixel values as the training pipeline's uint8
  images are), centre cropped and normalised.
* `encode_images(images)`: float32 (B, S, S, 3) RGB in [0, 255], already cropped to
  the run's crop size S (every item valid).

A model trained on precomputed features (`--backbone=features`) is exported with its
feature model in front (`feature_extractor`, wsdhash/models/extraction_model.py): the
same two signatures, the image preprocessing taking the resize and crop sides and the
normalisation the extraction recorded, then the feature model, then the head. Without
one it has a single signature, `serving_default(features)`: float32 (B, F) features
from the same backbone and settings as the features file (`python -m wsdhash.extract`).
Features extracted with `--ten_crop` are the mean over WSDHQ's 10 crops of the resized
image: the composed `serving_default` does the same, and its `encode_images` then takes
the whole resized image (B, image_size, image_size, 3) rather than a crop.

Beside the graph, `assets.extra/wsdhash.json` records the network's weights fingerprint
(wsdhash/model_fingerprint.py), which the service compares with an index's.

The SavedModel needs only TensorFlow to load (not wsdhash), with `tf.saved_model.load`
or with TensorFlow 1's session loader (`tf.compat.v1.saved_model.load`,
`saved_model_cli run`), which is the path TensorFlow Serving takes. For the latter the
module tracks the model's `tf.Variable`s directly rather than the Keras model: Keras 3
maps each of its variables to a second, unnamed copy when saving, which the TF2 loader
restores but the session loader leaves uninitialised ("Could not find variable").
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import keras
import tensorflow as tf

from wsdhash.methods import METHODS
from wsdhash.model_fingerprint import EXPORT_INFO_FILE, weights_fingerprint
from wsdhash.models.assembly import build_model
from wsdhash.training.config import config_from_dict

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_HEADER = b"\x00\x00\x00\x0dIHDR"  # the first chunk after the magic: 13 bytes of IHDR
_EXIF_MARKER = b"Exif\x00\x00"
_APP1 = b"\xff\xe1"
_EXIF_SEARCH_BYTES = 65536  # an APP1 segment (where EXIF lives) is at most 64 KiB
_EXIF_MAX_ENTRIES = 64  # IFD0 entries read when looking for the orientation tag
_ORIENTATION_TAG = 0x0112

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest image (width x height, read from the file header) the serving signature
decodes; 50 megapixels covers 8160 x 6120 phone photos. Larger images give
`valid = False` and `status = STATUS_TOO_LARGE` without being decoded."""

STATUS_OK = 0
STATUS_NOT_AN_IMAGE = 1  # neither JPEG nor PNG magic bytes
STATUS_UNDECODABLE = 2  # JPEG/PNG magic but a broken or truncated body
STATUS_TOO_LARGE = 3  # header dimensions above max_pixels
STATUS_NAMES = {
    STATUS_OK: "ok",
    STATUS_NOT_AN_IMAGE: "not a JPEG or PNG image",
    STATUS_UNDECODABLE: "corrupt or truncated image",
    STATUS_TOO_LARGE: "image larger than the pixel limit",
}


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
        config = config_from_dict(json.load(f)["config"])
    # Weights come from the checkpoint; never download or unpickle anything here.
    model_settings = dataclasses.replace(config.model, weights="none", allow_pickle=False)
    config = dataclasses.replace(config, model=model_settings)
    model, backbone, _ = build_model(config, METHODS.get(config.method.name)(config).output_dim())
    path = checkpoint_path(workdir, checkpoint)
    tf.train.Checkpoint(model=model).restore(
        path
    ).expect_partial().assert_existing_objects_matched()
    return (
        model,
        config,
        backbone.pipeline_config(
            config.data.image_size, config.data.crop_size, config.data.ten_crop
        ),
    )


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


class _Untracked:
    """Holds an object out of sight of `tf.Module`'s attribute tracking."""

    def __init__(self, value):
        self.value = value


def _read_uint(data: tf.Tensor, position: tf.Tensor, size: int, little_endian: tf.Tensor):
    """Unsigned `size`-byte integer at `position` of a byte string (0 past its end)."""
    position = tf.minimum(position, tf.strings.length(data))
    raw = tf.io.decode_raw(tf.strings.substr(data, position, size), tf.uint8)
    raw = tf.cast(tf.pad(raw, [[0, size - tf.shape(raw)[0]]]), tf.int64)
    big = tf.reduce_sum(raw * tf.constant([256 ** (size - 1 - i) for i in range(size)], tf.int64))
    little = tf.reduce_sum(raw * tf.constant([256**i for i in range(size)], tf.int64))
    return tf.where(little_endian, little, big)


def exif_orientation(data: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation (1-8) of JPEG bytes; 1 when there is none or it is unreadable.

    Reads the TIFF structure of the APP1 "Exif" segment: byte order, the offset of the
    first image directory, and its entries up to the orientation tag 0x0112.
    """
    head = tf.strings.substr(data, 0, _EXIF_SEARCH_BYTES)
    parts = tf.strings.split(head, sep=_EXIF_MARKER, maxsplit=1)
    marker = tf.strings.length(parts[0])  # where "Exif\0\0" starts (if it occurs)
    tiff = marker + len(_EXIF_MARKER)
    found = (tf.size(parts) == 2) & (marker >= 4)
    found &= tf.strings.substr(head, tf.maximum(marker - 4, 0), 2) == _APP1
    little_endian = tf.strings.substr(head, tf.minimum(tiff, tf.strings.length(head)), 2) == b"II"
    directory = tf.cast(tiff, tf.int64) + _read_uint(head, tiff + 4, 4, little_endian)
    directory = tf.cast(tf.minimum(directory, _EXIF_SEARCH_BYTES), tf.int32)
    count = tf.minimum(_read_uint(head, directory, 2, little_endian), _EXIF_MAX_ENTRIES)
    entries = tf.range(tf.cast(count, tf.int32))
    starts = directory + 2 + 12 * entries
    tags = tf.map_fn(
        lambda start: _read_uint(head, start, 2, little_endian),
        starts,
        fn_output_signature=tf.int64,
    )
    values = tf.map_fn(
        lambda start: _read_uint(head, start + 8, 2, little_endian),
        starts,
        fn_output_signature=tf.int64,
    )
    matches = tf.boolean_mask(values, tf.equal(tags, _ORIENTATION_TAG))
    orientation = tf.cond(
        tf.size(matches) > 0, lambda: matches[0], lambda: tf.constant(1, tf.int64)
    )
    valid = found & (orientation >= 1) & (orientation <= 8)
    return tf.where(valid, tf.cast(orientation, tf.int32), 1)


def apply_orientation(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Turns an (H, W, C) image upright for an EXIF orientation 1-8 (as OpenCV does)."""
    transpose = lambda: tf.transpose(image, [1, 0, 2])
    return tf.switch_case(
        orientation - 1,
        [
            lambda: image,  # 1: upright
            lambda: tf.image.flip_left_right(image),  # 2: mirrored
            lambda: tf.image.rot90(image, 2),  # 3: upside down
            lambda: tf.image.flip_up_down(image),  # 4: mirrored upside down
            transpose,  # 5: mirrored, rotated
            lambda: tf.image.rot90(image, 3),  # 6: needs 90 degrees clockwise
            lambda: tf.image.rot90(transpose(), 2),  # 7: transverse
            lambda: tf.image.rot90(image, 1),  # 8: needs 90 degrees counter-clockwise
        ],
    )


def image_header_size(data: tf.Tensor, is_jpeg: tf.Tensor) -> tf.Tensor:
    """(height, width) int64 from a JPEG's frame header or a PNG's IHDR chunk, without
    decoding the pixels (fails on a JPEG without a readable frame header)."""

    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64)

    def png():
        big_endian = tf.constant(False)
        return tf.stack([_read_uint(data, 20, 4, big_endian), _read_uint(data, 16, 4, big_endian)])

    return tf.cond(is_jpeg, jpeg, png)


def jpeg_too_small(height: tf.Tensor, width: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """True for a JPEG of `size` bytes that cannot hold height x width pixels.

    A Huffman-coded scan (baseline or progressive) spends at least one bit on every
    8 x 8 block of a component (a DC code is at least a bit long), so a file of fewer
    bytes than an eighth of its luma blocks is truncated or lies about its size: a
    64 x 64 image's data under a 7000 x 7000 header decodes to grey without an error.
    (An arithmetic-coded JPEG, very rare, could be smaller and is refused too.)"""
    blocks = ((height + 7) // 8) * ((width + 7) // 8)
    return tf.cast(size, tf.int64) * 8 < blocks


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
        max_pixels: int = DEFAULT_MAX_PIXELS,
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
        valid = tf.equal(status, STATUS_OK)
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
        is_jpeg = tf.io.is_jpeg(data)
        is_png = tf.strings.substr(data, 0, len(_PNG_MAGIC)) == _PNG_MAGIC
        known = is_jpeg | is_png
        header = tf.cond(
            known, lambda: image_header_size(data, is_jpeg), lambda: tf.zeros([2], tf.int64)
        )
        too_large = header[0] * header[1] > self.max_pixels
        start = _PNG_MAGIC + _PNG_HEADER  # (substr from 0: a position past the end raises)
        no_png_header = is_png & (tf.strings.substr(data, 0, len(start)) != start)
        too_small = is_jpeg & jpeg_too_small(header[0], header[1], tf.strings.length(data))
        status = tf.where(
            no_png_header,
            STATUS_UNDECODABLE,
            tf.where(
                too_large, STATUS_TOO_LARGE, tf.where(too_small, STATUS_UNDECODABLE, STATUS_OK)
            ),
        )
        status = tf.where(known, status, STATUS_NOT_AN_IMAGE)

        def decode():
            def jpeg():
                image = tf.io.decode_jpeg(data, channels=3)
                return apply_orientation(image, exif_orientation(data))

            image = tf.cond(is_jpeg, jpeg, lambda: tf.io.decode_png(data, channels=3))
            image = tf.image.resize(image, [size, size], method="bilinear")
            image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
            top = (size - crop) // 2
            return image[top : top + crop, top : top + crop, :]

        pixels = tf.cond(
            tf.equal(status, STATUS_OK), decode, lambda: tf.zeros([crop, crop, 3], tf.float32)
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
            (tf.constant(-1), tf.zeros([crop, crop, 3], tf.float32), tf.constant(STATUS_OK))
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
            tf.fill([count], STATUS_UNDECODABLE), where, tf.boolean_mask(statuses, decoded)
        )
        return self._outputs(pixels, status)

    def _encode_features(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._outputs(features, tf.zeros([tf.shape(features)[0]], tf.int32))

    def _encode_pixels(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._outputs(images, tf.zeros([tf.shape(images)[0]], tf.int32))


def load_quantization_encoder(workdir: str, checkpoint: str = "best"):
    """The extra serving outputs' encoder of a run's method (`Method.serving_encoder`):
    WSDHQ's quantizer as graph ops; None for binary-code methods."""
    with open(os.path.join(workdir, "run_info.json")) as f:
        config = config_from_dict(json.load(f)["config"])
    method = METHODS.get(config.method.name)(config)
    return method.serving_encoder(checkpoint_path(workdir, checkpoint), workdir)


def export_saved_model(
    model: keras.Model,
    pipeline_config,
    output: str,
    overwrite: bool = False,
    quantization_encoder=None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    feature_extractor=None,
    info: dict | None = None,
) -> str:
    """Writes the SavedModel to `output` atomically (a temporary folder, then a rename).

    Args:
        quantization_encoder: `load_quantization_encoder(...)` for WSDHQ runs; adds the
            `quantization_codes` output.
        max_pixels: the largest width x height the image signature decodes.
        feature_extractor: a model on features served by image (`HashingServingModule`);
            `pipeline_config` then holds the extraction's resize and crop sides.
        info: more entries for `EXPORT_INFO_FILE` (e.g. the feature model's SHA-256).

    Returns:
        `output`.
    """
    output = os.path.abspath(output)
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it.")
    module = HashingServingModule(
        model,
        pipeline_config.image_size,
        pipeline_config.crop_size,
        quantization_encoder,
        max_pixels=max_pixels,
        feature_extractor=feature_extractor,
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
        # Which network this is, for the service's fit check against an index.
        info_path = os.path.join(temporary, EXPORT_INFO_FILE)
        os.makedirs(os.path.dirname(info_path), exist_ok=True)
        with open(info_path, "w", encoding="utf-8") as f:
            # The head's fingerprint also for a composed model: it is what the run's
            # codes file (and an index built from it) records.
            json.dump({"model_fingerprint": weights_fingerprint(model), **(info or {})}, f)
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
