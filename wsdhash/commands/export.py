"""Exports a trained run as a SavedModel for serving.

    python -m wsdhash.export --workdir=checkpoints/<run> --output=exported/<run>

See `wsdhash.export` (wsdhash/export/__init__.py) for the signatures. `saved_model_cli show --dir OUTPUT --all`
lists them; `saved_model_cli run` (TensorFlow 1's session loader, the one TensorFlow
Serving uses) runs them.

A run trained on features (`--backbone=features`) is exported as a model that takes
images whenever its features came from a model file (`python -m wsdhash.extract
--model=FILE`) that can still be found: the feature model goes in front of the head,
with the extraction's resize, crop and normalisation (wsdhash/models/extraction_model.py).

    python -m wsdhash.export --workdir=RUN --output=DIR                  # auto
    python -m wsdhash.export ... --feature_model=encoder.tflite          # moved model
    python -m wsdhash.export ... --input=features                        # features in

`--input=auto` (the default) composes when the model file the features file records
exists and still has the SHA-256 recorded at extraction, and otherwise exports a model
that takes features, saying why on one line; `--input=images` makes that an error;
`--feature_model=FILE` names the model file (another copy of the same model: its
SHA-256 must be the recorded one).
"""

from __future__ import annotations

import sys

from absl import flags

from wsdhash import cli
from wsdhash.commands import flag_groups

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training run folder.", required=True)
flag_groups.define_output("Where the SavedModel goes.", required=True)
flags.DEFINE_string("checkpoint", "best", "'best', 'latest', or a checkpoint path.")
flag_groups.define_overwrite("export")
flags.DEFINE_integer(
    "max_pixels",
    50_000_000,
    "Largest image (width x height, from its header) the image signature decodes; "
    "larger ones give valid=False without being decoded.",
)
flags.DEFINE_enum(
    "input",
    "auto",
    ["auto", "images", "features"],
    "Runs on features: 'images' puts the feature model in front of the head, "
    "'features' exports the head alone, 'auto' composes when the feature model is found.",
)
flags.DEFINE_string(
    "feature_model",
    None,
    "Runs on features: the feature model file (.keras, SavedModel, .tflite) the features "
    "were extracted with, if it is no longer where the features file says.",
)


def _feature_extractor(config):
    """(ImageFeatures, Extraction) to compose with a run on features, or (None, None)
    for a features-in export (flags --input and --feature_model; module doc)."""
    if config.model.backbone != "features":
        if FLAGS.feature_model or FLAGS.input == "features":
            given = "--feature_model" if FLAGS.feature_model else "--input=features"
            raise cli.UsageError(
                f"{given} applies to runs trained on features; {FLAGS.workdir} was trained "
                f"on images (--backbone={config.model.backbone})."
            )
        return None, None
    if FLAGS.input == "features":
        if FLAGS.feature_model:
            raise cli.UsageError("--feature_model composes an image model; drop --input=features.")
        return None, None
    from wsdhash.models import extraction_model

    try:
        return extraction_model.image_features_for(config.data.data_dir, FLAGS.feature_model)
    except extraction_model.FeatureModelError as error:
        if FLAGS.input == "images" or FLAGS.feature_model:
            raise cli.UsageError(f"cannot export a model that takes images: {error}.") from None
        print(
            f"wsdhash.export: exporting a model that takes features, not images: {error} "
            "(--feature_model=FILE composes one that takes images; --input=features "
            "silences this).",
            file=sys.stderr,
            flush=True,
        )
        return None, None


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.max_pixels < 1:
        raise cli.UsageError(f"--max_pixels must be >= 1, got {FLAGS.max_pixels}.")
    from wsdhash.export import saved_model, trained_run

    try:
        model, config, pipeline_config = trained_run.load_trained_model(
            FLAGS.workdir, FLAGS.checkpoint
        )
        extractor, extraction = _feature_extractor(config)
        info = {}
        if extractor is not None:
            from wsdhash.data.pipeline import PipelineConfig

            pipeline_config = PipelineConfig(
                image_size=extraction.image_size,
                crop_size=extraction.crop_size,
                normalization=None,
                ten_crop=extraction.ten_crop,
            )
            info = {"feature_model_sha256": extraction.sha256}
        encoder = trained_run.load_quantization_encoder(FLAGS.workdir, FLAGS.checkpoint)
        path = saved_model.export_saved_model(
            model,
            pipeline_config,
            FLAGS.output,
            FLAGS.overwrite,
            quantization_encoder=encoder,
            max_pixels=FLAGS.max_pixels,
            feature_extractor=extractor,
            info=info,
        )
    except (FileNotFoundError, FileExistsError) as error:
        raise cli.UsageError(str(error)) from None
    if extractor is not None:
        print(
            f"SavedModel written to {path}: images -> {extractor.kind} feature model "
            f"({extraction.model_path if not FLAGS.feature_model else FLAGS.feature_model}) "
            "-> hashing head"
        )
    elif config.model.backbone == "features":
        print(f"SavedModel written to {path} (it takes features)")
    else:
        print(f"SavedModel written to {path}")


def run():
    cli.run(main, "wsdhash.export")


if __name__ == "__main__":
    run()
