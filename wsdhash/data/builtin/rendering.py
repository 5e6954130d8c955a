"""Drawing the built-in dataset's scenes: backgrounds, clutter and the concepts'
shapes, with OpenCV at sub-pixel precision."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import cv2
import numpy as np

from wsdhash.data.builtin.concepts import CONCEPT_TABLE

_SHIFT = 4  # sub-pixel bits for cv2 drawing, so small shapes keep their geometry


def _regular_polygon(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    angles = phase + 2 * math.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


# The concepts' geometry: polygons in unit coordinates (about [-1, 1]^2), with fill
# values. Parts are filled in order into a mask; value 0 cuts holes (ring, crescent).
Parts = list[tuple[np.ndarray, int]]


def _circle() -> Parts:
    return [(_regular_polygon(64), 255)]


def _square() -> Parts:
    return [(np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]), 255)]


def _triangle() -> Parts:
    return [(_regular_polygon(3), 255)]


def _star() -> Parts:
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return [(_regular_polygon(10) * radii[:, None], 255)]


def _cross() -> Parts:
    a, w = 1.0, 0.3
    outline = [
        [-w, -a],
        [w, -a],
        [w, -w],
        [a, -w],
        [a, w],
        [w, w],
        [w, a],
        [-w, a],
        [-w, w],
        [-a, w],
        [-a, -w],
        [-w, -w],
    ]
    return [(np.array(outline), 255)]


def _ring() -> Parts:
    return [(_regular_polygon(64), 255), (_regular_polygon(64, 0.58), 0)]


def _diamond() -> Parts:
    return [(np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]], float), 255)]


def _stripes() -> Parts:
    return [(np.array([[-1, -0.6], [1, -0.6], [1, 0.6], [-1, 0.6]], float), 255)]


def _ellipse() -> Parts:
    return [(_regular_polygon(64) * [1.0, 0.55], 255)]


def _hexagon() -> Parts:
    return [(_regular_polygon(6), 255)]


def _moon() -> Parts:
    return [(_regular_polygon(64), 255), (_regular_polygon(64, 0.9) + [0.5, -0.15], 0)]


def _arrow() -> Parts:
    outline = [[-1, -0.2], [0.2, -0.2], [0.2, -0.6], [1, 0], [0.2, 0.6], [0.2, 0.2], [-1, 0.2]]
    return [(np.array(outline), 255)]


def _heart() -> Parts:
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [(np.stack([x, y + 2.5], axis=1) / 16.5, 255)]


def _flower() -> Parts:
    theta = np.linspace(0, 2 * math.pi, 90, endpoint=False)
    r = 0.35 + 0.65 * np.abs(np.cos(2.5 * theta))
    return [(np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1), 255)]


def _lightning() -> Parts:
    outline = [[0.25, -1], [-0.5, 0.15], [-0.05, 0.15], [-0.25, 1], [0.5, -0.2], [0.05, -0.2]]
    return [(np.array(outline), 255)]


_GEOMETRY = {
    "circle": _circle,
    "square": _square,
    "checkerboard": _square,
    "triangle": _triangle,
    "star": _star,
    "cross": _cross,
    "ring": _ring,
    "diamond": _diamond,
    "stripes": _stripes,
    "ellipse": _ellipse,
    "hexagon": _hexagon,
    "moon": _moon,
    "arrow": _arrow,
    "heart": _heart,
    "flower": _flower,
    "lightning": _lightning,
}


def _shape_parts(name: str) -> Parts:
    """Polygons of a concept with their fill values (see `_GEOMETRY`)."""
    if name not in _GEOMETRY:
        raise ValueError(f"No geometry for concept {name!r}.")
    return _GEOMETRY[name]()


_SHAPES = tuple(_shape_parts(c.name) for c in CONCEPT_TABLE)


def _jitter_colour(rng: np.random.Generator, rgb: Sequence[int]) -> np.ndarray:
    """Mild hue / saturation / brightness variation around a base colour."""
    h, s, v = colorsys.rgb_to_hsv(*(x / 255.0 for x in rgb))
    h = (h + rng.uniform(-0.025, 0.025)) % 1.0
    s = min(1.0, s * rng.uniform(0.8, 1.1))
    v = min(1.0, v * rng.uniform(0.8, 1.1))
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255.0


def _to_fixed(points: np.ndarray) -> np.ndarray:
    return np.round(points * (1 << _SHIFT)).astype(np.int32)


def _draw_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Muted two-colour linear gradient plus pixel noise, uint8 RGB (S, S, 3)."""
    grey = np.full(3, 128.0)
    c0 = 0.55 * rng.uniform(20, 235, 3) + 0.45 * grey
    c1 = 0.55 * rng.uniform(20, 235, 3) + 0.45 * grey
    angle = rng.uniform(0, 2 * math.pi)
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    t = 0.5 + coords[None, :] * math.cos(angle) + coords[:, None] * math.sin(angle)
    t = np.clip(t, 0.0, 1.0)
    # Per channel and in float32, and uniform rather than Gaussian noise (same standard
    # deviation `sigma`): broadcasting over a last axis of 3 and Gaussian sampling were
    # most of the drawing time at 256 px, and the look is the same.
    image = np.stack([np.float32(a) + np.float32(b - a) * t for a, b in zip(c0, c1)], -1)
    sigma = rng.uniform(2.0, 10.0)
    noise = rng.random((size, size, 3), dtype=np.float32) - np.float32(0.5)
    image += np.float32(sigma * math.sqrt(12.0)) * noise
    return np.clip(image, 0, 255).astype(np.uint8)


def _draw_lines(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    size = image.shape[0]
    for _ in range(count):
        p0, p1 = rng.uniform(-0.1, 1.1, (2, 2)) * size
        colour = tuple(float(x) for x in rng.uniform(0, 255, 3))
        thickness = max(1, round(size / 128 * rng.uniform(0.6, 2.0)))
        cv2.line(
            image,
            tuple(_to_fixed(p0).tolist()),
            tuple(_to_fixed(p1).tolist()),
            colour,
            thickness,
            cv2.LINE_AA,
            _SHIFT,
        )


def _draw_distractors(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """Small irregular blobs, far smaller than any concept, in random colours."""
    size = image.shape[0]
    for _ in range(count):
        n = int(rng.integers(3, 7))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = rng.uniform(0.4, 1.0, n) * size * rng.uniform(0.015, 0.045)
        centre = rng.uniform(0, size, 2)
        points = centre + radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], 1)
        colour = tuple(float(x) for x in rng.uniform(0, 255, 3))
        cv2.fillPoly(image, [_to_fixed(points)], colour, cv2.LINE_AA, _SHIFT)


def _draw_object(
    rng: np.random.Generator, image: np.ndarray, concept_id: int, centre: np.ndarray, radius: float
) -> None:
    """Alpha-blends one rotated, scaled, colour-jittered concept into `image` in place."""
    concept = CONCEPT_TABLE[concept_id]
    size = image.shape[0]
    angle = rng.uniform(0, 2 * math.pi)
    aspect = rng.uniform(0.9, 1.1)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    linear = radius * rotation * [aspect, 1.0 / aspect]  # scales columns (local axes)
    parts = [(centre + points @ linear.T, value) for points, value in _SHAPES[concept_id]]

    # Work inside the bounding box only: at 256 px this keeps drawing cheap.
    outer = parts[0][0]
    x0, y0 = np.maximum(np.floor(outer.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(outer.max(0)).astype(int) + 2, size)
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for points, value in parts:
        cv2.fillPoly(mask, [_to_fixed(points - [x0, y0])], value, cv2.LINE_AA, _SHIFT)
    alpha = mask.astype(np.float32)[:, :, None] / 255.0

    colour = _jitter_colour(rng, concept.rgb)
    if concept.texture is None:
        fill = colour
    else:
        # Texture coordinates in the object's own frame, so the pattern turns with it.
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
        local = np.stack([xs - centre[0], ys - centre[1]], -1) @ rotation / radius
        if concept.texture == "stripes":
            wave = np.sin(2 * math.pi * 1.6 * local[..., 0])
        else:
            wave = np.sin(math.pi * 2.5 * local[..., 0]) * np.sin(math.pi * 2.5 * local[..., 1])
        # A steep clipped sine: sharp edges without the aliasing of a hard threshold.
        mix = (0.5 + 0.5 * np.clip(3.0 * wave, -1.0, 1.0))[:, :, None]
        colour2 = _jitter_colour(rng, concept.rgb2)
        fill = colour * mix + colour2 * (1 - mix)
    region = image[y0:y1, x0:x1].astype(np.float32)
    image[y0:y1, x0:x1] = np.round(region * (1 - alpha) + fill * alpha).astype(np.uint8)


def render_scene(rng: np.random.Generator, concept_ids: Sequence[int], size: int) -> np.ndarray:
    """Draws one scene, uint8 RGB (S, S, 3)."""
    image = _draw_background(rng, size)
    _draw_lines(rng, image, int(rng.integers(1, 5)))
    _draw_distractors(rng, image, int(rng.integers(0, 5)))
    placed: list[tuple[np.ndarray, float]] = []
    for concept_id in concept_ids:
        radius = size * rng.uniform(0.11, 0.2) * CONCEPT_TABLE[concept_id].scale
        # Rejection sampling keeps objects mostly apart; after 20 tries overlap is allowed.
        for _ in range(20):
            centre = rng.uniform(radius * 0.8, size - radius * 0.8, 2)
            if all(np.linalg.norm(centre - c) > 0.8 * (radius + r) for c, r in placed):
                break
        placed.append((centre, radius))
        _draw_object(rng, image, concept_id, centre, radius)
    # A few lines on top occlude the objects a little.
    _draw_lines(rng, image, int(rng.integers(0, 3)))
    return image
