"""How a quantized model's input says which pixel normalisation it expects.

A TensorFlow Lite model with a uint8 or int8 input stores, for that input, a scale s and
a zero point z: an integer q stands for the real value r = (q - z) * s, so the model was
trained on real inputs within [(q_min - z) * s, (q_max - z) * s]. For a uint8 input with
s = 1/128 and z = 128 (MobileNet's quantized models) that is [-1, 0.992]: pixels mapped
with `minus_one_to_one`. Feeding it `raw_pixels` ([0, 255]) saturates almost every
pixel at q_max, and the features collapse to a few distinct rows.

`pixel_normalization` derives the normalisation from these parameters: pixels 0..255
mapped linearly onto the input's whole range (for uint8, q = the pixel itself), named
after the registered normalisation it equals when there is one.
`check_normalization` refuses a normalisation that contradicts the input: one that puts
some pixel value more than a quarter of the input's range away from where the linear
mapping puts it (so raw_pixels or unit_range for an input made for [-1, 1]), while
still allowing one that differs in detail (a model trained with per-channel ImageNet
statistics and quantized over their range is within a few levels of the linear map).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from wsdhash.data.preprocessing import NORMALIZATIONS

# Registered normalisations tried, in this order, as names for the derived mapping.
_CANDIDATES = ("raw_pixels", "unit_range", "minus_one_to_one")
# A normalisation within this many levels of the derived mapping at every pixel value
# is the same mapping (rounding differs at most by one level).
_SAME_LEVELS = 1.0
# A normalisation further than this fraction of the input's levels from the derived
# mapping at some pixel value contradicts the input (module doc).
_CONTRADICTION_FRACTION = 0.25


@dataclasses.dataclass(frozen=True)
class InputQuantization:
    """The quantization of a model's image input: q = r / scale + zero_point.

    Attributes:
        scale: s > 0.
        zero_point: z.
        dtype: "uint8" or "int8".
    """

    scale: float
    zero_point: int
    dtype: str

    @property
    def levels(self) -> tuple[int, int]:
        """(q_min, q_max) of the integer type."""
        info = np.iinfo(self.dtype)
        return int(info.min), int(info.max)

    @property
    def float_range(self) -> tuple[float, float]:
        """The real values the input can hold, [(q_min - z) s, (q_max - z) s]."""
        low, high = self.levels
        return (low - self.zero_point) * self.scale, (high - self.zero_point) * self.scale

    def describe(self) -> str:
        low, high = self.float_range
        return (
            f"{self.dtype} input (scale {self.scale:.6g}, zero point {self.zero_point}) "
            f"holds values in [{low:.4g}, {high:.4g}]"
        )


def _pixel_values(normalize: Callable[[tf.Tensor], tf.Tensor]) -> np.ndarray:
    """(256, 3) real values of pixel values 0..255 in each channel."""
    pixels = tf.tile(tf.reshape(tf.range(256, dtype=tf.float32), [1, 256, 1, 1]), [1, 1, 1, 3])
    return np.asarray(normalize(pixels), np.float64).reshape(256, 3)


def _pixel_levels(normalize: Callable[[tf.Tensor], tf.Tensor], quantization) -> np.ndarray:
    """(256, 3) unclipped levels r / s + z of pixel values 0..255 in each channel."""
    return _pixel_values(normalize) / quantization.scale + quantization.zero_point


def _linear_levels(quantization: InputQuantization) -> np.ndarray:
    """(256, 1) levels of the derived mapping: pixel p -> q_min + p (scaled when the
    integer type has other than 256 levels)."""
    low, high = quantization.levels
    return (low + np.arange(256, dtype=np.float64) * (high - low) / 255)[:, None]


def pixel_normalization(
    quantization: InputQuantization,
) -> tuple[str, Callable[[tf.Tensor], tf.Tensor]]:
    """(name, function) of the normalisation the input's quantization implies: pixels
    0..255 mapped linearly onto `float_range` (module doc).

    The name is a registered normalisation's when it quantizes to the same levels
    (within one), else `input_quantization(scale=S,zero_point=Z)`.
    """
    expected = _linear_levels(quantization)
    for name in _CANDIDATES:
        normalize = NORMALIZATIONS.get(name)
        if np.abs(_pixel_levels(normalize, quantization) - expected).max() <= _SAME_LEVELS:
            return name, normalize
    low, high = quantization.float_range
    step = (high - low) / 255

    def normalize(images: tf.Tensor) -> tf.Tensor:
        return images * step + low

    return (
        f"input_quantization(scale={quantization.scale:.6g},zero_point={quantization.zero_point})",
        normalize,
    )


def check_normalization(
    name: str, quantization: InputQuantization, *, model: str = "the model"
) -> None:
    """Raises ValueError, naming both, when normalisation `name` contradicts the input's
    quantization (module doc)."""
    real = _pixel_values(NORMALIZATIONS.get(name))
    levels = real / quantization.scale + quantization.zero_point
    low, high = quantization.levels
    distance = np.abs(levels - _linear_levels(quantization)).max()
    if distance <= _CONTRADICTION_FRACTION * (high - low):
        return
    # More than one level out (one is rounding: minus_one_to_one puts 255 at q_max + 1).
    saturated = int(np.sum(((levels < low - 1) | (levels > high + 1)).any(axis=1)))
    if saturated:
        effect = f"{saturated} of the 256 pixel values would saturate"
    else:
        used = (np.clip(levels, low, high).max() - np.clip(levels, low, high).min()) / (high - low)
        effect = f"pixels would use {used:.0%} of the input's levels, shifted"
    derived, _ = pixel_normalization(quantization)
    raise ValueError(
        f"--normalization={name} contradicts {model}: its {quantization.describe()}, but "
        f"{name} maps pixels 0..255 to [{real.min():.4g}, {real.max():.4g}] ({effect}); "
        f"leave --normalization out to use the model's own ({derived})."
    )
