"""WSDHQ tag processing: raw tag vocabulary -> merged tags with fixed embeddings.

The original `tag_preproc.py` is not public (docs/methods.md, "WSDHQ: tag processing"),
so this package is our own documented design that produces the artefacts the WSDHQ
training code consumes:

* `FinalTagEmbs.txt`: T' x D float matrix, one L2-normalised row per merged tag;
* the merge map `{merged_id: [raw tag column indices]}` whose iteration order is the
  row order of `FinalTagEmbs.txt` (the row-order contract of docs/methods.md, "WSDHQ:
  tag processing").

Modules: `word_vectors` (loading pretrained or training word vectors, restricted to the
words needed), `processing` (the steps as pure functions and `process_tags`), `files`
(reading and writing the artefacts and the report). The command line is
`python -m wsdhash.tags`.
"""

from wsdhash.tagging.files import load_merge_map, merged_labels, read_final_embeddings
from wsdhash.tagging.processing import TagProcessingResult, process_tags

__all__ = [
    "TagProcessingResult",
    "load_merge_map",
    "merged_labels",
    "process_tags",
    "read_final_embeddings",
]
