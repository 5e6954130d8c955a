"""Fits an unsupervised hashing baseline on a features file and writes a codes file.

    python -m wsdhash.baselines --features=F.h5 --method=itq --hash_bit=64 --output=codes.h5

The baseline (`BASELINES`: lsh, pcah, itq, pcarr) is fitted on one split of the features file
(`--fit_split`, the training split by default, as the published protocols fit on the
training images) and encodes the query and database splits. The codes file holds the
packed codes, the relevance labels (the ground-truth labels; a split without labels
uses its user tags, and says so) and the image paths as ids, so that
`python -m wsdhash.evaluate`, `wsdhash.search build --codes` and `wsdhash.report` read
it like a trained run's `codes.h5`. Several code lengths at once: `--hash_bit=16,32,64`
with `{bits}` in `--output`.
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags

from wsdhash import cli
from wsdhash.baselines import BASELINES
from wsdhash.commands import flag_groups

FLAGS = flags.FLAGS
flags.DEFINE_string("features", None, "A features file from `python -m wsdhash.extract`.")
flags.DEFINE_enum("method", None, BASELINES.names(), "The baseline.")
flags.DEFINE_list("hash_bit", ["64"], "Code length(s) K; several need {bits} in --output.")
flag_groups.define_output("The codes file to write, e.g. itq_{bits}.h5.")
flags.DEFINE_string("fit_split", "train", "The split the baseline is fitted on.")
flag_groups.define_seed("Seeds the baseline (random projections and rotations).")
flag_groups.define_overwrite("codes file")
for _name in ("features", "method", "output"):
    flags.mark_flag_as_required(_name)


def _bits() -> list[int]:
    values = []
    for text in FLAGS.hash_bit:
        if not text.strip().isdigit() or int(text) < 1:
            raise cli.UsageError(f"--hash_bit must be positive integers, got {text!r}.")
        values.append(int(text))
    if len(values) > 1 and "{bits}" not in FLAGS.output:
        raise cli.UsageError(
            f"--hash_bit has {len(values)} lengths: put {{bits}} in --output={FLAGS.output}."
        )
    return values


def _relevance(split, note: list[str]) -> np.ndarray:
    if split.labels.shape[1]:
        return split.labels
    if split.tags.shape[1]:
        note.append(f"{split.name}: no labels, so relevance is shared user tags")
        return split.tags
    raise cli.UsageError(
        f"--features={FLAGS.features}: split {split.name!r} has neither labels nor tags, so "
        "its codes could not be evaluated."
    )


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"Unexpected arguments: {argv[1:]}")
    from wsdhash.data import features_file
    from wsdhash.data.types import DataFormatError
    from wsdhash.eval import CodesFile, CodesSplit, pack_codes, write_codes_file

    bits_list = _bits()
    outputs = {bits: FLAGS.output.replace("{bits}", str(bits)) for bits in bits_list}
    for path in outputs.values():
        if os.path.exists(path) and not FLAGS.overwrite:
            raise cli.UsageError(f"--output={path} exists; pass --overwrite to replace it.")
    try:
        available = features_file.split_names(FLAGS.features)
        needed = dict.fromkeys([FLAGS.fit_split, "query", "database"])
        missing = [name for name in needed if name not in available]
        if missing:
            raise cli.UsageError(
                f"--features={FLAGS.features} has no {', '.join(missing)} split "
                f"(it holds {', '.join(available)})."
            )
        splits = {name: features_file.read_split(FLAGS.features, name) for name in needed}
    except (OSError, DataFormatError) as error:
        raise cli.UsageError(f"--features: {error}") from None
    fit = splits[FLAGS.fit_split]
    note: list[str] = []
    relevance = {name: _relevance(splits[name], note) for name in ("query", "database")}
    for bits in bits_list:
        try:
            model = BASELINES.get(FLAGS.method)(bits, seed=FLAGS.seed).fit(fit.features)
        except ValueError as error:  # e.g. more bits than PCA directions
            raise cli.UsageError(f"--hash_bit={bits}: {error}") from None
        parts = {}
        for name in ("query", "database"):
            split = splits[name]
            parts[name] = CodesSplit(
                pack_codes(model.encode(split.features)), relevance[name], ids=split.paths
            )
        write_codes_file(outputs[bits], CodesFile(bits=bits, **parts))
        print(
            f"{FLAGS.method} {bits} bits, fitted on {len(fit)} {fit.name} items "
            f"(F={fit.features.shape[1]}): {outputs[bits]} (query {len(splits['query'])}, "
            f"database {len(splits['database'])})"
        )
    for line in dict.fromkeys(note):
        print(f"note: {line}")
    print(f"evaluate: python -m wsdhash.evaluate --codes={outputs[bits_list[0]]}")


def run():
    cli.run(main, "wsdhash.baselines")


if __name__ == "__main__":
    run()
