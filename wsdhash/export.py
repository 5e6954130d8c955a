"""Exports a trained run as a SavedModel for serving.

    python -m wsdhash.export --workdir=checkpoints/<run> --output=exported/<run>

See `wsdhash.serving` for the signatures. `saved_model_cli show --dir OUTPUT --all`
lists them.
"""

from __future__ import annotations

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The training run folder.", required=True)
flags.DEFINE_string("output", None, "Where the SavedModel goes.", required=True)
flags.DEFINE_string("checkpoint", "best", "'best', 'latest', or a checkpoint path.")
flags.DEFINE_bool("overwrite", False, "Replace an existing export.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from wsdhash import serving

    try:
        model, _, pipeline_config = serving.load_trained_model(FLAGS.workdir, FLAGS.checkpoint)
        encoder = serving.load_quantization_encoder(FLAGS.workdir, FLAGS.checkpoint)
        path = serving.export_saved_model(
            model, pipeline_config, FLAGS.output, FLAGS.overwrite, quantization_encoder=encoder
        )
    except (FileNotFoundError, FileExistsError) as error:
        raise app.UsageError(str(error)) from None
    print(f"SavedModel written to {path}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
