"""Image preprocessing ops: decoding, crops, flips, training augmentations and
per-backbone normalisation.

Each op works on one image (or one element of a `tf.data` pipeline) and is tested both
eagerly and inside `tf.data`. Training augmentations are registered by name so that
each method's flagfile names its authors' recipe (`--augment`); normalisations are
registered by name so that a backbone declares the one its pretrained weights expect.
"""

from __future__ import annotations

import atexit
import gc
import sys
import threading
from collections.abc import Callable

import cv2
import numpy as np
import tensorflow as tf

from wsdhash.registry import Registry

# -----------------------------------------------------------------------------
# Decoding
# -----------------------------------------------------------------------------


class CorruptImageError(ValueError):
    """An image file could not be decoded."""


class CorruptImageLog:
    """Collects the paths of images skipped because they could not be decoded.

    The decoder runs on `tf.data` worker threads, hence the lock.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._paths: list[str] = []

    def add(self, path: str) -> None:
        with self._lock:
            self._paths.append(path)

    @property
    def paths(self) -> list[str]:
        with self._lock:
            return sorted(set(self._paths))

    def __len__(self) -> int:
        return len(self.paths)


def decode_and_resize(data: bytes, path: str, size: int) -> np.ndarray | None:
    """Decodes image bytes with OpenCV into RGB uint8 (size, size, 3), or None if corrupt.

    OpenCV rather than `tf.io.decode_image` because it is what WSDHQ trains with
    (`cv2.imread` + `cv2.resize` to 256x256, bilinear, aspect ratio not kept), and because
    a failure can be reported with the file's path.
    """
    buffer = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        return None
    if image.shape[:2] != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _release_iterators_before_shutdown() -> None:
    """Destroys unreferenced `tf.data` iterators while their decodes can still finish.

    An iterator over `make_image_loader` images has OpenCV decodes (`tf.numpy_function`)
    in flight on tf.data threads, and its destructor cancels those threads and waits for
    them. Destroyed during interpreter shutdown (the final garbage collection or module
    teardown), it waits forever: by then a thread that needs the GIL to finish its
    decode can no longer take it (tensorflow/tensorflow#21277; an infinite iterator
    left in a reference cycle hangs the exit every time). atexit functions run before
    that point, while every thread can still run Python, so this drops the last uncaught
    exception (whose traceback keeps the frames, and their iterators, alive) and
    collects garbage there. Iterators still referenced from module globals or other
    live objects are not covered: delete them (and `gc.collect()`) before exiting.
    """
    for name in ("last_exc", "last_value", "last_traceback"):
        if getattr(sys, name, None) is not None:
            setattr(sys, name, None)
    gc.collect()


# Registered after TensorFlow's own atexit functions (imported above), so it runs first.
atexit.register(_release_iterators_before_shutdown)


def make_image_decoder(
    size: int,
    corrupt_log: CorruptImageLog | None = None,
    read: Callable[[int], bytes] | None = None,
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """Returns `(encoded bytes, name) -> (uint8 image (size, size, 3), ok)` for `tf.data`.

    The bytes are a whole image file as on disk; `name` (its path) names it in errors.
    With `read`, the first argument is instead an int64 key and the bytes are
    `read(key)`, called in the same Python call as the decoding (e.g. a record of a
    TFRecord shard: wsdhash/data/tfrecords.py).

    Args:
        size: the square size images are resized to.
        corrupt_log: where undecodable images are recorded. When None, an undecodable
            image raises `CorruptImageError` naming its path; otherwise it is logged, and
            the decoder returns a black image with `ok = False` for the caller to filter.
        read: optional key -> encoded image bytes.
    """

    def decode(data, path: bytes) -> tuple[np.ndarray, bool]:
        if read is not None:
            data = read(int(data))
        image = decode_and_resize(data, path.decode(), size)
        if image is not None:
            return image, True
        if corrupt_log is None:
            raise CorruptImageError(f"Cannot decode image file: {path.decode()}")
        corrupt_log.add(path.decode())
        return np.zeros((size, size, 3), np.uint8), False

    def decode_bytes(data: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, ok = tf.numpy_function(
            decode, [data, path], [tf.uint8, tf.bool], stateful=False, name="decode_image"
        )
        image.set_shape([size, size, 3])
        ok.set_shape([])
        return image, ok

    return decode_bytes


def make_image_loader(
    size: int, corrupt_log: CorruptImageLog | None = None
) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """Returns `path -> (uint8 image (size, size, 3), ok)` for use inside `tf.data`: the
    file read, then `make_image_decoder`'s decoding (see there for `corrupt_log`)."""
    decode_bytes = make_image_decoder(size, corrupt_log)

    def load(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return decode_bytes(tf.io.read_file(path), path)

    return load


# -----------------------------------------------------------------------------
# Crops and flips
# -----------------------------------------------------------------------------


def random_crop_and_flip(image: tf.Tensor, crop_size: int, seed: tf.Tensor) -> tf.Tensor:
    """Random `crop_size` square crop, then a random horizontal flip.

    Stateless ops with an explicit seed so the augmentation of the n-th element is the
    same in every run (and after a resume).

    Args:
        image: (H, W, 3) image.
        crop_size: side of the crop.
        seed: int32/int64 (2,) seed.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    channels = image.shape[-1]
    image = tf.image.stateless_random_crop(image, [crop_size, crop_size, channels], crop_seed)
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def center_crop(image: tf.Tensor, crop_size: int) -> tf.Tensor:
    """The central `crop_size` square (rounded towards the top left)."""
    height, width = image.shape[0], image.shape[1]
    top, left = (height - crop_size) // 2, (width - crop_size) // 2
    return image[top : top + crop_size, left : left + crop_size]


def ten_crop_offsets(image_size: int, crop_size: int) -> list[tuple[int, int]]:
    """(top, left) offsets of the four corner crops and the centre crop.

    The corner offset is rounded down to an even number so that the centre crop sits
    exactly half-way; for 256 -> 227 this gives WSDHQ's offsets 0, 28 and 14.
    """
    span = 2 * ((image_size - crop_size) // 2)
    if span < 0:
        raise ValueError(f"crop_size {crop_size} is larger than image_size {image_size}.")
    return [(0, 0), (span, span), (span, 0), (0, span), (span // 2, span // 2)]


def ten_crop(image: tf.Tensor, crop_size: int) -> tf.Tensor:
    """WSDHQ's test-time 10-crop: 5 crops of the flipped image, then of the image.

    Returns:
        (10, crop_size, crop_size, C); the model's outputs on the 10 crops are averaged.
    """
    size = image.shape[0]
    crops = []
    for view in (tf.image.flip_left_right(image), image):
        for top, left in ten_crop_offsets(size, crop_size):
            crops.append(view[top : top + crop_size, left : left + crop_size])
    return tf.stack(crops)


# -----------------------------------------------------------------------------
# Training augmentations: one per published input recipe
# -----------------------------------------------------------------------------

# name -> op(image (S, S, C) as decoded and resized to image_size, crop_size, seed (2,))
# -> (crop_size, crop_size, C). Each method's flagfile names the one its authors' code
# trains with (`--augment`); evaluation always takes the centre crop (or 10 crops).
AUGMENTATIONS: Registry[Callable[[tf.Tensor, int, tf.Tensor], tf.Tensor]] = Registry("augmentation")
# Augmentations that train on the whole decoded image (no crop). Evaluation's centre
# crop sees the same view only when image_size == crop_size, which they require.
WHOLE_IMAGE_AUGMENTATIONS = ("resize", "resize_flip")


def _flip_seed(seed: tf.Tensor) -> tf.Tensor:
    # The second of two seeds split from the element's seed, as `random_crop_and_flip`
    # flips: `resize_flip` at image_size == crop_size then equals `random_crop_flip`.
    return tf.random.experimental.stateless_split(seed, 2)[1]


def _check_whole_image(image: tf.Tensor, crop_size: int, name: str) -> None:
    if image.shape[0] != crop_size or image.shape[1] != crop_size:
        raise ValueError(
            f"augment={name!r} trains on the whole image, resized to crop_size={crop_size}; "
            f"got a {image.shape[0]}x{image.shape[1]} image (set image_size = crop_size)."
        )


def augment_random_crop_flip(image: tf.Tensor, crop_size: int, seed: tf.Tensor) -> tf.Tensor:
    """A random `crop_size` crop and a random horizontal flip (the default; e.g.
    DeepHash-pytorch's RandomCrop + RandomHorizontalFlip, WSDHQ's random_crop + flip)."""
    return random_crop_and_flip(image, crop_size, seed)


def augment_center_crop(image: tf.Tensor, crop_size: int, seed: tf.Tensor) -> tf.Tensor:
    """The evaluation's centre crop in training too, no flip (DPSH's Scale(256) +
    CenterCrop(224) for every split)."""
    del seed  # deterministic
    return center_crop(image, crop_size)


def augment_resize(image: tf.Tensor, crop_size: int, seed: tf.Tensor) -> tf.Tensor:
    """The whole image, resized to `crop_size` when decoded: no crop, no flip
    (GreedyHash's and BiHalf's CIFAR transforms.Scale(224)). Needs image_size ==
    crop_size."""
    del seed  # deterministic
    _check_whole_image(image, crop_size, "resize")
    return image


def augment_resize_flip(image: tf.Tensor, crop_size: int, seed: tf.Tensor) -> tf.Tensor:
    """The whole image, resized to `crop_size` when decoded, and a random horizontal
    flip (HyP2's Resize + RandomHorizontalFlip). Needs image_size == crop_size."""
    _check_whole_image(image, crop_size, "resize_flip")
    return tf.image.stateless_random_flip_left_right(image, _flip_seed(seed))


AUGMENTATIONS.register("random_crop_flip")(augment_random_crop_flip)
AUGMENTATIONS.register("center_crop")(augment_center_crop)
AUGMENTATIONS.register("resize")(augment_resize)
AUGMENTATIONS.register("resize_flip")(augment_resize_flip)


# -----------------------------------------------------------------------------
# Normalisation (inputs are float32 RGB in [0, 255])
# -----------------------------------------------------------------------------

NORMALIZATIONS: Registry[Callable[[tf.Tensor], tf.Tensor]] = Registry("normalization")

# Caffe's ImageNet mean in BGR order.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TORCH_IMAGENET_MEAN = (0.485, 0.456, 0.406)
TORCH_IMAGENET_STD = (0.229, 0.224, 0.225)
# The DNNH re-implementation normalises with CIFAR-10 statistics (docs/methods.md,
# "Triplet hashing: network, input and optimiser").
TORCH_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
TORCH_CIFAR10_STD = (0.2023, 0.1994, 0.2010)


def _affine(image: tf.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> tf.Tensor:
    """(image - mean) / std as one multiply-add: normalisation is the most expensive
    step of the input pipeline after decoding, and one fused op halves it."""
    scale = tf.constant([1.0 / s for s in std], image.dtype)
    offset = tf.constant([-m / s for m, s in zip(mean, std)], image.dtype)
    return image * scale + offset


def caffe_mean_on_rgb(image: tf.Tensor) -> tf.Tensor:
    """DeepHash / WSDHQ AlexNet: the BGR Caffe mean subtracted from RGB-ordered pixels.

    A quirk of the original code (docs/methods.md, "WSDHQ: network and input"), kept
    because the published `alexnet.npy` weights were fine-tuned with it.
    """
    return image - tf.constant(CAFFE_BGR_MEAN, image.dtype)


def caffe_bgr(image: tf.Tensor) -> tf.Tensor:
    """Keras `resnet50` ("caffe" mode): RGB -> BGR, then the BGR mean subtracted."""
    return image[..., ::-1] - tf.constant(CAFFE_BGR_MEAN, image.dtype)


def torch_imagenet(image: tf.Tensor) -> tf.Tensor:
    """torchvision weights: [0, 1], then ImageNet mean and std."""
    mean = tuple(255.0 * m for m in TORCH_IMAGENET_MEAN)
    return _affine(image, mean, tuple(255.0 * s for s in TORCH_IMAGENET_STD))


def torch_cifar10(image: tf.Tensor) -> tf.Tensor:
    """The DNNH re-implementation's quirk: [0, 1], then CIFAR-10 mean and std."""
    mean = tuple(255.0 * m for m in TORCH_CIFAR10_MEAN)
    return _affine(image, mean, tuple(255.0 * s for s in TORCH_CIFAR10_STD))


def minus_one_to_one(image: tf.Tensor) -> tf.Tensor:
    """Keras `inception_v3` / `mobilenet_v2` ("tf" mode): [-1, 1]."""
    return image * (1.0 / 127.5) - 1.0


def unit_range(image: tf.Tensor) -> tf.Tensor:
    """[0, 1]; used by the small test backbones."""
    return image * (1.0 / 255.0)


def raw_pixels(image: tf.Tensor) -> tf.Tensor:
    """[0, 255] unchanged; Keras EfficientNet rescales inside the model."""
    return image


NORMALIZATIONS.register("caffe_mean_on_rgb")(caffe_mean_on_rgb)
NORMALIZATIONS.register("caffe_bgr")(caffe_bgr)
NORMALIZATIONS.register("torch_imagenet")(torch_imagenet)
NORMALIZATIONS.register("torch_cifar10")(torch_cifar10)
NORMALIZATIONS.register("minus_one_to_one")(minus_one_to_one)
NORMALIZATIONS.register("unit_range")(unit_range)
NORMALIZATIONS.register("raw_pixels")(raw_pixels)
