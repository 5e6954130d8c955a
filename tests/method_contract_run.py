"""The training half of `contracts.run_method_test`, run in a subprocess of its own
(logical CPU devices must be configured before TensorFlow initialises them):

    python tests/method_contract_run.py CONFIG.json OUTPUT_DIR

trains the method of CONFIG (a `TrainConfig` as JSON) four times in this one process
and exports the first run:

    one/      one device, all steps
    two/      MirroredStrategy over two logical CPUs, all steps
    resumed/  one device, half the steps, then resumed to all of them
    one/saved_model   the export of one/
"""

import dataclasses
import json
import os
import sys


def main(config_path: str, output: str) -> None:
    import tensorflow as tf

    from wsdhash.training import strategy as strategy_lib

    strategy_lib.split_cpu(2)
    tf.config.experimental.enable_op_determinism()

    from wsdhash import serving
    from wsdhash.training import trainer
    from wsdhash.training.config import config_from_dict

    with open(config_path) as f:
        config = config_from_dict(json.load(f))
    one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def run(name, strategy, **changes):
        workdir = os.path.join(output, name)
        changed = dataclasses.replace(config, workdir=workdir, **changes)
        return trainer.train(changed, strategy, allow_changes=("steps",))

    run("one", one_device)
    run("two", mirrored)
    run("resumed", one_device, steps=config.steps // 2)
    run("resumed", one_device)
    workdir = os.path.join(output, "one")
    model, _, pipeline_config = serving.load_trained_model(workdir)
    serving.export_saved_model(
        model,
        pipeline_config,
        os.path.join(workdir, "saved_model"),
        quantization_encoder=serving.load_quantization_encoder(workdir),
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
