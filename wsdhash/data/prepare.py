"""Builds and checks a real dataset's split lists from its download.

    python -m wsdhash.data.prepare --dataset=NAME --root=DOWNLOAD [--output_dir=DIR]
        [--protocol=P] [--seed=0] [--image_root=DIR] [--download] [--decode_check]
        [--option=key=value ...]

Datasets (`wsdhash.data.preparation.PREPARERS`; protocols in docs/methods.md, "Dataset protocols"):

| --dataset      | --root                                  | --protocol            |
|----------------|-----------------------------------------|-----------------------|
| flickr25k      | unpacked MIRFLICKR-25K + annotations     | hyp2 (default), wsdhq |
| nuswide        | HashNet lists / official release        | hashnet, wsdhq        |
| imagenet100    | HashNet lists (--image_root: images)     |                       |
| coco           | HashNet lists (--image_root: images)     |                       |
| voc2007/2012   | TFDS data dir (--download to fetch)      |                       |
| cifar10        | TFDS data dir                           | 1 (default), 2        |
| cub200         | CUB_200_2011 or TFDS data dir           |                       |
| stanford_dogs  | Images/ + *_list.mat or TFDS data dir   |                       |
| image_folder   | your photos: ROOT/<class>/*.jpg, or     |                       |
|                | --manifest=FILE.csv/.jsonl (paths under |                       |
|                | ROOT, labels, tags, split); --query_size|                       |
|                | --train_size, --database_includes_train |                       |
|                | or the dataset's own split: ROOT/<split>|                       |
|                | /<class>/*.jpg or the manifest's split  |                       |
|                | column, with --query_from (below)       |                       |

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

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", None, "Dataset to prepare.", required=True)
flags.DEFINE_string("root", None, "The download (or TFDS data dir).")
flags.DEFINE_string("output_dir", None, "Where the lists go (default: data/<dataset>[/...]).")
flags.DEFINE_string("protocol", None, "Protocol, for datasets that have several.")
flags.DEFINE_integer("seed", 0, "Seeds the splits that the protocol draws.")
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

# Protocols a dataset folder is named after when --output_dir is not given.
_DEFAULT_PROTOCOL = {"flickr25k": "hyp2", "nuswide": None, "cifar10": "1"}


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
    protocol = protocol if protocol is not None else _DEFAULT_PROTOCOL.get(dataset)
    if dataset == "cifar10":
        return os.path.join("data", "cifar10", f"protocol{protocol or 1}")
    if dataset == "flickr25k" or (dataset == "nuswide" and protocol == "wsdhq"):
        return os.path.join("data", dataset, protocol)
    return os.path.join("data", dataset)


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
    if FLAGS.dataset == "cifar10" and "protocol" in options:
        options["protocol"] = int(options["protocol"])
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
