"""Runs a backbone over a dataset and writes its features to HDF5.

    python -m wsdhash.extract --dataset=NAME --data_dir=DIR --backbone=resnet50
        --weights=imagenet --output=features.h5 [--splits=train,query,database]
        [--ten_crop] [--batch_size=64]
    python -m wsdhash.extract ... --backbone=keras_hub:dinov2_small --weights=preset
    python -m wsdhash.extract ... --model=encoder.keras|SAVED_MODEL_DIR|encoder.tflite
        --normalization=NAME [--crop_size=S]

`--backbone` is a registered backbone or a keras-hub preset (`keras_hub:PRESET`, a
preset name or folder; wsdhash/models/keras_hub_presets.py). `--model` instead takes
any feature model the user has as a file (wsdhash/models/model_files.py): its input
size comes from the model when fixed (else `--crop_size`), and `--normalization` must
say how it expects its pixels (e.g. raw_pixels for [0, 255], unit_range for [0, 1],
torch_imagenet), since a float model file does not record it. A quantized TFLite
model's uint8 / int8 input does: its scale s and zero point z say which real values it
holds, and pixels 0..255 are mapped linearly onto them unless `--normalization` is
given; one that contradicts them (raw_pixels for an input made for [-1, 1], which
would saturate) is refused, naming both (wsdhash/models/input_quantization.py).

After writing, a sample of the rows is checked for collapse (many images with nearly
the same features, or mostly constant dimensions: wsdhash/data/feature_collapse.py),
which a wrong normalisation causes; a warning line says so.

Images go through the evaluation pipeline (resize, centre crop, or the mean of WSDHQ's
10 crops with --ten_crop) and the backbone's normalisation, exactly as the trainer
encodes them; an image listed in several splits (the database holding the training
images) is encoded once and its row copied. Then `python -m wsdhash.train
--backbone=features --features=features.h5 ...` trains any method's head on the
features (cheap on a CPU, fast for sweeps), with the same losses, evaluation and
export; the export takes images when the feature model can be found again (a
`--model` file), else features.

The file (wsdhash/data/features_file.py) is written resumably: rerun the same command
after an interruption (or a full disk) and it continues where it stopped; the final
name appears only when every split is done. A rerun with any setting that changes the
features (backbone, weights, seed, sizes, normalisation, dataset and its options) is
refused with one line listing the differences. Errors are one line (wsdhash/cli.py).

With `--model`, the file records the model's absolute path (`backbone="model:PATH"`),
its SHA-256 (`weights="sha256:HEX"`), its format and, for a SavedModel, the signature
and output used: `python -m wsdhash.export` then composes that model with the trained
head into one SavedModel that takes images (wsdhash/models/extraction_model.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

from absl import flags

from wsdhash import cli
from wsdhash.commands import flag_groups

FLAGS = flags.FLAGS
flag_groups.define_dataset()
flags.DEFINE_string("backbone", "small_cnn", "Registered backbone.")
flags.DEFINE_string(
    "model", None, "A feature model file instead of --backbone: .keras, SavedModel, .tflite."
)
flags.DEFINE_string("model_signature", "serving_default", "--model SavedModel: the signature.")
flags.DEFINE_string("model_output", None, "--model SavedModel: the output (if several).")
flags.DEFINE_string(
    "weights", "none", "'none', 'imagenet' ('preset' for keras_hub:), or a weights file."
)
flags.DEFINE_bool("allow_pickle", False, "Allow loading a pickled .npy weights dict.")
flags.DEFINE_string(
    "normalization",
    "",
    "Input normalisation; empty: the backbone's (--model: read from a quantized TFLite "
    "input, else required).",
)
flags.DEFINE_integer("image_size", 0, "Resize side before cropping (0: the backbone's).")
flags.DEFINE_integer("crop_size", 0, "Crop side (0: the backbone's).")
flags.DEFINE_bool("ten_crop", False, "Average the features of WSDHQ's 10 crops.")
flags.DEFINE_list("splits", ["train", "query", "database"], "Splits to extract.")
flags.DEFINE_integer("batch_size", 64, "Images per forward pass.")
flag_groups.define_seed("Seeds the backbone's initialisation (--weights=none).")
flag_groups.define_output("The features file (.h5).", required=True)
flags.DEFINE_integer(
    "max_batches", 0, "Stop after this many batches (0: run to the end); rerun to continue."
)


def _progress_bar(name: str):
    import tqdm

    def progress(batches, done: int, total: int):
        with tqdm.tqdm(total=total, initial=done, desc=name, unit="img") as bar:
            for batch in batches:
                yield batch
                bar.update(len(batch))

    return progress


def _feature_model():
    """(callable on uint8 crops, the FeatureModel, crop size, normalisation) of --model
    (module doc)."""
    import tensorflow as tf

    from wsdhash.data.preprocessing import NORMALIZATIONS
    from wsdhash.models import input_quantization, model_files

    if FLAGS["backbone"].present:
        raise cli.UsageError("--model replaces --backbone; give one of them.")
    if FLAGS.normalization and FLAGS.normalization not in NORMALIZATIONS.names():
        raise cli.UsageError(
            f"--normalization={FLAGS.normalization} is not one of "
            f"{', '.join(NORMALIZATIONS.names())}."
        )
    try:
        feature_model = model_files.load_feature_model(
            FLAGS.model, signature=FLAGS.model_signature, output=FLAGS.model_output
        )
    except model_files.ModelFileError as error:
        raise cli.UsageError(str(error)) from None
    quantization = feature_model.input_quantization
    if FLAGS.normalization:
        normalization = FLAGS.normalization
        normalize = NORMALIZATIONS.get(normalization)
        if quantization is not None:
            try:
                input_quantization.check_normalization(
                    normalization, quantization, model=f"--model={FLAGS.model}"
                )
            except ValueError as error:
                raise cli.UsageError(str(error)) from None
    elif quantization is not None:
        normalization, normalize = input_quantization.pixel_normalization(quantization)
        print(
            f"--model={FLAGS.model}: its {quantization.describe()}; pixels are mapped to it "
            f"with --normalization={normalization}"
        )
    else:
        raise cli.UsageError(
            f"--model={FLAGS.model} needs --normalization (how the model expects its "
            f"pixels; one of {', '.join(NORMALIZATIONS.names())})."
        )
    crop = feature_model.crop_size
    if crop and FLAGS.crop_size and FLAGS.crop_size != crop:
        raise cli.UsageError(
            f"--crop_size={FLAGS.crop_size}, but {FLAGS.model} takes {crop}x{crop} images."
        )
    crop = crop or FLAGS.crop_size
    if not crop:
        raise cli.UsageError(f"{FLAGS.model} accepts any image size: give --crop_size.")

    def model(images, training=False):
        return feature_model(normalize(tf.cast(images, tf.float32)))

    return model, feature_model, crop, normalization


def _warn_if_collapsed(path: str, normalization: str) -> None:
    """One line on stderr when the features written to `path` look collapsed."""
    import sys

    from wsdhash.data import feature_collapse, features_file

    warning = feature_collapse.collapse_warning(features_file.sample_distinct_rows(path))
    if warning:
        print(
            f"wsdhash.extract: warning: {path}: {warning}; check that --normalization "
            f"({normalization}) is what the model expects and that the images differ.",
            file=sys.stderr,
        )


@dataclasses.dataclass(frozen=True)
class _Extractor:
    """What turns a batch of uint8 crops into features, and how the file names it."""

    model: Callable  # uint8 crops -> (B, F) features
    config: object  # the evaluation `PipelineConfig`
    normalization: str
    feature_dim: int
    backbone: str  # recorded in the file: the backbone's name or "model:PATH"
    weights: str
    model_settings: dict  # what export needs to load a --model file again


def _dataset():
    """(RetrievalDataset, its options) of --dataset and --data_dir; checks --splits."""
    from wsdhash.data import datasets

    options = flag_groups.dataset_options()
    try:
        dataset = datasets.get_dataset(FLAGS.dataset, FLAGS.data_dir, **options)
    except (OSError, ValueError, KeyError) as error:
        raise cli.UsageError(
            f"--dataset={FLAGS.dataset} --data_dir={FLAGS.data_dir}: {error}"
        ) from None
    unknown = [s for s in FLAGS.splits if s not in dataset.splits]
    if unknown:
        raise cli.UsageError(f"--splits: {unknown} not in {FLAGS.dataset}'s {dataset.splits}.")
    return dataset, options


def _model_file_extractor() -> _Extractor:
    """The feature model of --model (a file), fed uint8 crops normalised as it expects."""
    from wsdhash.data import pipeline
    from wsdhash.models import model_files

    model, feature_model, crop_size, normalization = _feature_model()
    image_size = FLAGS.image_size or max(round(crop_size * 8 / 7), crop_size)
    config = pipeline.PipelineConfig(
        image_size=image_size, crop_size=crop_size, normalization=None, ten_crop=FLAGS.ten_crop
    )
    # What `python -m wsdhash.export` needs to load the same model again and put it in
    # front of the trained head (wsdhash/models/extraction_model.py).
    model_settings = {"model_format": feature_model.kind}
    if feature_model.kind == "saved_model":
        model_settings["model_signature"] = FLAGS.model_signature
        model_settings["model_output"] = FLAGS.model_output or ""
    return _Extractor(
        model,
        config,
        normalization,
        feature_model.feature_dim,
        backbone=f"model:{os.path.abspath(FLAGS.model)}",
        weights="sha256:" + model_files.fingerprint(FLAGS.model),
        model_settings=model_settings,
    )


def _backbone_extractor() -> _Extractor:
    """--backbone with --weights: the model the trainer would build, without a head."""
    from wsdhash.models import build_backbone
    from wsdhash.models.assembly import with_normalization

    try:
        spec = build_backbone(
            FLAGS.backbone,
            weights=FLAGS.weights,
            crop_size=FLAGS.crop_size or None,
            allow_pickle=FLAGS.allow_pickle,
            seed=FLAGS.seed,
        )
    except (OSError, ValueError, KeyError, TypeError, ImportError) as error:
        raise cli.UsageError(
            f"--backbone={FLAGS.backbone} --weights={FLAGS.weights}: {error}"
        ) from None
    normalization = spec.input_normalization(FLAGS.normalization)
    # uint8 crops -> normalise -> F.
    model = with_normalization(spec.model, normalization, spec.input_dtype)
    config = spec.pipeline_config(FLAGS.image_size, FLAGS.crop_size, FLAGS.ten_crop)
    weights = FLAGS.weights
    if weights not in ("none", "imagenet", "preset"):
        weights = os.path.abspath(weights)
    return _Extractor(model, config, normalization, spec.feature_dim, FLAGS.backbone, weights, {})


def _file_settings(dataset, options: dict, extractor: _Extractor) -> dict:
    """The settings the features file records; a rerun must give the same ones."""
    import wsdhash

    return {
        "backbone": extractor.backbone,
        "weights": extractor.weights,
        "image_size": extractor.config.image_size,
        "crop_size": extractor.config.crop_size,
        "normalization": extractor.normalization,
        "ten_crop": FLAGS.ten_crop,
        "seed": FLAGS.seed,
        "dataset": FLAGS.dataset,
        "data_dir": os.path.abspath(FLAGS.data_dir),
        "dataset_options": json.dumps(options, sort_keys=True, default=str),
        "topk": -1 if dataset.topk is None else dataset.topk,
        "feature_dim": extractor.feature_dim,
        "wsdhash_version": wsdhash.__version__,
        **extractor.model_settings,
    }


def _extract(dataset, extractor: _Extractor, settings: dict) -> str | None:
    """Writes (or continues) --output; its path, or None when --max_batches stopped it."""
    from wsdhash import file_lock
    from wsdhash.data import features_file
    from wsdhash.models.encoder import Encoder

    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    encoder = Encoder(extractor.model, extractor.config, FLAGS.batch_size)
    try:
        return features_file.extract_dataset(
            FLAGS.output,
            dataset,
            FLAGS.splits,
            encoder.batches,
            settings,
            max_batches=FLAGS.max_batches or None,
            progress=_progress_bar,
        )
    except features_file.PartialFileError as error:  # from other flags or other items
        raise cli.UsageError(f"--output: {error}") from None
    except file_lock.LockedError as error:
        raise cli.UsageError(f"--output: {error}") from None


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"Unexpected arguments: {argv[1:]}")
    if os.path.exists(FLAGS.output):
        raise cli.UsageError(f"--output={FLAGS.output} exists; delete it or choose another.")
    if FLAGS.batch_size < 1 or FLAGS.max_batches < 0:
        raise cli.UsageError("--batch_size must be >= 1 and --max_batches >= 0.")
    dataset, options = _dataset()
    extractor = _model_file_extractor() if FLAGS.model else _backbone_extractor()
    path = _extract(dataset, extractor, _file_settings(dataset, options, extractor))
    if path is None:
        print(
            f"stopped after --max_batches={FLAGS.max_batches} batches; rerun the same "
            f"command to continue ({FLAGS.output}.partial)"
        )
        return
    print(f"features of {', '.join(FLAGS.splits)} ({extractor.feature_dim}-d) written to {path}")
    _warn_if_collapsed(path, extractor.normalization)


def run():
    cli.run(main, "wsdhash.extract")


if __name__ == "__main__":
    run()
