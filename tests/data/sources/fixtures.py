"""Small fixture trees in the datasets' real on-disk formats."""

import os

import cv2
import numpy as np


def write_jpeg(path, seed=0, size=12):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    with open(path, "wb") as f:
        f.write(data.tobytes())
    return data.tobytes()


def write_png_bytes(seed=0, size=8):
    image = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def write_text(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{line}\n" for line in lines))
