"""Exports a trained run as a SavedModel for serving.

    python -m wsdhash.export --workdir=checkpoints/<run> --output=exported/<run>

See `wsdhash.serving` for the signatures. `saved_model_cli show --dir OUTPUT --all`
lists them; `saved_model_cli run` (TensorFlow 1's session loader, the one TensorFlow
Serving uses) runs them.
"""

from __future__ import annotations

from absl import flags

from wsdhash import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training run folder.", required=True)
flags.DEFINE_string("output", None, "Where the SavedModel goes.", required=True)
flags.DEFINE_string("checkpoint", "best", "'best', 'latest', or a checkpoint path.")
flags.DEFINE_bool("overwrite", False, "Replace an existing export.")
flags.DEFINE_integer(
    "max_pixels",
    50_000_000,
    "Largest image (width x height, from its header) the image signature decodes; "
    "larger ones give valid=False without being decoded.",
)


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.max_pixels < 1:
        raise cli.UsageError(f"--max_pixels must be >= 1, got {FLAGS.max_pixels}.")
    from wsdhash import serving

    try:
        model, _, pipeline_config = serving.load_trained_model(FLAGS.workdir, FLAGS.checkpoint)
        encoder = serving.load_quantization_encoder(FLAGS.workdir, FLAGS.checkpoint)
        path = serving.export_saved_model(
            model,
            pipeline_config,
            FLAGS.output,
            FLAGS.overwrite,
            quantization_encoder=encoder,
            max_pixels=FLAGS.max_pixels,
        )
    except (FileNotFoundError, FileExistsError) as error:
        raise cli.UsageError(str(error)) from None
    print(f"SavedModel written to {path}")


def run():
    cli.run(main, "wsdhash.export")


if __name__ == "__main__":
    run()
