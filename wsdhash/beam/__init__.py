"""Apache Beam pipelines: bulk encoding of images and TFRecord shards for training.

Needs the `beam` extra (`pip install -e '.[beam]'`): `apache-beam` alone, not its
`[tensorflow]` extra, which pins an older TensorFlow. The command is
`python -m wsdhash.pipeline` (wsdhash/commands/pipeline.py); these modules define no flags.
"""
