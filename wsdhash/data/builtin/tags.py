"""The built-in dataset's user-tag model: which words an image's tags hold (the
package doc gives the model)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wsdhash.data.builtin.concepts import CONCEPT_COLOURS, CONCEPT_TABLE, CONCEPTS, NOISE_TAGS

# Tag model (see the module docstring).
_P_CONCEPT_TAG = 0.7
_P_PRIMARY_WORD = 0.55
_P_EXTRA_SYNONYM = 0.15
_P_COLOUR_TAG = 0.25
_P_SPURIOUS_TAG = 0.005
_MEAN_NOISE_TAGS = 3.0
_ZIPF_EXPONENT = 1.1
_P_UNTAGGED = 0.05

# Every tag word the model can emit, in a fixed order; workers return indices into it.
TAG_WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        [w for c in CONCEPT_TABLE for w in (c.name,) + c.synonyms]
        + [c.colour_word for c in CONCEPT_TABLE if c.colour_word]
        + list(NOISE_TAGS)
    )
)
TAG_INDEX = {w: i for i, w in enumerate(TAG_WORDS)}
_CONCEPT_WORD_IDS = tuple(
    np.array([TAG_INDEX[w] for w in (c.name,) + c.synonyms]) for c in CONCEPT_TABLE
)
_NOISE_WORD_IDS = np.array([TAG_INDEX[w] for w in NOISE_TAGS])
_NOISE_P = 1.0 / np.arange(1, len(NOISE_TAGS) + 1) ** _ZIPF_EXPONENT
_NOISE_P /= _NOISE_P.sum()

assert not set(NOISE_TAGS) & set(
    [w for c in CONCEPT_TABLE for w in (c.name,) + c.synonyms] + list(CONCEPT_COLOURS.values())
), "noise tags must not name content"
assert len(set(NOISE_TAGS)) == len(NOISE_TAGS)


def sample_tags(rng: np.random.Generator, concept_ids: Sequence[int]) -> list[int]:
    """Indices into `TAG_WORDS` of one image's user tags (see the module docstring)."""
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
        colour_word = CONCEPT_TABLE[concept_id].colour_word
        if colour_word is not None and rng.random() < _P_COLOUR_TAG:
            tags.add(TAG_INDEX[colour_word])
    num_noise = min(int(rng.poisson(_MEAN_NOISE_TAGS)), len(NOISE_TAGS))
    tags.update(
        int(i)
        for i in _NOISE_WORD_IDS[rng.choice(len(NOISE_TAGS), num_noise, replace=False, p=_NOISE_P)]
    )
    if rng.random() < _P_UNTAGGED:
        return []
    return sorted(tags)
