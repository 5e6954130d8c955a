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

Tag model, per training image (constants in `tags.py`):

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

from wsdhash.data.builtin.concepts import CONCEPT_COLOURS, CONCEPT_SYNONYMS, CONCEPTS, NOISE_TAGS
from wsdhash.data.builtin.writing import (
    FORMAT_VERSION,
    IMAGE_DIR,
    INFO_FILE,
    BuiltinInfo,
    generate_builtin,
)

__all__ = [
    "CONCEPTS",
    "CONCEPT_COLOURS",
    "CONCEPT_SYNONYMS",
    "FORMAT_VERSION",
    "IMAGE_DIR",
    "INFO_FILE",
    "NOISE_TAGS",
    "BuiltinInfo",
    "generate_builtin",
]
