"""The built-in dataset's visual concepts: shapes, colours, words, and how scenes
combine them (see the package doc)."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Concept:
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
CONCEPT_TABLE = (
    Concept("circle", ("round", "disc", "dot"), "red", _RED),
    Concept("square", ("box", "block"), "blue", _BLUE),
    Concept("triangle", ("triangular", "pyramid"), "green", _GREEN),
    Concept("star", ("stars", "starry"), "yellow", _YELLOW),
    Concept("cross", ("plus", "crucifix"), "white", _WHITE),
    Concept("ring", ("hoop", "donut"), "orange", _ORANGE),
    Concept("diamond", ("rhombus", "gem"), "cyan", _CYAN),
    Concept("stripes", ("striped", "stripe", "zebra"), None, _WHITE, _NAVY, "stripes", 1.2),
    Concept(
        "checkerboard", ("checkered", "chess", "chessboard"), None, _WHITE, _BLACK, "checker", 1.2
    ),
    Concept("ellipse", ("oval", "egg"), "purple", _PURPLE),
    Concept("hexagon", ("hexagonal", "honeycomb"), "green", _GREEN),
    Concept("moon", ("crescent", "lunar"), "yellow", _YELLOW),
    Concept("arrow", ("pointer", "direction"), "blue", _BLUE),
    Concept("heart", ("love", "valentine"), "red", _RED),
    Concept("flower", ("blossom", "petals", "daisy"), "pink", _PINK),
    Concept("lightning", ("bolt", "thunder", "storm"), "orange", _ORANGE),
)

CONCEPTS: tuple[str, ...] = tuple(c.name for c in CONCEPT_TABLE)
"""Concept (ground-truth label) names, in label-column order."""

CONCEPT_SYNONYMS: dict[str, tuple[str, ...]] = {c.name: c.synonyms for c in CONCEPT_TABLE}
"""Synonym tag words of each concept (the concept name is its primary tag word)."""

CONCEPT_COLOURS: dict[str, str | None] = {c.name: c.colour_word for c in CONCEPT_TABLE}
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

# Scene model.
_NUM_OBJECTS_P = (0.45, 0.35, 0.20)  # P(1), P(2), P(3) objects per image
_CONCEPT_WEIGHTS = np.linspace(1.0, 0.5, len(CONCEPT_TABLE))
_CONCEPT_WEIGHTS /= _CONCEPT_WEIGHTS.sum()
# Pairs that like to appear together (night sky, romance, jewellery, signs).
_PARTNERS = (("moon", "star"), ("heart", "flower"), ("ring", "diamond"), ("cross", "arrow"))
_P_PARTNER = 0.5

_PARTNER_IDS: dict[int, tuple[int, ...]] = {}
for _a, _b in _PARTNERS:
    _PARTNER_IDS.setdefault(CONCEPTS.index(_a), ())
    _PARTNER_IDS.setdefault(CONCEPTS.index(_b), ())
    _PARTNER_IDS[CONCEPTS.index(_a)] += (CONCEPTS.index(_b),)
    _PARTNER_IDS[CONCEPTS.index(_b)] += (CONCEPTS.index(_a),)

_content_words = [w for c in CONCEPT_TABLE for w in (c.name,) + c.synonyms]
assert len(set(_content_words)) == len(_content_words), "concept words must be unique"


def sample_concepts(rng: np.random.Generator) -> list[int]:
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
