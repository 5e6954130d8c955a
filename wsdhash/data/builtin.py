"""A built-in, offline, deterministic multi-label image dataset with noisy user tags.

`generate_builtin` draws synthetic scenes of 1-3 coloured or textured shapes ("concepts")
on cluttered backgrounds and gives every training image a set of photo-site style user
tags: the words for the concepts it shows (often, not always, sometimes as a synonym)
buried among frequent content-free words ("nikon", "2008", "travel", ...). It lets
training from tags and evaluation run end to end without downloads, and it writes the
real WSDHQ on-disk layout (docs/methods.md, "File formats") so the real loaders are exercised.

Files under `root` (all text UTF-8, one item per line, every line '\n'-terminated):

* `images/000000.png` ...: one folder for all splits (`.jpg` with `image_format="jpg"`).
* `train_img.txt`, `test_img.txt`, `database_img.txt`: image paths relative to `root`.
  `test` is the query split, as WSDHQ calls it.
* `train_tag.txt`: N_train x T 0/1 matrix (`np.loadtxt` layout); columns follow the
  lines of `tag_vocab.txt`.
* `train_label.txt`, `test_label.txt`, `database_label.txt`: N x C 0/1 ground-truth
  concepts, for evaluation only; columns follow `label_names.txt` (= `CONCEPTS`).
* `builtin.json`: generation parameters and format version. Written last, so a root
  without it holds an interrupted generation.

Splits are disjoint: image indices [0, num_train) are train, the next num_query are
query, the next num_database are database. Every image is drawn from a generator seeded
by (seed, image index) alone, so image i is the same whatever the split sizes are and
however the work is divided between processes.

Tag model, per training image (constants below):

* each present concept emits one of its words with probability `_P_CONCEPT_TAG`: the
  concept name itself with probability `_P_PRIMARY_WORD`, otherwise one of its 1-3
  synonyms; with `_P_EXTRA_SYNONYM` a second word of the same concept is added;
* each present solid-colour concept adds its colour word ("red") with `_P_COLOUR_TAG`;
* each absent concept emits one of its words with `_P_SPURIOUS_TAG` (tagging mistakes);
* Poisson(`_MEAN_NOISE_TAGS`) distinct noise words are drawn from `NOISE_TAGS` with
  Zipf weights 1 / rank^`_ZIPF_EXPONENT` (rank = position in `NOISE_TAGS`);
* with `_P_UNTAGGED` the image gets no tags at all.

The tag vocabulary is every word that occurs in the train split at least once, sorted
by Unicode code point (Python's `sorted`): digits first, then letters.
"""

from __future__ import annotations

import colorsys
import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import re
from collections.abc import Sequence

import cv2
import numpy as np

from wsdhash import atomic_files
from wsdhash.data import list_files

FORMAT_VERSION = 1
INFO_FILE = "builtin.json"
IMAGE_DIR = "images"


@dataclasses.dataclass(frozen=True)
class _Concept:
    """One visual concept: a shape with a solid colour or a two-colour texture."""

    name: str
    synonyms: tuple[str, ...]
    colour_word: str | None  # attribute tag; None for textured concepts
    rgb: tuple[int, int, int]  # fill colour, or the first texture colour
    rgb2: tuple[int, int, int] | None = None  # second texture colour
    texture: str | None = None  # None, "stripes" or "checker"
    scale: float = 1.0  # textures are drawn a little larger so they stay visible


# Colours are shared by pairs of concepts (circle/heart, square/arrow, ...) so that
# colour alone does not identify a concept and retrieval needs shape too.
_RED = (215, 35, 35)
_BLUE = (35, 75, 220)
_GREEN = (40, 170, 60)
_YELLOW = (240, 210, 30)
_ORANGE = (245, 130, 20)
_PURPLE = (130, 50, 180)
_PINK = (235, 90, 190)
_CYAN = (40, 200, 215)
_WHITE = (240, 240, 240)
_BLACK = (25, 25, 25)
_NAVY = (25, 35, 110)

# Order sets label columns and popularity (earlier concepts are a little more frequent).
_CONCEPT_TABLE = (
    _Concept("circle", ("round", "disc", "dot"), "red", _RED),
    _Concept("square", ("box", "block"), "blue", _BLUE),
    _Concept("triangle", ("triangular", "pyramid"), "green", _GREEN),
    _Concept("star", ("stars", "starry"), "yellow", _YELLOW),
    _Concept("cross", ("plus", "crucifix"), "white", _WHITE),
    _Concept("ring", ("hoop", "donut"), "orange", _ORANGE),
    _Concept("diamond", ("rhombus", "gem"), "cyan", _CYAN),
    _Concept("stripes", ("striped", "stripe", "zebra"), None, _WHITE, _NAVY, "stripes", 1.2),
    _Concept(
        "checkerboard", ("checkered", "chess", "chessboard"), None, _WHITE, _BLACK, "checker", 1.2
    ),
    _Concept("ellipse", ("oval", "egg"), "purple", _PURPLE),
    _Concept("hexagon", ("hexagonal", "honeycomb"), "green", _GREEN),
    _Concept("moon", ("crescent", "lunar"), "yellow", _YELLOW),
    _Concept("arrow", ("pointer", "direction"), "blue", _BLUE),
    _Concept("heart", ("love", "valentine"), "red", _RED),
    _Concept("flower", ("blossom", "petals", "daisy"), "pink", _PINK),
    _Concept("lightning", ("bolt", "thunder", "storm"), "orange", _ORANGE),
)

CONCEPTS: tuple[str, ...] = tuple(c.name for c in _CONCEPT_TABLE)
"""Concept (ground-truth label) names, in label-column order."""

CONCEPT_SYNONYMS: dict[str, tuple[str, ...]] = {c.name: c.synonyms for c in _CONCEPT_TABLE}
"""Synonym tag words of each concept (the concept name is its primary tag word)."""

CONCEPT_COLOURS: dict[str, str | None] = {c.name: c.colour_word for c in _CONCEPT_TABLE}
"""Colour attribute tag of each concept; None for the textured ones."""

NOISE_TAGS: tuple[str, ...] = (
    "nikon",
    "canon",
    "2008",
    "travel",
    "summer",
    "family",
    "explore",
    "beautiful",
    "photo",
    "art",
    "2007",
    "holiday",
    "vacation",
    "friends",
    "night",
    "party",
    "trip",
    "city",
    "nature",
    "light",
    "color",
    "people",
    "portrait",
    "wedding",
    "birthday",
    "baby",
    "dog",
    "cat",
    "home",
    "street",
    "water",
    "beach",
    "sea",
    "winter",
    "spring",
    "autumn",
    "snow",
    "flickr",
    "digital",
    "camera",
    "photography",
    "film",
    "music",
    "food",
    "garden",
    "park",
    "school",
    "church",
    "building",
    "architecture",
    "macro",
    "landscape",
    "europe",
    "usa",
    "london",
    "paris",
    "japan",
    "california",
    "2006",
    "2009",
    "christmas",
    "kids",
    "girl",
    "car",
    "bridge",
    "river",
    "lake",
    "mountain",
    "sunset",
    "clouds",
    "window",
    "vintage",
    "urban",
    "graffiti",
    "festival",
    "concert",
    "museum",
    "zoo",
    "bird",
    "horse",
    "train",
    "hotel",
    "coffee",
    "rain",
    "fun",
    "happy",
    "cute",
    "funny",
)
"""Content-free tags, most frequent first (Zipf rank order)."""

# Tag model (see the module docstring).
_P_CONCEPT_TAG = 0.7
_P_PRIMARY_WORD = 0.55
_P_EXTRA_SYNONYM = 0.15
_P_COLOUR_TAG = 0.25
_P_SPURIOUS_TAG = 0.005
_MEAN_NOISE_TAGS = 3.0
_ZIPF_EXPONENT = 1.1
_P_UNTAGGED = 0.05

# Scene model.
_NUM_OBJECTS_P = (0.45, 0.35, 0.20)  # P(1), P(2), P(3) objects per image
_CONCEPT_WEIGHTS = np.linspace(1.0, 0.5, len(_CONCEPT_TABLE))
_CONCEPT_WEIGHTS /= _CONCEPT_WEIGHTS.sum()
# Pairs that like to appear together (night sky, romance, jewellery, signs).
_PARTNERS = (("moon", "star"), ("heart", "flower"), ("ring", "diamond"), ("cross", "arrow"))
_P_PARTNER = 0.5
_SHIFT = 4  # sub-pixel bits for cv2 drawing, so small shapes keep their geometry

# Every tag word the model can emit, in a fixed order; workers return indices into it.
_TAG_WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        [w for c in _CONCEPT_TABLE for w in (c.name,) + c.synonyms]
        + [c.colour_word for c in _CONCEPT_TABLE if c.colour_word]
        + list(NOISE_TAGS)
    )
)
_TAG_INDEX = {w: i for i, w in enumerate(_TAG_WORDS)}
_CONCEPT_WORD_IDS = tuple(
    np.array([_TAG_INDEX[w] for w in (c.name,) + c.synonyms]) for c in _CONCEPT_TABLE
)
_NOISE_WORD_IDS = np.array([_TAG_INDEX[w] for w in NOISE_TAGS])
_NOISE_P = 1.0 / np.arange(1, len(NOISE_TAGS) + 1) ** _ZIPF_EXPONENT
_NOISE_P /= _NOISE_P.sum()
_PARTNER_IDS: dict[int, tuple[int, ...]] = {}
for _a, _b in _PARTNERS:
    _PARTNER_IDS.setdefault(CONCEPTS.index(_a), ())
    _PARTNER_IDS.setdefault(CONCEPTS.index(_b), ())
    _PARTNER_IDS[CONCEPTS.index(_a)] += (CONCEPTS.index(_b),)
    _PARTNER_IDS[CONCEPTS.index(_b)] += (CONCEPTS.index(_a),)

_content_words = [w for c in _CONCEPT_TABLE for w in (c.name,) + c.synonyms]
assert len(set(_content_words)) == len(_content_words), "concept words must be unique"
assert not set(NOISE_TAGS) & set(_content_words + list(CONCEPT_COLOURS.values())), (
    "noise tags must not name content"
)
assert len(set(NOISE_TAGS)) == len(NOISE_TAGS)

# Text files, in writing order; builtin.json comes after all of them.
_TEXT_FILES = (
    "label_names.txt",
    "tag_vocab.txt",
    "train_img.txt",
    "test_img.txt",
    "database_img.txt",
    "train_tag.txt",
    "train_label.txt",
    "test_label.txt",
    "database_label.txt",
)
_IMAGE_NAME = re.compile(r"^\d{6,}\.(png|jpg)$")


@dataclasses.dataclass(frozen=True)
class BuiltinInfo:
    """What `generate_builtin` produced (or found already in place).

    Attributes:
        root: the dataset folder; list-file paths are relative to it.
        seed: the generation seed.
        image_size: images are image_size x image_size x 3.
        image_format: "png" or "jpg".
        num_train: training images (the only ones with tags).
        num_query: query images, listed in `test_img.txt`.
        num_database: database images.
        label_names: the C concept names, = `CONCEPTS`.
        tag_vocab: the T tag words, in `train_tag.txt` column order.
    """

    root: str
    seed: int
    image_size: int
    image_format: str
    num_train: int
    num_query: int
    num_database: int
    label_names: tuple[str, ...]
    tag_vocab: tuple[str, ...]

    @property
    def num_concepts(self) -> int:
        return len(self.label_names)

    @property
    def num_tags(self) -> int:
        return len(self.tag_vocab)

    @property
    def num_images(self) -> int:
        return self.num_train + self.num_query + self.num_database

    def path(self, name: str) -> str:
        """Absolute path of a file of the dataset, e.g. `info.path("train_tag.txt")`."""
        return os.path.join(self.root, name)


# ----------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------


def _regular_polygon(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    angles = phase + 2 * math.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _shape_parts(name: str) -> list[tuple[np.ndarray, int]]:
    """Polygons of a concept in unit coordinates (about [-1, 1]^2), with fill values.

    Parts are filled in order into a mask; value 0 cuts holes (ring, crescent).
    """
    if name == "circle":
        return [(_regular_polygon(64), 255)]
    if name in ("square", "checkerboard"):
        return [(np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]), 255)]
    if name == "triangle":
        return [(_regular_polygon(3), 255)]
    if name == "star":
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return [(_regular_polygon(10) * radii[:, None], 255)]
    if name == "cross":
        a, w = 1.0, 0.3
        return [
            (
                np.array(
                    [
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
                ),
                255,
            )
        ]
    if name == "ring":
        return [(_regular_polygon(64), 255), (_regular_polygon(64, 0.58), 0)]
    if name == "diamond":
        return [(np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]], float), 255)]
    if name == "stripes":
        return [(np.array([[-1, -0.6], [1, -0.6], [1, 0.6], [-1, 0.6]], float), 255)]
    if name == "ellipse":
        return [(_regular_polygon(64) * [1.0, 0.55], 255)]
    if name == "hexagon":
        return [(_regular_polygon(6), 255)]
    if name == "moon":
        return [(_regular_polygon(64), 255), (_regular_polygon(64, 0.9) + [0.5, -0.15], 0)]
    if name == "arrow":
        return [
            (
                np.array(
                    [
                        [-1, -0.2],
                        [0.2, -0.2],
                        [0.2, -0.6],
                        [1, 0],
                        [0.2, 0.6],
                        [0.2, 0.2],
                        [-1, 0.2],
                    ]
                ),
                255,
            )
        ]
    if name == "heart":
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return [(np.stack([x, y + 2.5], axis=1) / 16.5, 255)]
    if name == "flower":
        theta = np.linspace(0, 2 * math.pi, 90, endpoint=False)
        r = 0.35 + 0.65 * np.abs(np.cos(2.5 * theta))
        return [(np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1), 255)]
    if name == "lightning":
        return [
            (
                np.array(
                    [[0.25, -1], [-0.5, 0.15], [-0.05, 0.15], [-0.25, 1], [0.5, -0.2], [0.05, -0.2]]
                ),
                255,
            )
        ]
    raise ValueError(f"No geometry for concept {name!r}.")


_SHAPES = tuple(_shape_parts(c.name) for c in _CONCEPT_TABLE)


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
    concept = _CONCEPT_TABLE[concept_id]
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


def _sample_concepts(rng: np.random.Generator) -> list[int]:
    """1-3 distinct concepts; partner pairs (moon and star, ...) are likelier together."""
    count = int(rng.choice(3, p=_NUM_OBJECTS_P)) + 1
    chosen = [int(rng.choice(len(CONCEPTS), p=_CONCEPT_WEIGHTS))]
    while len(chosen) < count:
        partners = [p for c in chosen for p in _PARTNER_IDS.get(c, ()) if p not in chosen]
        if partners and rng.random() < _P_PARTNER:
            chosen.append(int(partners[rng.integers(len(partners))]))
            continue
        weights = _CONCEPT_WEIGHTS.copy()
        weights[chosen] = 0.0
        chosen.append(int(rng.choice(len(CONCEPTS), p=weights / weights.sum())))
    return chosen


def _render_scene(rng: np.random.Generator, concept_ids: Sequence[int], size: int) -> np.ndarray:
    """Draws one scene, uint8 RGB (S, S, 3)."""
    image = _draw_background(rng, size)
    _draw_lines(rng, image, int(rng.integers(1, 5)))
    _draw_distractors(rng, image, int(rng.integers(0, 5)))
    placed: list[tuple[np.ndarray, float]] = []
    for concept_id in concept_ids:
        radius = size * rng.uniform(0.11, 0.2) * _CONCEPT_TABLE[concept_id].scale
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


def _sample_tags(rng: np.random.Generator, concept_ids: Sequence[int]) -> list[int]:
    """Indices into `_TAG_WORDS` of one image's user tags (see the module docstring)."""
    tags: set[int] = set()
    for concept_id in range(len(CONCEPTS)):
        words = _CONCEPT_WORD_IDS[concept_id]
        if concept_id not in concept_ids:
            if rng.random() < _P_SPURIOUS_TAG:
                tags.add(int(words[rng.integers(len(words))]))
            continue
        if rng.random() < _P_CONCEPT_TAG:
            if rng.random() < _P_PRIMARY_WORD:
                tags.add(int(words[0]))
            else:
                tags.add(int(words[1 + rng.integers(len(words) - 1)]))
            if rng.random() < _P_EXTRA_SYNONYM:
                tags.add(int(words[rng.integers(len(words))]))
        colour_word = _CONCEPT_TABLE[concept_id].colour_word
        if colour_word is not None and rng.random() < _P_COLOUR_TAG:
            tags.add(_TAG_INDEX[colour_word])
    num_noise = min(int(rng.poisson(_MEAN_NOISE_TAGS)), len(NOISE_TAGS))
    tags.update(
        int(i)
        for i in _NOISE_WORD_IDS[rng.choice(len(NOISE_TAGS), num_noise, replace=False, p=_NOISE_P)]
    )
    if rng.random() < _P_UNTAGGED:
        return []
    return sorted(tags)


# ----------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------


def _image_generators(seed: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent (labels, pixels, tags) generators of one image.

    Separate streams keep the labels and tags of image i unchanged when only the drawing
    code changes, and vice versa.
    """
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(index,))
    return tuple(np.random.Generator(np.random.PCG64(s)) for s in sequence.spawn(3))


def _image_name(index: int, image_format: str) -> str:
    return f"{IMAGE_DIR}/{index:06d}.{image_format}"


def _write_lines_atomic(path: str, lines: Sequence[str]) -> None:
    atomic_files.write_text(path, "".join(line + "\n" for line in lines))


def _generate_chunk(
    root: str,
    seed: int,
    start: int,
    stop: int,
    image_size: int,
    image_format: str,
    jpeg_quality: int,
) -> tuple[int, np.ndarray, list[list[int]]]:
    """Draws and writes images [start, stop); returns their labels and tag indices."""
    cv2.setNumThreads(1)  # parallelism comes from the process pool
    labels = np.zeros((stop - start, len(CONCEPTS)), np.uint8)
    tags = []
    if image_format == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    else:
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
    for row, index in enumerate(range(start, stop)):
        label_rng, pixel_rng, tag_rng = _image_generators(seed, index)
        concept_ids = _sample_concepts(label_rng)
        labels[row, concept_ids] = 1
        tags.append(_sample_tags(tag_rng, concept_ids))
        image = _render_scene(pixel_rng, concept_ids, image_size)
        ok, encoded = cv2.imencode(
            "." + image_format, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params
        )
        if not ok:
            raise RuntimeError(f"cv2 could not encode image {index} as {image_format}.")
        atomic_files.write_bytes(
            os.path.join(root, _image_name(index, image_format)), encoded.tobytes()
        )
    return start, labels, tags


def _params(
    seed, image_size, num_train, num_query, num_database, image_format, jpeg_quality
) -> dict:
    params = {
        "seed": seed,
        "image_size": image_size,
        "num_train": num_train,
        "num_query": num_query,
        "num_database": num_database,
        "image_format": image_format,
    }
    if image_format == "jpg":
        params["jpeg_quality"] = jpeg_quality
    return params


def _read_info(root: str) -> dict | None:
    """The parsed builtin.json, or None when absent or unreadable (= incomplete)."""
    try:
        with open(os.path.join(root, INFO_FILE), encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _info_from_record(root: str, record: dict) -> BuiltinInfo:
    params = record["params"]
    with open(os.path.join(root, "tag_vocab.txt"), encoding="utf-8") as f:
        vocab = tuple(f.read().splitlines())
    return BuiltinInfo(
        root=root,
        seed=params["seed"],
        image_size=params["image_size"],
        image_format=params["image_format"],
        num_train=params["num_train"],
        num_query=params["num_query"],
        num_database=params["num_database"],
        label_names=tuple(record["label_names"]),
        tag_vocab=vocab,
    )


def _check_root_is_ours(root: str) -> None:
    """Refuses to write into a folder holding anything but a (partial) built-in dataset."""
    known = set(_TEXT_FILES) | {INFO_FILE, IMAGE_DIR}
    foreign = sorted(
        name for name in os.listdir(root) if name not in known and not name.startswith(".")
    )
    if foreign:
        raise FileExistsError(
            f"{root} is not empty and holds no built-in dataset (found {foreign[:5]}); "
            "pass overwrite=True or choose an empty folder."
        )


def _remove_stale_images(root: str) -> None:
    """Deletes images of an earlier generation, which may have had more images."""
    image_dir = os.path.join(root, IMAGE_DIR)
    if not os.path.isdir(image_dir):
        return
    for name in os.listdir(image_dir):
        if _IMAGE_NAME.match(name) or (name.startswith(".") and name.endswith(".tmp")):
            os.remove(os.path.join(image_dir, name))


def generate_builtin(
    root: str | os.PathLike,
    *,
    seed: int = 0,
    image_size: int = 64,
    num_train: int = 5000,
    num_query: int = 500,
    num_database: int = 5000,
    image_format: str = "png",
    overwrite: bool = False,
    jpeg_quality: int = 90,
    num_workers: int | None = None,
) -> BuiltinInfo:
    """Writes the built-in dataset under `root`, or finds it already there.

    Calling it again with the same arguments returns at once without rewriting anything,
    so callers can call it unconditionally. A root without `builtin.json` holds an
    interrupted generation and is regenerated.

    Args:
        root: dataset folder; created if needed.
        seed: one seed for everything; the same seed gives byte-identical files.
        image_size: side of the square RGB images, >= 16. Geometry scales with it.
        num_train: training images (with tags and labels).
        num_query: query images (`test_img.txt`, `test_label.txt`).
        num_database: database images; disjoint from query and train.
        image_format: "png" (lossless) or "jpg" ("jpeg" is accepted as "jpg").
        overwrite: regenerate even if `root` holds a dataset with other parameters.
        jpeg_quality: JPEG quality, used only for "jpg".
        num_workers: processes drawing images; 0 draws in this process; None picks
            one per CPU core (at most 8) for large datasets. Does not change the output.
            Workers are started with "spawn", so a script that calls this at import
            time needs the usual `if __name__ == "__main__":` guard.

    Returns:
        A `BuiltinInfo` describing the dataset.

    Raises:
        ValueError: on invalid arguments.
        FileExistsError: `root` holds a dataset generated with other parameters, or
            unrelated files, and `overwrite` is False.
    """
    root = os.path.abspath(os.fspath(root))
    image_format = {"jpeg": "jpg"}.get(image_format.lower(), image_format.lower())
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}.")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}.")
    for name, count in (
        ("num_train", num_train),
        ("num_query", num_query),
        ("num_database", num_database),
    ):
        if int(count) != count or count < 1:
            raise ValueError(f"{name} must be a positive integer, got {count!r}.")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a non-negative integer, got {seed}.")
    params = _params(
        int(seed),
        int(image_size),
        int(num_train),
        int(num_query),
        int(num_database),
        image_format,
        int(jpeg_quality),
    )

    # ---- Reuse what is there, or make sure we may write. -------------------------------
    record = _read_info(root)
    if record is not None:
        same = record.get("format_version") == FORMAT_VERSION and record.get("params") == params
        if same and all(os.path.isfile(os.path.join(root, f)) for f in _TEXT_FILES):
            return _info_from_record(root, record)
        if not overwrite:
            raise FileExistsError(
                f"{root} holds a built-in dataset generated with "
                f"{record.get('params')} (format {record.get('format_version')}), not "
                f"{params} (format {FORMAT_VERSION}); pass overwrite=True to replace it "
                "or choose another root."
            )
    elif os.path.isdir(root) and not overwrite:
        _check_root_is_ours(root)
    os.makedirs(os.path.join(root, IMAGE_DIR), exist_ok=True)
    # Removing the marker first means an interruption from here on is detected.
    if os.path.exists(os.path.join(root, INFO_FILE)):
        os.remove(os.path.join(root, INFO_FILE))
    _remove_stale_images(root)

    # ---- Draw images, labels and tags. -------------------------------------------------
    total = num_train + num_query + num_database
    if num_workers is None:
        num_workers = 0 if total < 1000 else min(os.cpu_count() or 1, 8)
    labels = np.zeros((total, len(CONCEPTS)), np.uint8)
    tag_ids: list[list[int]] = [[] for _ in range(total)]
    args = (root, params["seed"], params["image_size"], image_format, int(jpeg_quality))
    if num_workers <= 1:
        chunks = [_generate_chunk(*args[:2], 0, total, *args[2:])]
    else:
        # Small chunks balance the load; results are placed by index, so the split of
        # work never changes the output. "spawn" avoids forking a parent that may
        # already run TensorFlow or OpenCV threads.
        chunk = max(1, min(500, math.ceil(total / (4 * num_workers))))
        with concurrent.futures.ProcessPoolExecutor(
            num_workers, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            futures = [
                pool.submit(_generate_chunk, *args[:2], start, min(start + chunk, total), *args[2:])
                for start in range(0, total, chunk)
            ]
            chunks = [f.result() for f in futures]
    for start, chunk_labels, chunk_tags in chunks:
        labels[start : start + len(chunk_labels)] = chunk_labels
        tag_ids[start : start + len(chunk_tags)] = chunk_tags

    # ---- Write the WSDHQ text files, then the marker. ----------------------------------
    train = range(num_train)
    query = range(num_train, num_train + num_query)
    database = range(num_train + num_query, total)
    used = sorted({i for row in tag_ids[:num_train] for i in row})
    vocab = sorted(_TAG_WORDS[i] for i in used)
    column = {_TAG_INDEX[word]: j for j, word in enumerate(vocab)}
    train_tags = np.zeros((num_train, len(vocab)), np.uint8)
    for row, ids in enumerate(tag_ids[:num_train]):
        train_tags[row, [column[i] for i in ids]] = 1

    contents = {
        "label_names.txt": list(CONCEPTS),
        "tag_vocab.txt": vocab,
        "train_img.txt": [_image_name(i, image_format) for i in train],
        "test_img.txt": [_image_name(i, image_format) for i in query],
        "database_img.txt": [_image_name(i, image_format) for i in database],
        "train_tag.txt": list_files.matrix_lines(train_tags),
        "train_label.txt": list_files.matrix_lines(labels[:num_train]),
        "test_label.txt": list_files.matrix_lines(labels[query.start : query.stop]),
        "database_label.txt": list_files.matrix_lines(labels[database.start : database.stop]),
    }
    assert tuple(contents) == _TEXT_FILES
    for name, lines in contents.items():
        _write_lines_atomic(os.path.join(root, name), lines)
    record = {
        "format_version": FORMAT_VERSION,
        "generator": __name__,
        "params": params,
        "label_names": list(CONCEPTS),
        "num_tags": len(vocab),
        "files": list(_TEXT_FILES),
    }
    atomic_files.write_bytes(
        os.path.join(root, INFO_FILE),
        (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(),
    )
    return _info_from_record(root, record)
