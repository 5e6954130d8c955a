"""Trains a deep hashing model: `python -m wsdhash.train --flagfile=...`.

Flags live only here; they are turned into a `TrainConfig` and handed to
`wsdhash.training.trainer.train`. Flagfiles nest (`--flagfile=` inside a flagfile, a
relative path read from the including file's folder: wsdhash/flagfiles.py) and the
last value of a flag wins. The resolved flags are written to
`<workdir>/flags.txt`, which replays the run: `python -m wsdhash.train
--flagfile=<workdir>/flags.txt`.

Errors are one line on stderr naming the flag (`wsdhash.train: error: --log_every must
be a positive integer, got 0`), exit status 2 for bad flags; the traceback goes to
`<workdir>/errors.log` (see `wsdhash.cli`).

Running again with the same workdir resumes the run; it must then have the settings
the run was started with (`<workdir>/run_info.json`), except the logging and
checkpointing periods. Otherwise the command stops and lists the differences
(`--lr: 0.01 -> 0.02`). `--resume_with_changes=steps` continues a run with a longer
schedule (`--steps`, or `--epochs`); the optimiser's and the loss's hyperparameters
(e.g. `--resume_with_changes=lr,hyp2_zeta`) can be changed the same way, and
`run_info.json` records every such change under "resumes". Two trainings never share
a workdir: the second stops with an error while the first holds its lock.

Bad inputs stop the run with one line naming them: a missing or non-image file at
start-up, an image that does not decode when it is read (the last checkpoint is kept
and written before each validation: fix the file and run again to resume), a training
split whose labels are all zero. Images are never skipped silently.
"""

from __future__ import annotations

import contextlib
import os
import sys

from absl import flags, logging

from wsdhash import cli, flag_bounds, settings
from wsdhash.commands import flag_groups, setting_flags
from wsdhash.methods import METHODS
from wsdhash.training.config import TrainConfig, carved_count

FLAGS = flags.FLAGS
# The module absl files this command's flags under (`--helpfull`, flags.txt).
_MODULE = sys.argv[0] if __name__ == "__main__" else __name__

# Every TrainConfig field's flag, from the field's metadata (wsdhash/training/config.py):
# --dataset, --hash_bit, --lr, --steps, --workdir, --tfrecords, ...
setting_flags.define_flags(TrainConfig, FLAGS, _MODULE)
# The flags that are not settings themselves. Data: what the dataset factory takes.
flag_groups.define_dataset(name_flags=False)  # --dataset, --data_dir: settings
# Model.
flags.DEFINE_string(
    "features", None, "--backbone=features: a features file from `python -m wsdhash.extract`."
)
flags.DEFINE_enum(
    "recipe",
    "auto",
    ["auto", "none", "features"],
    "Settings the flags you do not give fall back to: 'features' is the method's recipe "
    "for a head on frozen features (wsdhash/recipes/); 'auto' uses it with "
    "--backbone=features; 'none' keeps the flags' own defaults.",
)
# Each method's own flags, from its options (wsdhash/methods/): --<method>_<name>.
_DEFINE = {
    "float": flags.DEFINE_float,
    "integer": flags.DEFINE_integer,
    "bool": flags.DEFINE_bool,
    "string": flags.DEFINE_string,
}
for _name in METHODS.names():
    for _option in METHODS.get(_name).options:
        if _option.kind == "enum":
            flags.DEFINE_enum(_option.flag, _option.default, list(_option.choices), _option.help)
        else:
            _DEFINE[_option.kind](_option.flag, _option.default, _option.help)
        if _option.bound is not None:
            flag_bounds.declare(_option.flag, _option.bound)
# The schedule's units (TrainConfig keeps steps).
flags.DEFINE_float("epochs", 10, "Training epochs, used when --steps=0.")
flags.DEFINE_integer("lr_decay_every", 0, "Multiply the lr by --lr_decay every N units.")
flags.DEFINE_enum("lr_decay_unit", "steps", ["steps", "epochs"], "Unit of --lr_decay_every.")
flags.DEFINE_enum("eval_every_unit", "steps", ["steps", "epochs"], "Unit of --eval_every.")
# Runtime.
flags.DEFINE_enum("strategy", "auto", ["auto", "one_device", "mirrored", "multi_worker"], "")
flags.DEFINE_string("gpu", None, "Comma-separated GPU ids to use (default: all).")
flags.DEFINE_integer("cpu_replicas", 0, "Split the CPU into N logical devices (testing).")
flags.DEFINE_bool("deterministic", False, "Deterministic ops (exact resume; slower on GPU).")
flags.DEFINE_list(
    "resume_with_changes",
    [],
    "Flags a resumed run may change: steps (or epochs; only longer), eval_every, "
    "quantizer_update_every, lr, backbone_lr_multiplier, momentum, weight_decay, "
    "lr_decay, lr_decay_every and the method's own flags (e.g. hyp2_zeta).",
)

# The flags that set each TrainConfig setting (by key, as run_info.json names it), for
# messages: the settings' own, and the dataset options' (datasets.command_line_options).
_FIELD_FLAGS = {
    **settings.message_flags(TrainConfig),
    "dataset_options.num_train": "builtin_sizes",
    "dataset_options.num_query": "builtin_sizes",
    "dataset_options.num_database": "builtin_sizes",
    "dataset_options.image_size": "builtin_image_size",
    "dataset_options.seed": "seed",
    "dataset_options.image_root": "image_root",
}
# (method, option argument) -> flag, where the flag is not --<method>_<argument>.
_METHOD_FLAGS = {
    (name, option.argument): option.flag
    for name in METHODS.names()
    for option in METHODS.get(name).options
    if option.flag != f"{name}_{option.argument}"
}


def run_name() -> str:
    dataset = FLAGS.dataset
    if FLAGS.backbone == "features" and FLAGS.features:  # named after the features file
        dataset = os.path.splitext(os.path.basename(FLAGS.features))[0]
    return f"{dataset}_{FLAGS.method}_{FLAGS.backbone}_{FLAGS.hash_bit}bits_seed{FLAGS.seed}"


def method_options() -> dict:
    """The run's method options (`config.method.options`) from the method's own flags."""
    return METHODS.get(FLAGS.method).options_from_flags(FLAGS)


def parse_topk(value: str | None) -> int | None:
    """None: the dataset's protocol R; 0: the whole database."""
    if value is None:
        return None
    if value == "all":
        return 0
    topk = int(value) if value.isdigit() else 0
    if topk < 1:
        raise cli.UsageError(f"--topk must be a positive integer or 'all', got {value!r}.")
    return topk


def flag_for_field(field: str) -> str:
    """The flag that sets a `TrainConfig` field ("method_options.zeta" -> "hyp2_zeta")."""
    if field.startswith("method_options."):
        option = field.split(".", 1)[1]
        return _METHOD_FLAGS.get((FLAGS.method, option), f"{FLAGS.method}_{option}")
    if field == "data_dir" and FLAGS.backbone == "features":
        return "features"
    if field == "steps" and not FLAGS.steps:
        return "epochs"
    return _FIELD_FLAGS.get(field, field)


def fields_for_flags(names: list[str]) -> list[str]:
    """The `TrainConfig` fields that `--resume_with_changes=NAMES` allows to change."""
    from wsdhash.training.run_info import RESUME_CHANGEABLE  # no TensorFlow

    by_flag = {_FIELD_FLAGS.get(f, f): f for f in RESUME_CHANGEABLE if "*" not in f}
    by_flag["epochs"] = "steps"
    for option in METHODS.get(FLAGS.method).options:  # the method's own changeable flags
        if option.resume == settings.CHANGEABLE:
            by_flag[option.flag] = f"method_options.{option.argument}"
    fields = []
    for name in names:
        name = name.strip().removeprefix("--")
        if name not in by_flag:
            raise cli.UsageError(
                f"--resume_with_changes: {name!r} cannot change on resume; it takes "
                f"{', '.join(sorted(by_flag))}."
            )
        fields.append(by_flag[name])
    return fields


def validate_flags() -> None:
    """Checks the flags that can be checked alone, before any TensorFlow work.

    Raises:
        cli.UsageError: naming the flag.
    """
    try:  # each number within its range (cli.run checks this too, at parse time)
        flag_bounds.check(FLAGS)
    except ValueError as error:
        raise cli.UsageError(str(error)) from None
    if not FLAGS.steps and not FLAGS.epochs > 0:
        raise cli.UsageError(
            f"--epochs must be > 0 when --steps=0 (the default), got {FLAGS.epochs}."
        )
    flag_groups.dataset_options()  # checks --builtin_sizes
    parse_topk(FLAGS.topk)
    if FLAGS.backbone == "features" and not FLAGS.features:
        raise cli.UsageError("--backbone=features needs --features=FILE.h5.")
    if FLAGS.backbone != "features" and FLAGS.features:
        raise cli.UsageError("--features is only used with --backbone=features.")
    fields_for_flags(FLAGS.resume_with_changes)
    data_format()


def data_format() -> str:
    """--data_format with "auto" resolved: "tfrecord" when --tfrecords names a folder
    of shards (its manifest is read), else "files"."""
    if FLAGS.data_format == "files" and FLAGS.tfrecords:
        raise cli.UsageError("--tfrecords is only read with --data_format=tfrecord*.")
    resolved = FLAGS.data_format
    if resolved == "auto":
        resolved = "tfrecord" if FLAGS.tfrecords else "files"
    if resolved != "files":
        if not FLAGS.tfrecords:
            raise cli.UsageError(f"--data_format={resolved} needs --tfrecords=SHARDS_DIR.")
        if FLAGS.backbone == "features":
            raise cli.UsageError("--backbone=features reads a features file, not --tfrecords.")
        from wsdhash.data import tfrecords

        try:
            manifest = tfrecords.read_manifest(FLAGS.tfrecords)
        except tfrecords.TFRecordsError as error:
            raise cli.UsageError(f"--tfrecords: {error}") from None
        if manifest["source"]["dataset"] != FLAGS.dataset:
            raise cli.UsageError(
                f"--tfrecords={FLAGS.tfrecords} holds dataset "
                f"{manifest['source']['dataset']!r}, not --dataset={FLAGS.dataset}."
            )
    return resolved


def recipe_kind() -> str | None:
    """The recipe kind `--recipe` asks for with these flags (None: no recipe)."""
    if FLAGS.recipe == "auto":
        return "features" if FLAGS.backbone == "features" else None
    return None if FLAGS.recipe == "none" else FLAGS.recipe


def apply_recipe() -> str:
    """Gives every flag the method's recipe names and the user did not give the
    recipe's value (wsdhash/recipes/); returns a line saying what was used."""
    from wsdhash import recipes

    kind = recipe_kind()
    if kind is None:
        return ""
    recipe = recipes.load_recipe(kind, FLAGS.method)
    if recipe is None:
        return f"no {kind} recipe for --method={FLAGS.method}: the flags' defaults apply."
    applied, kept = [], []
    for name, value in recipe.values.items():
        if name not in FLAGS:
            raise cli.UsageError(f"{recipe.path}: --{name} is not a flag of wsdhash.train.")
        flag = FLAGS[name]
        try:
            parsed = flag._parse(value)  # the flag's own parser
        except (flags.Error, ValueError) as error:
            raise cli.UsageError(f"{recipe.path}: --{name}={value}: {error}") from None
        if flag.present:
            if flag.value != parsed:
                kept.append(f"--{name}={flag.value} (recipe: {value})")
            continue
        # The value only, not the default: FLAGS.unparse_flags() undoes it (in-process
        # callers such as the tuner and the tests parse flags more than once).
        flag.value = parsed
        applied.append(f"--{name}={value}")
    line = f"recipe {recipe.name} ({recipe.path}): {' '.join(applied) or 'nothing to set'}"
    if kept:
        # Typically a published end-to-end flagfile used with --backbone=features.
        line += (
            f"; your flags kept: {', '.join(kept)} (published schedules are sized for "
            "fine-tuning a CNN on images; drop these flags to use the recipe's)"
        )
    return line


def build_config(workdir: str):
    """The `TrainConfig` of the parsed flags (after `apply_recipe` and the features
    file's substitution of --dataset and --data_dir)."""
    from wsdhash.data import datasets, preprocessing

    if FLAGS.augment not in preprocessing.AUGMENTATIONS:
        raise cli.UsageError(
            f"--augment={FLAGS.augment} is not a training augmentation; known: "
            f"{', '.join(preprocessing.AUGMENTATIONS.names())}."
        )
    options = flag_groups.dataset_options()
    steps = FLAGS.steps
    steps_per_epoch = None
    if not steps or "epochs" in (FLAGS.lr_decay_unit, FLAGS.eval_every_unit):
        split = METHODS.get(FLAGS.method).training_split  # ADSH trains on the database
        dataset = datasets.get_dataset(FLAGS.dataset, FLAGS.data_dir, **options)
        train_size = len(dataset.split(split))
        trained_on = train_size - carved_count(
            train_size, FLAGS.validation_size, FLAGS.validation_database
        )
        steps_per_epoch = max(trained_on // FLAGS.batch_size, 1)
        steps = steps or max(round(FLAGS.epochs * steps_per_epoch), 1)
        # An epoch is one pass over the training items, whether they are images or the
        # rows of a features file (one row per image: the same passes as on images).
        logging.info(
            "An epoch is %d steps of %d: one pass over the %d training %s of %s (after "
            "validation); %d steps in all.",
            steps_per_epoch,
            FLAGS.batch_size,
            trained_on,
            "feature rows" if FLAGS.dataset == "features" else "items",
            FLAGS.data_dir,
            steps,
        )
    boundaries = ()
    if FLAGS.lr_decay_every:
        every = FLAGS.lr_decay_every * (steps_per_epoch if FLAGS.lr_decay_unit == "epochs" else 1)
        boundaries = tuple(range(every, steps, every))
    eval_every = FLAGS.eval_every * (steps_per_epoch if FLAGS.eval_every_unit == "epochs" else 1)
    computed = {  # the fields whose flags are not their values
        "dataset_options": options,
        "method_options": method_options(),
        "steps": steps,
        "optimizer.boundaries": boundaries,
        "workdir": workdir,
        "eval_every": eval_every,
        "topk": parse_topk(FLAGS.topk),
        "head_init": "" if FLAGS.head_init == "none" else FLAGS.head_init,
        "data_format": data_format(),
        "tfrecords": os.path.abspath(FLAGS.tfrecords) if FLAGS.tfrecords else "",
    }
    return setting_flags.config_from_flags(TrainConfig, FLAGS, computed)


def use_features_file() -> None:
    """--backbone=features: the features file replaces --dataset and --data_dir.

    Raises:
        cli.UsageError: the file cannot be read.
    """
    from wsdhash.data import features_file

    try:
        features_file.read_attributes(FLAGS.features)
    except (OSError, ValueError) as error:
        raise cli.UsageError(f"--features: {error}") from None
    FLAGS.dataset, FLAGS.data_dir = "features", FLAGS.features
    fixed = ("weights", "normalization", "image_size", "crop_size", "ten_crop", "augment")
    ignored = [f"--{name}" for name in fixed if FLAGS[name].present]
    if ignored:  # e.g. from a published flagfile: the extraction already applied them
        logging.warning(
            "--backbone=features ignores %s: the features file fixed them at extraction.",
            ", ".join(ignored),
        )


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"Unexpected arguments: {argv[1:]}")
    recipe_line = apply_recipe()
    validate_flags()
    workdir = FLAGS.workdir or os.path.join("checkpoints", run_name())
    os.makedirs(workdir, exist_ok=True)
    cli.set_log_file(os.path.join(workdir, "errors.log"))
    if recipe_line:
        (logging.warning if "your flags kept" in recipe_line else logging.info)("%s", recipe_line)
    # TensorFlow is imported here, after flag parsing, so that --cpu_replicas and --gpu
    # can configure devices before TensorFlow initialises them.
    import tensorflow as tf

    from wsdhash.training import strategy as strategy_lib
    from wsdhash.training import trainer

    if FLAGS.cpu_replicas:
        strategy_lib.split_cpu(FLAGS.cpu_replicas)
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = strategy_lib.make_strategy(FLAGS.strategy, FLAGS.gpu)

    if FLAGS.backbone == "features":
        use_features_file()
    config = build_config(workdir)
    from wsdhash import file_lock
    from wsdhash.training import run_info

    allow = fields_for_flags(FLAGS.resume_with_changes)
    output_dir = trainer.output_dir_for(workdir, strategy)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(trainer.workdir_lock(output_dir, what=""))
        except file_lock.LockedError as error:
            raise cli.UsageError(f"--workdir: {error}") from None
        try:
            run_info.check_resume(config, output_dir, allow)
        except run_info.ResumeMismatchError as error:
            raise cli.UsageError(resume_message(workdir, error)) from None
        write_replay_flags(workdir)
        try:
            metrics = trainer.train(config, strategy, allow_changes=allow)
        except trainer.ValidationCarveError as error:
            raise cli.UsageError(str(error)) from None
        except trainer.tfrecords.TFRecordsError as error:
            raise cli.UsageError(f"--tfrecords: {error}") from None
    print(f"{metrics['map_name']} = {metrics['map']:.4f} (selected on {metrics['selected_on']})")
    codes, metrics_file = (os.path.join(workdir, n) for n in ("codes.h5", "metrics.json"))
    print(f"codes: {codes}  metrics: {metrics_file}")


def training_flag_names() -> set[str]:
    """The names of this command's own flags (those a flags.txt replays)."""
    return {f.name for f in FLAGS.get_flags_for_module(sys.modules[__name__])}


def write_replay_flags(workdir: str) -> None:
    """`<workdir>/flags.txt`: every training flag's value, replayable with --flagfile."""
    from wsdhash import atomic_files

    own_flags = FLAGS.get_flags_for_module(sys.modules[__name__])
    replay = "".join(
        f"{f.serialize()}\n"
        for f in own_flags
        if f.value is not None and f.name != "resume_with_changes"
    )
    atomic_files.write_text(os.path.join(workdir, "flags.txt"), replay)


def resume_message(workdir: str, error) -> str:
    """One line: the workdir's run and each differing flag, `--lr: 0.01 -> 0.02`."""
    parts = []
    for change in error.changes:
        label = flag_for_field(change.field)
        label += " (steps)" if label == "epochs" else ""
        shown = f"--{label}: {change.show(change.stored)} -> {change.show(change.new)}"
        if change.field == "steps" and not change.changeable:
            shown += " (a run cannot be shortened)"
        parts.append(shown)
    flags_named = sorted({flag_for_field(c.field) for c in error.changes})
    hint = ""
    if all(change.changeable for change in error.changes):
        hint = f", or --resume_with_changes={','.join(flags_named)} to continue it with them"
    return (
        f"--workdir={workdir} holds a run with other settings ({'; '.join(parts)}); "
        f"rerun it with its own (--flagfile={os.path.join(workdir, 'flags.txt')}), use "
        f"another --workdir{hint}."
    )


def run():
    cli.run(main, "wsdhash.train")


if __name__ == "__main__":
    run()
