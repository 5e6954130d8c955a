"""Training and encoding throughput per backbone, on this machine; oneDNN and PyTorch.

Run by hand: `python bench/train_speed.py [--backbones=small_cnn,resnet50] [--batch_size=32]`.
Feeds random uint8 crops already in memory (so the numbers are the model's, not the
input pipeline's: see bench/input_pipeline.py for that) through one OrthoHash training
step (forward, loss, backward, SGD update) and through encoding (forward only).
TensorFlow starts with the library's defaults (`wsdhash.cli.set_tensorflow_defaults`:
oneDNN on unless TF_ENABLE_ONEDNN_OPTS is set).

`--compare` runs every setting in its own process (TF_ENABLE_ONEDNN_OPTS is read when
TensorFlow is imported), interleaved `--repeats` times (off, on, PyTorch, off, on, ...)
so that a busy machine slows each alike, and prints the medians and their ratios:
oneDNN on / off, and each against the PyTorch peer (bench/train_speed_torch.py, the
same models, shapes and step) when `--peer_python` has torch (the default interpreter
usually does not: point it at a scratch virtualenv with torch). It also checks that
oneDNN's results agree with TensorFlow's own kernels: the encoded codes of the same
seeded model on the same images, and the loss of the first training step.

    python bench/train_speed.py --compare --backbones=alexnet_caffe,alexnet,resnet18 \
        --peer_python=/tmp/torchenv/bin/python --steps=5 --repeats=3

`--keras_grouped_conv` builds CaffeNet with Keras' own grouped `Conv2D` (the layout
before issue 15), to time the split convolutions against it. `--resnet18_keras_layers`
builds ResNet-18 with Keras' unfused `BatchNormalization` and `ZeroPadding2D` + "valid"
convolutions (the layout before issue 15), to time the fused layers against it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import machine_info
import numpy as np
import results
from absl import app, flags

from wsdhash import cli

FLAGS = flags.FLAGS
flags.DEFINE_list("backbones", ["small_cnn", "resnet50"], "Backbones to time.")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_integer("bits", 64, "Code length.")
flags.DEFINE_integer("steps", 10, "Timed steps after 2 warm-up steps.")
flags.DEFINE_bool("compare", False, "oneDNN off/on and the PyTorch peer, interleaved.")
flags.DEFINE_integer("repeats", 3, "--compare: runs of each setting (medians reported).")
flags.DEFINE_string(
    "peer_python", sys.executable, "--compare: interpreter for the PyTorch peer; '' skips it."
)
flags.DEFINE_bool(
    "keras_grouped_conv", False, "CaffeNet with Keras' grouped Conv2D (the former layout)."
)
flags.DEFINE_bool(
    "resnet18_keras_layers",
    False,
    "ResNet-18 with Keras' BatchNormalization and ZeroPadding2D (the former layout).",
)
flags.DEFINE_string("child_output", None, "Internal: write this process's results as JSON.")

HERE = os.path.dirname(os.path.abspath(__file__))
# Agreement of oneDNN with TensorFlow's own kernels: codes within this fraction of their
# largest magnitude (float32 rounding through a deep network).
AGREEMENT_TOLERANCE = 1e-3


def time_backbone(name: str) -> dict:
    import tensorflow as tf

    from wsdhash.losses.orthohash import OrthoHashLoss
    from wsdhash.models.assembly import build_model
    from wsdhash.training.config import ModelConfig, TrainConfig
    from wsdhash.training.optimization import GroupedOptimizer, OptimizerConfig

    if FLAGS.keras_grouped_conv:
        import keras

        from wsdhash.models import alexnet

        alexnet.Conv2D = keras.layers.Conv2D  # This process only.
    if FLAGS.resnet18_keras_layers:
        from wsdhash.models import resnet18

        resnet18._FORMER_LAYOUT = True  # This process only.
    config = TrainConfig(model=ModelConfig(backbone=name, head="linear_bn", bits=FLAGS.bits))
    model, backbone, hashing = build_model(config, config.model.bits)
    size = backbone.crop_size
    num_classes = 10
    loss_layer = OrthoHashLoss(bits=FLAGS.bits, num_classes=num_classes)
    optimizer = GroupedOptimizer(
        OptimizerConfig(learning_rate=1e-3),
        hashing.backbone.trainable_variables,
        hashing.head.trainable_variables,
    )
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (FLAGS.batch_size, size, size, 3), dtype=np.uint8))
    labels = tf.one_hot(rng.integers(0, num_classes, FLAGS.batch_size), num_classes)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            codes = model(images, training=True)
            loss = tf.reduce_mean(loss_layer(codes, labels)["loss"])
        optimizer.apply(tape.gradient(loss, optimizer.variables))
        return loss

    @tf.function
    def encode_step():
        return model(images, training=False)

    codes = encode_step().numpy()  # Before any update: the seeded model's codes.
    first_loss = float(train_step().numpy())
    rates = []
    for step in (train_step, encode_step):
        for _ in range(2):
            step().numpy()
        start = time.perf_counter()
        for _ in range(FLAGS.steps):
            step().numpy()
        rates.append(FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start))
    return {
        "backbone": name,
        "input": size,
        "train": rates[0],
        "encode": rates[1],
        "first_loss": first_loss,
        "codes": codes.tolist(),
    }


def _child(setting: str, names: list[str]) -> list[dict]:
    """One process: Keras with oneDNN off/on, or the PyTorch peer."""
    common = [f"--batch_size={FLAGS.batch_size}", f"--bits={FLAGS.bits}", f"--steps={FLAGS.steps}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if setting == "torch":
        command = [FLAGS.peer_python, os.path.join(HERE, "train_speed_torch.py"), *common]
        done = subprocess.run(
            [*command, f"--backbones={','.join(names)}"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"PyTorch peer failed: {done.stderr.strip()[-2000:]}")
        return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    env["TF_ENABLE_ONEDNN_OPTS"] = {"off": "0", "on": "1"}[setting]
    with tempfile.TemporaryDirectory() as tmp:
        output = os.path.join(tmp, "results.json")
        command = [sys.executable, os.path.abspath(__file__), *common]
        command += [f"--backbones={','.join(names)}", f"--child_output={output}"]
        if FLAGS.keras_grouped_conv:
            command.append("--keras_grouped_conv")
        if FLAGS.resnet18_keras_layers:
            command.append("--resnet18_keras_layers")
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode:
            raise RuntimeError(f"oneDNN {setting} run failed: {done.stderr.strip()[-2000:]}")
        with open(output, encoding="utf-8") as f:
            return json.load(f)


def _torch_available() -> bool:
    if not FLAGS.peer_python:
        return False
    try:
        done = subprocess.run(
            [FLAGS.peer_python, "-c", "import torch"], capture_output=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def compare(names: list[str]) -> None:
    settings = ["off", "on"] + (["torch"] if _torch_available() else [])
    if "torch" not in settings:
        print(f"PyTorch peer: torch is not importable by {FLAGS.peer_python!r}; skipped")
    runs: dict[str, list[list[dict]]] = {s: [] for s in settings}
    for repeat in range(FLAGS.repeats):
        for setting in settings:
            start = time.perf_counter()
            runs[setting].append(_child(setting, names))
            print(
                f"  run {repeat + 1}/{FLAGS.repeats} {setting}: "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )

    def median(setting, index, key):
        return statistics.median(run[index][key] for run in runs[setting])

    print(
        f"\nmedians of {FLAGS.repeats} interleaved runs, images/s "
        f"(ratios of the medians; keras = TensorFlow/Keras with oneDNN on or off)"
    )
    header = f"{'backbone':<15}{'step':<8}{'keras off':>10}{'keras on':>10}{'on/off':>8}"
    if "torch" in settings:
        header += f"{'torch':>9}{'on/torch':>10}{'off/torch':>10}"
    print(header)
    for index, name in enumerate(names):
        for key in ("train", "encode"):
            off, on = median("off", index, key), median("on", index, key)
            line = f"{name:<15}{key:<8}{off:>10.1f}{on:>10.1f}{on / off:>8.2f}"
            scale = f"batch {FLAGS.batch_size}, {runs['off'][0][index]['input']} px"
            results.record("training", f"{name} {key} oneDNN on/off", on / off, "x", scale)
            if "torch" in settings and "error" not in runs["torch"][0][index]:
                peer = median("torch", index, key)
                line += f"{peer:>9.1f}{on / peer:>10.2f}{off / peer:>10.2f}"
                results.record("training", f"{name} {key} vs PyTorch", on / peer, "x", scale)
            print(line)
    print("\noneDNN vs TensorFlow's own kernels (first run of each):")
    for index, name in enumerate(names):
        off, on = runs["off"][0][index], runs["on"][0][index]
        a, b = np.asarray(off["codes"]), np.asarray(on["codes"])
        difference = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))
        loss_difference = abs(off["first_loss"] - on["first_loss"]) / abs(off["first_loss"])
        agree = difference <= AGREEMENT_TOLERANCE and loss_difference <= AGREEMENT_TOLERANCE
        print(
            f"  {name:<15} codes: largest difference {difference:.1e} of the largest |code|, "
            f"first loss: relative difference {loss_difference:.1e}; agree within "
            f"{AGREEMENT_TOLERANCE:g}: {agree}"
        )


def main(argv):
    del argv
    if FLAGS.child_output:
        with open(FLAGS.child_output, "w", encoding="utf-8") as f:
            json.dump([time_backbone(name) for name in FLAGS.backbones], f)
        return
    print(f"machine: {machine_info.describe()}")
    print(f"batch {FLAGS.batch_size}, {FLAGS.bits} bits, OrthoHash loss, SGD; images in memory")
    if FLAGS.compare:
        compare(FLAGS.backbones)
        return
    cli.set_tensorflow_defaults()
    print(f"TF_ENABLE_ONEDNN_OPTS={os.environ['TF_ENABLE_ONEDNN_OPTS']}")
    print(f"{'backbone':<16}{'input':>8}{'train images/s':>16}{'encode images/s':>17}")
    for name in FLAGS.backbones:
        result = time_backbone(name)
        size, train_rate, encode_rate = result["input"], result["train"], result["encode"]
        print(f"{name:<16}{size:>8}{train_rate:>16.1f}{encode_rate:>17.1f}")
        results.record(
            "training", f"{name} train, batch {FLAGS.batch_size}", train_rate, "images/s"
        )
        results.record("encoding", f"{name} encode", encode_rate, "images/s")


if __name__ == "__main__":
    app.run(main)
