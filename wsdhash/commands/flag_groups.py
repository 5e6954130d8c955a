"""Flags that several commands define alike, declared once: the dataset flags, the seed,
the evaluation protocol and the output.

A command calls the groups it takes when it is imported, then reads the values back
through the matching function (`dataset_options`, `protocol_values`) inside `main`.
A group's flags belong to the command that calls it (`--help` lists them with the
command's own), with one type, default, range and help wherever they appear; only what
a flag means for one command (what the seed seeds, what the output is) is the command's
to say. The training settings' own flags come from their dataclass metadata instead
(wsdhash/settings.py, `setting_flags` here).
"""

from __future__ import annotations

from absl import flags

from wsdhash.eval.protocol import EMPTY_POLICIES, TIE_POLICIES, EvalProtocol

FLAGS = flags.FLAGS
# The flags a group defines belong to the command that calls it, as if the command had
# defined them (absl attributes a flag to the first module up the stack not disclaimed).
flags.disclaim_key_flags()

_BUILTIN_SIZES = ["5000", "500", "5000"]


def define_dataset(*, name_flags: bool = True) -> None:
    """--dataset, --data_dir (unless `name_flags` is False: the command declares them
    elsewhere, as train does from its settings), --image_root, --builtin_sizes and
    --builtin_image_size."""
    if name_flags:
        flags.DEFINE_string("dataset", "builtin", "Registered dataset name.")
        flags.DEFINE_string("data_dir", "data/builtin", "Dataset folder (list files).")
    flags.DEFINE_string("image_root", None, "Folder image paths are relative to (list datasets).")
    flags.DEFINE_list("builtin_sizes", _BUILTIN_SIZES, "Built-in dataset: train,query,database.")
    flags.DEFINE_integer("builtin_image_size", 64, "Built-in dataset: image side.")


def dataset_options() -> dict:
    """The dataset factory's options from the dataset flags and --seed
    (`datasets.command_line_options`); a UsageError for a bad --builtin_sizes."""
    from wsdhash import cli  # (not at the top: tags, which runs without cli, has no --verbose)
    from wsdhash.data import datasets

    sizes = FLAGS.builtin_sizes
    if len(sizes) != 3 or not all(n.strip().isdigit() and int(n) > 0 for n in sizes):
        raise cli.UsageError(
            "--builtin_sizes must be three positive integers train,query,database, got "
            f"{','.join(sizes)!r}."
        )
    return datasets.command_line_options(
        FLAGS.dataset,
        image_root=FLAGS.image_root,
        builtin_sizes=tuple(int(n) for n in sizes),
        builtin_image_size=FLAGS.builtin_image_size,
        seed=FLAGS.seed,
    )


def define_seed(help: str, default: int = 0) -> None:  # noqa: A002 (absl's own word)
    """--seed; `help` says what it seeds in this command (its range: flag_bounds)."""
    flags.DEFINE_integer("seed", default, help)


def define_protocol() -> None:
    """--ties and --empty, the evaluation protocol's order within equal distance and its
    policy for queries with no relevant item (docs/evaluation.md)."""
    flags.DEFINE_enum(
        "ties",
        EvalProtocol.ties,
        TIE_POLICIES,
        "Order within equal distance (docs/evaluation.md, 'Ties').",
    )
    flags.DEFINE_enum(
        "empty",
        EvalProtocol.empty,
        EMPTY_POLICIES,
        "Queries with no relevant item in the top R: AP 0 or skipped.",
    )


def protocol_values() -> dict:
    """{ties, empty, seed} of the protocol flags, for `EvalProtocol(**...)`."""
    return {"ties": FLAGS.ties, "empty": FLAGS.empty, "seed": FLAGS.seed}


def define_output(help: str, required: bool = False) -> None:  # noqa: A002
    """--output, the file or folder the command writes (`help` says which)."""
    flags.DEFINE_string("output", None, help, required=required)


def define_overwrite(what: str) -> None:
    """--overwrite: replace an existing `what` (written atomically either way)."""
    flags.DEFINE_bool("overwrite", False, f"Replace an existing {what}.")
