"""The training half of `contracts.run_method_test`, run in a process of its own
(logical CPU devices must be configured before TensorFlow initialises them):

    python tests/method_contract_run.py CONFIG.json OUTPUT_DIR
    python tests/method_contract_run.py --serve   # {"config", "output"} requests on stdin
                                                  # (tests/worker_process.py)

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

STRATEGIES = {}


def setup() -> None:
    """Two logical CPUs, deterministic ops and the two strategies, once per process
    (MirroredStrategy objects made anew per request would reuse collective keys)."""
    import tensorflow as tf

    from wsdhash.training import strategy as strategy_lib

    strategy_lib.split_cpu(2)
    tf.config.experimental.enable_op_determinism()
    STRATEGIES["one"] = tf.distribute.OneDeviceStrategy("/cpu:0")
    STRATEGIES["two"] = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def main(config_path: str, output: str) -> None:
    from wsdhash.export import saved_model, trained_run
    from wsdhash.training import trainer
    from wsdhash.training.config import config_from_dict

    with open(config_path) as f:
        config = config_from_dict(json.load(f))
    one_device, mirrored = STRATEGIES["one"], STRATEGIES["two"]

    def run(name, strategy, **changes):
        workdir = os.path.join(output, name)
        changed = dataclasses.replace(config, workdir=workdir, **changes)
        return trainer.train(changed, strategy, allow_changes=("steps",))

    run("one", one_device)
    run("two", mirrored)
    half = dataclasses.replace(config.schedule, steps=config.schedule.steps // 2)
    run("resumed", one_device, schedule=half)
    run("resumed", one_device)
    workdir = os.path.join(output, "one")
    model, _, pipeline_config = trained_run.load_trained_model(workdir)
    saved_model.export_saved_model(
        model,
        pipeline_config,
        os.path.join(workdir, "saved_model"),
        quantization_encoder=trained_run.load_quantization_encoder(workdir),
    )


if __name__ == "__main__":
    setup()
    if sys.argv[1:] == ["--serve"]:
        from worker_process import serve_requests

        serve_requests(lambda request: main(request["config"], request["output"]))
    else:
        main(*sys.argv[1:])
