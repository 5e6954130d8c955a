"""Builds and checks a real dataset's split lists from its download.

    python -m wsdhash.data.prepare --dataset=NAME --root=DOWNLOAD [--output_dir=DIR]
        [--protocol=P] [--seed=0] [--image_root=DIR] [--download] [--decode_check]
        [--option=key=value ...]

Datasets (`wsdhash.data.preparation.PREPARERS`; protocols in docs/methods.md, "Dataset protocols"):

{table}

image_folder splits: by default the queries are drawn at random (`--query_size`, 10%),
the training items from the rest (`--train_size`, default all of them), and the
database is every non-query item (training items included; with
`--database_includes_train=false` only the rest). To keep a dataset's own train/test
split, put the images in `ROOT/<split>/<class>/...` (e.g. `ROOT/train/cat/1.jpg`,
`ROOT/test/cat/7.jpg`) or give the manifest a `split` column, and name the query split:
`--query_from=test`. Then query = the test images, train = the images of
`--train_from` (default: every other split), database = the images of
`--database_from` (default: every other split, so the training images are in the
database; `--database_includes_train=false` removes them); `--query_size` /
`--train_size` draw that many (or that fraction) of them, seeded. Docs:
docs/your_own_photos.md.

The lists go to `--output_dir` (default `data/<dataset>` or, for datasets with several
protocols, `data/<dataset>/<protocol>`; CIFAR-10: `data/cifar10/protocol<N>`). Then
every split is checked against the protocol (sizes, disjointness, containment) and,
with --decode_check, every image is decoded once. Problems are listed and the exit
status is 1; nothing is dropped silently (what the protocol itself leaves out is
counted in the notes).
"""

from __future__ import annotations

import inspect
import os
import sys

from absl import flags

from wsdhash import cli
from wsdhash.commands import flag_groups

# The complete dataset registries (no TensorFlow): the table above and the defaults
# below come from each dataset's `DatasetSpec` (wsdhash/data/dataset_spec.py).
from wsdhash.data import dataset_spec, datasets  # noqa: F401  datasets: registers all

if __doc__:
    __doc__ = __doc__.replace("{table}", dataset_spec.prepare_table())

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", None, "Dataset to prepare.", required=True)
flags.DEFINE_string("root", None, "The download (or TFDS data dir).")
flags.DEFINE_string("output_dir", None, "Where the lists go (default: data/<dataset>[/...]).")
flags.DEFINE_string("protocol", None, "Protocol, for datasets that have several.")
flag_groups.define_seed("Seeds the splits that the protocol draws.")
flags.DEFINE_string("image_root", None, "Image folder of HashNet lists (default: --root).")
flags.DEFINE_string("tag_vocab", None, "flickr25k --protocol=wsdhq: tag vocabulary file.")
flags.DEFINE_bool("download", False, "TFDS datasets: download when not prepared yet.")
flags.DEFINE_bool("decode_check", True, "Decode every image once (finds broken files).")
flags.DEFINE_string(
    "manifest", None, "image_folder: CSV or JSON Lines of path, labels, tags (paths under --root)."
)
flags.DEFINE_float(
    "query_size", None, "image_folder: queries, a count or (below 1) a fraction (default 0.1)."
)
flags.DEFINE_float(
    "train_size",
    None,
    "image_folder: training items, a count or (below 1) a fraction of the non-queries "
    "(default: all of them).",
)
flags.DEFINE_bool(
    "database_includes_train",
    None,
    "image_folder: the database holds the training items too (default) or only the rest.",
)
flags.DEFINE_list(
    "query_from",
    None,
    "image_folder: keep the dataset's own split: the split(s) whose items are the queries "
    "(top-level folders ROOT/<split>/<class>/..., or the manifest's split column), e.g. "
    "test. Then train = --train_from, database = --database_from (default for both: every "
    "other split, so the database includes the training items); --query_size and "
    "--train_size draw from them (default: all).",
)
flags.DEFINE_list(
    "train_from",
    None,
    "image_folder with --query_from: the training split(s) (default: the others).",
)
flags.DEFINE_list(
    "database_from",
    None,
    "image_folder with --query_from: the database split(s) (default: the others).",
)
flags.DEFINE_multi_string(
    "option", [], "Extra preparer option key=value (e.g. split sizes for small copies)."
)


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _options(preparer) -> dict:
    accepted = inspect.signature(preparer).parameters
    options = {}
    for name, value in (
        ("protocol", FLAGS.protocol),
        ("image_root", FLAGS.image_root),
        ("tag_vocab", FLAGS.tag_vocab),
        ("download", FLAGS.download or None),
        ("manifest", FLAGS.manifest),
        ("query_size", FLAGS.query_size),
        ("train_size", FLAGS.train_size),
        ("database_includes_train", FLAGS.database_includes_train),
        ("query_from", FLAGS.query_from),
        ("train_from", FLAGS.train_from),
        ("database_from", FLAGS.database_from),
    ):
        if value is not None:
            if name not in accepted:
                raise cli.UsageError(f"--{name} does not apply to --dataset={FLAGS.dataset}.")
            options[name] = value
    for item in FLAGS.option:
        key, sep, value = item.partition("=")
        if not sep or key not in accepted or key in ("root", "output_dir"):
            known = sorted(k for k in accepted if k not in ("root", "output_dir"))
            raise cli.UsageError(f"--option={item!r}: expected key=value with a key in {known}.")
        options[key] = _value(value)
    if "progress" in accepted:
        import tqdm  # pylint: disable=g-import-not-at-top

        options["progress"] = lambda it: tqdm.tqdm(it, desc="images", unit="img")
    return options


def default_output_dir(dataset: str, protocol: str | None) -> str:
    """`--output_dir`'s default for `dataset` and `protocol` (None: its default)."""
    if dataset not in dataset_spec.SPECS:
        return os.path.join("data", dataset)
    return dataset_spec.SPECS.get(dataset).default_output_dir(protocol)


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"Unexpected arguments: {argv[1:]}")
    import tqdm  # pylint: disable=g-import-not-at-top

    from wsdhash.data import preparation, protocols
    from wsdhash.data.types import DataFormatError

    try:
        preparer = preparation.PREPARERS.get(FLAGS.dataset)
    except KeyError as error:
        raise cli.UsageError(str(error.args[0])) from None
    options = _options(preparer)
    if "protocol" in options:
        options["protocol"] = dataset_spec.SPECS.get(FLAGS.dataset).protocol_type(
            options["protocol"]
        )
    output_dir = FLAGS.output_dir or default_output_dir(FLAGS.dataset, FLAGS.protocol)
    try:
        prepared = preparer(FLAGS.root, output_dir, seed=FLAGS.seed, **options)
    except protocols.MissingDownloadError as error:
        raise cli.UsageError(str(error)) from None
    except (DataFormatError, ValueError) as error:
        message = str(error)
        if not message.startswith(f"{FLAGS.dataset}:"):
            message = f"{FLAGS.dataset}: {message}"
        raise cli.UsageError(message) from None
    print(f"{FLAGS.dataset}: lists written to {output_dir}")
    for note in prepared.notes:
        print(f"  note: {note}")
    problems = preparation.check_prepared(
        prepared,
        output_dir,
        decode=FLAGS.decode_check,
        progress=lambda it: tqdm.tqdm(it, desc="checking images", unit="img"),
    )
    from wsdhash.data.datasets import get_dataset  # pylint: disable=g-import-not-at-top

    dataset = get_dataset(prepared.dataset, output_dir, check_files=False)
    for split in dataset.splits:
        try:
            size = len(dataset.split(split))
        except (OSError, ValueError):
            continue
        expected = prepared.protocol.counts.get(split)
        print(f"  {split:<9} {size:>8} items (protocol: {expected if expected else 'any'})")
    if problems:
        print(f"{len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


def run():
    cli.run(main, "wsdhash.data.prepare")


if __name__ == "__main__":
    run()
