"""Hand-made image features for the unsupervised baselines: no network, no weights.

The baselines hash whatever features they are given; on a machine with no pretrained
network these are the honest reference point: tiny thumbnails (layout and colour) plus
a joint colour histogram (colour, position-free).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent import futures

import cv2
import numpy as np


def _read_rgb(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"Cannot decode image file: {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_features(
    paths: Sequence[str], *, thumbnail: int = 8, bins: int = 4, num_threads: int = 4
) -> np.ndarray:
    """Thumbnail pixels and a joint RGB histogram of each image.

    Args:
        paths: image files.
        thumbnail: side of the area-averaged thumbnail (3 * thumbnail**2 values in [0, 1]).
        bins: histogram bins per channel (bins**3 values, each image's histogram sums to 1).
        num_threads: decoding threads (OpenCV releases the GIL).

    Returns:
        float32 (N, 3 * thumbnail**2 + bins**3).
    """

    def describe(path: str) -> np.ndarray:
        image = _read_rgb(path)
        small = cv2.resize(image, (thumbnail, thumbnail), interpolation=cv2.INTER_AREA)
        quantized = (image.astype(np.int32) * bins) // 256  # (H, W, 3) in [0, bins)
        joint = (quantized[..., 0] * bins + quantized[..., 1]) * bins + quantized[..., 2]
        histogram = np.bincount(joint.ravel(), minlength=bins**3) / joint.size
        return np.concatenate([small.ravel() / 255.0, histogram]).astype(np.float32)

    with futures.ThreadPoolExecutor(num_threads) as pool:
        rows = list(pool.map(describe, paths))
    if not rows:
        return np.zeros((0, 3 * thumbnail**2 + bins**3), np.float32)
    return np.stack(rows)
