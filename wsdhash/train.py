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

from wsdhash import cli, flag_bounds
from wsdhash.eval.protocol import EMPTY_POLICIES, TIE_POLICIES, EvalProtocol
from wsdhash.methods import METHODS
from wsdhash.quantization import QUANTIZERS

FLAGS = flags.FLAGS

# Data.
flags.DEFINE_string("dataset", "builtin", "Registered dataset name.")
flags.DEFINE_string("data_dir", "data/builtin", "Dataset folder (list files).")
flags.DEFINE_string("image_root", None, "Folder image paths are relative to (list datasets).")
flags.DEFINE_list(
    "builtin_sizes", ["5000", "500", "5000"], "Built-in dataset: train,query,database."
)
flags.DEFINE_integer("builtin_image_size", 64, "Built-in dataset: image side.")
flags.DEFINE_integer("image_size", 0, "Resize side before cropping (0: the backbone's).")
flags.DEFINE_integer("crop_size", 0, "Crop side (0: the backbone's).")
flags.DEFINE_bool("ten_crop", False, "Evaluate with WSDHQ's 10-crop averaging.")
flags.DEFINE_string(
    "augment", "random_crop_flip",
    "Training augmentation (preprocessing.AUGMENTATIONS): random_crop_flip, center_crop "
    "(no flip), resize (the whole image, no crop or flip) or resize_flip; the last two need "
    "--image_size equal to --crop_size. Evaluation always takes the centre crop.",
)  # fmt: skip
flags.DEFINE_enum(
    "data_format", "auto", ["auto", "files", "tfrecord", "tfrecord_stream"],
    "Where training images are read: files, tfrecord (the --tfrecords shards, looked up "
    "in the files' order: the same batches), tfrecord_stream (the shards read "
    "sequentially through a shuffle buffer: another order) or auto (tfrecord when "
    "--tfrecords is given, else files). docs/tfrecords.md.",
)  # fmt: skip
flags.DEFINE_string(
    "tfrecords", None, "Folder of TFRecord shards (`python -m wsdhash.pipeline tfrecords`)."
)
flags.DEFINE_enum("supervision", "labels", ["labels", "tags"], "Train on labels or user tags.")
# Model.
flags.DEFINE_string(
    "backbone", "small_cnn", "Registered backbone, or 'features' to train on --features."
)
flags.DEFINE_string(
    "features", None, "--backbone=features: a features file from `python -m wsdhash.extract`."
)
flags.DEFINE_enum(
    "recipe", "auto", ["auto", "none", "features"],
    "Settings the flags you do not give fall back to: 'features' is the method's recipe "
    "for a head on frozen features (wsdhash/recipes/); 'auto' uses it with "
    "--backbone=features; 'none' keeps the flags' own defaults.",
)  # fmt: skip
flags.DEFINE_string("weights", "none", "'none', 'imagenet', or a weights file.")
flags.DEFINE_bool("allow_pickle", False, "Allow loading a pickled .npy weights dict.")
flags.DEFINE_string(
    "normalization", "", "Input normalisation (NORMALIZATIONS name); empty: the backbone's."
)
flags.DEFINE_string("head", "linear_bn", "Registered hash head: linear, tanh, linear_bn.")
flags.DEFINE_integer("hash_bit", 32, "Code length K.")
flags.DEFINE_enum(
    "head_init", "none", ["none", "lsh", "pcah", "itq", "pcarr"],
    "Start the head from this unsupervised baseline fitted on the training split's "
    "backbone features (sign(head) = its codes at step 0), or 'none': the head's own "
    "random initialiser.",
)  # fmt: skip
# Method.
flags.DEFINE_enum(
    "method", "orthohash", METHODS.names(), "Registered method (wsdhash.methods.METHODS)."
)
# Each method's own flags, from its options (wsdhash/methods/): --<method>_<name>.
_DEFINE = {
    "float": flags.DEFINE_float, "integer": flags.DEFINE_integer, "bool": flags.DEFINE_bool,
    "string": flags.DEFINE_string,
}  # fmt: skip
for _name in METHODS.names():
    for _option in METHODS.get(_name).options:
        if _option.kind == "enum":
            flags.DEFINE_enum(_option.flag, _option.default, list(_option.choices), _option.help)
        else:
            _DEFINE[_option.kind](_option.flag, _option.default, _option.help)
        if _option.bound is not None:
            flag_bounds.declare(_option.flag, _option.bound)
flags.DEFINE_string(
    "tag_dir",
    "",
    "Output folder of `python -m wsdhash.tags`: with --supervision=tags any method trains on "
    "its merged tags (WSDHQ needs it, for its tag embeddings too).",
)
flags.DEFINE_enum(
    "quantizer",
    "additive",
    QUANTIZERS.names(),
    "WSDHQ quantizer: additive (the original's ICM) or product (PQ on the hypersphere).",
)
flags.DEFINE_integer(
    "quantizer_update_every", 0, "WSDHQ quantizer period in steps (0: 2 epochs, at least 100)."
)
# Optimisation.
flags.DEFINE_integer("batch_size", 64, "Global batch size.")
flags.DEFINE_enum("sampler", "uniform", ["uniform", "class_balanced"], "Training batch sampler.")
flags.DEFINE_integer("classes_per_batch", 10, "Class-balanced sampler: classes per batch.")
flags.DEFINE_integer("images_per_class", 8, "Class-balanced sampler: images per class.")
flags.DEFINE_integer("steps", 0, "Training steps (0: use --epochs).")
flags.DEFINE_float("epochs", 10, "Training epochs, used when --steps=0.")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adam"], "Optimizer.")
flags.DEFINE_float("lr", 0.01, "Base learning rate (head and loss variables).")
flags.DEFINE_float("backbone_lr_multiplier", 1.0, "Backbone learning-rate multiplier.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("weight_decay", 0.0, "Coupled L2 weight decay (PyTorch style).")
flags.DEFINE_integer("lr_decay_every", 0, "Multiply the lr by --lr_decay every N units.")
flags.DEFINE_enum("lr_decay_unit", "steps", ["steps", "epochs"], "Unit of --lr_decay_every.")
flags.DEFINE_float("lr_decay", 0.1, "Learning-rate step factor.")
# Runtime.
flags.DEFINE_enum("strategy", "auto", ["auto", "one_device", "mirrored", "multi_worker"], "")
flags.DEFINE_string("gpu", None, "Comma-separated GPU ids to use (default: all).")
flags.DEFINE_integer("cpu_replicas", 0, "Split the CPU into N logical devices (testing).")
flags.DEFINE_enum("mixed_precision", "none", ["none", "bfloat16"], "Mixed precision.")
flags.DEFINE_bool("deterministic", False, "Deterministic ops (exact resume; slower on GPU).")
flags.DEFINE_integer("seed", 0, "Seeds everything.")
flags.DEFINE_string("workdir", None, "Run folder (default: checkpoints/<run name>).")
flags.DEFINE_integer("eval_every", 0, "Validation period (0: end only).")
flags.DEFINE_enum("eval_every_unit", "steps", ["steps", "epochs"], "Unit of --eval_every.")
flags.DEFINE_integer("checkpoint_every", 500, "Checkpoint period in steps.")
flags.DEFINE_integer("keep_checkpoints", 3, "Latest checkpoints to keep.")
flags.DEFINE_integer(
    "validation_size", -1,
    "Validation queries carved from the training split, for checkpoint selection: -1 (a "
    "tenth of the split, at most 500), 0 (none: the final weights are kept) or a count; a "
    "carve that leaves less than half of the split to train on is refused.",
)  # fmt: skip
flags.DEFINE_enum(
    "validation_database", "train", ["train", "heldout"],
    "What validation queries are ranked against: the rest of the training split, or "
    "'heldout': as many more items carved from it and not trained on (unseen, like most "
    "of a test database).",
)  # fmt: skip
flags.DEFINE_enum("select_on", "validation", ["validation", "test"], "Checkpoint selection.")
flags.DEFINE_enum(
    "empty", EvalProtocol.empty, EMPTY_POLICIES, "Queries with no relevant item: AP 0 or skipped."
)
flags.DEFINE_enum(
    "ties",
    EvalProtocol.ties,
    TIE_POLICIES,
    "Order within equal distance in validation and the test evaluation (docs/evaluation.md).",
)
flags.DEFINE_string("topk", None, "mAP cut-off R: an integer or 'all' (default: protocol).")
flags.DEFINE_integer("log_every", 50, "Logging period in steps.")
flags.DEFINE_list(
    "resume_with_changes",
    [],
    "Flags a resumed run may change: steps (or epochs; only longer), eval_every, "
    "quantizer_update_every, lr, backbone_lr_multiplier, momentum, weight_decay, "
    "lr_decay, lr_decay_every and the method's own flags (e.g. hyp2_zeta).",
)

# The flags that set each TrainConfig field (dotted for nested ones), for messages.
_FIELD_FLAGS = {
    "bits": "hash_bit", "optimizer.name": "optimizer", "optimizer.learning_rate": "lr",
    "optimizer.backbone_lr_multiplier": "backbone_lr_multiplier",
    "optimizer.momentum": "momentum", "optimizer.weight_decay": "weight_decay",
    "optimizer.boundaries": "lr_decay_every", "optimizer.decay": "lr_decay",
    "dataset_options.num_train": "builtin_sizes", "dataset_options.num_query": "builtin_sizes",
    "dataset_options.num_database": "builtin_sizes",
    "dataset_options.image_size": "builtin_image_size", "dataset_options.seed": "seed",
    "dataset_options.image_root": "image_root",
}  # fmt: skip
# (method, loss argument) -> flag, where the flag is not --<method>_<argument>.
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
    """The run's loss arguments from the method's own flags."""
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
    own = {flag: opt for (method, opt), flag in _METHOD_FLAGS.items() if method == FLAGS.method}
    fields = []
    for name in names:
        name = name.strip().removeprefix("--")
        if name in by_flag:
            fields.append(by_flag[name])
        elif name.startswith(f"{FLAGS.method}_") and name in FLAGS:
            fields.append(f"method_options.{own.get(name, name[len(FLAGS.method) + 1 :])}")
        else:
            raise cli.UsageError(
                f"--resume_with_changes: {name!r} cannot change on resume; it takes "
                f"{', '.join(sorted(by_flag))} and the --{FLAGS.method}_* flags."
            )
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
    sizes = FLAGS.builtin_sizes
    if len(sizes) != 3 or not all(n.strip().isdigit() and int(n) > 0 for n in sizes):
        raise cli.UsageError(
            "--builtin_sizes must be three positive integers train,query,database, got "
            f"{','.join(sizes)!r}."
        )
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
    from wsdhash.training.config import TrainConfig, carved_count
    from wsdhash.training.optimization import OptimizerConfig

    if FLAGS.augment not in preprocessing.AUGMENTATIONS:
        raise cli.UsageError(
            f"--augment={FLAGS.augment} is not a training augmentation; known: "
            f"{', '.join(preprocessing.AUGMENTATIONS.names())}."
        )
    options = datasets.command_line_options(
        FLAGS.dataset,
        image_root=FLAGS.image_root,
        builtin_sizes=tuple(int(n) for n in FLAGS.builtin_sizes),
        builtin_image_size=FLAGS.builtin_image_size,
        seed=FLAGS.seed,
    )
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
        steps = steps or max(int(round(FLAGS.epochs * steps_per_epoch)), 1)
        # An epoch is one pass over the training items, whether they are images or the
        # rows of a features file (one row per image: the same passes as on images).
        logging.info(
            "An epoch is %d steps of %d: one pass over the %d training %s of %s (after "
            "validation); %d steps in all.", steps_per_epoch, FLAGS.batch_size, trained_on,
            "feature rows" if FLAGS.dataset == "features" else "items", FLAGS.data_dir, steps,
        )  # fmt: skip
    boundaries = ()
    if FLAGS.lr_decay_every:
        every = FLAGS.lr_decay_every * (steps_per_epoch if FLAGS.lr_decay_unit == "epochs" else 1)
        boundaries = tuple(range(every, steps, every))
    eval_every = FLAGS.eval_every * (steps_per_epoch if FLAGS.eval_every_unit == "epochs" else 1)
    return TrainConfig(
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        dataset_options=options,
        backbone=FLAGS.backbone,
        weights=FLAGS.weights,
        allow_pickle=FLAGS.allow_pickle,
        head=FLAGS.head,
        bits=FLAGS.hash_bit,
        method=FLAGS.method,
        method_options=method_options(),
        supervision=FLAGS.supervision,
        batch_size=FLAGS.batch_size,
        steps=steps,
        optimizer=OptimizerConfig(
            name=FLAGS.optimizer,
            learning_rate=FLAGS.lr,
            backbone_lr_multiplier=FLAGS.backbone_lr_multiplier,
            momentum=FLAGS.momentum,
            weight_decay=FLAGS.weight_decay,
            boundaries=boundaries,
            decay=FLAGS.lr_decay,
        ),
        seed=FLAGS.seed,
        workdir=workdir,
        image_size=FLAGS.image_size,
        crop_size=FLAGS.crop_size,
        ten_crop=FLAGS.ten_crop,
        augment=FLAGS.augment,
        eval_every=eval_every,
        checkpoint_every=FLAGS.checkpoint_every,
        keep_checkpoints=FLAGS.keep_checkpoints,
        validation_size=FLAGS.validation_size,
        validation_database=FLAGS.validation_database,
        select_on=FLAGS.select_on,
        topk=parse_topk(FLAGS.topk),
        mixed_precision=FLAGS.mixed_precision,
        log_every=FLAGS.log_every,
        sampler=FLAGS.sampler,
        classes_per_batch=FLAGS.classes_per_batch,
        images_per_class=FLAGS.images_per_class,
        tag_dir=FLAGS.tag_dir,
        quantizer_update_every=FLAGS.quantizer_update_every,
        quantizer=FLAGS.quantizer,
        normalization=FLAGS.normalization,
        empty=FLAGS.empty,
        ties=FLAGS.ties,
        head_init="" if FLAGS.head_init == "none" else FLAGS.head_init,
        data_format=data_format(),
        tfrecords=os.path.abspath(FLAGS.tfrecords) if FLAGS.tfrecords else "",
    )


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
