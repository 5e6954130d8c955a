"""Training and encoding throughput per backbone, on this machine.

Run by hand: `python bench/train_speed.py [--backbones=small_cnn,resnet50] [--batch_size=32]`.
Feeds random uint8 crops already in memory (so the numbers are the model's, not the
input pipeline's: see bench/input_pipeline.py for that) through one OrthoHash training
step (forward, loss, backward, SGD update) and through encoding (forward only).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from wsdhash.losses import LOSSES  # noqa: E402
from wsdhash.training import trainer  # noqa: E402
from wsdhash.training.optimization import GroupedOptimizer, OptimizerConfig  # noqa: E402
import machine_info  # noqa: E402  (bench/ is on the path)
import results  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("backbones", ["small_cnn", "resnet50"], "Backbones to time.")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_integer("bits", 64, "Code length.")
flags.DEFINE_integer("steps", 10, "Timed steps after 2 warm-up steps.")


def time_backbone(name: str) -> tuple[int, float, float]:
    config = trainer.TrainConfig(backbone=name, head="linear_bn", bits=FLAGS.bits)
    model, backbone, hashing = trainer.build_model(config)
    size = backbone.crop_size
    num_classes = 10
    loss_layer = LOSSES.get("orthohash")(bits=FLAGS.bits, num_classes=num_classes)
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

    rates = []
    for step in (train_step, encode_step):
        for _ in range(2):
            step().numpy()
        start = time.perf_counter()
        for _ in range(FLAGS.steps):
            step().numpy()
        rates.append(FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start))
    return size, rates[0], rates[1]


def main(argv):
    del argv
    print(f"machine: {machine_info.describe()}")
    print(f"batch {FLAGS.batch_size}, {FLAGS.bits} bits, OrthoHash loss, SGD; images in memory")
    print(f"{'backbone':<16}{'input':>8}{'train images/s':>16}{'encode images/s':>17}")
    for name in FLAGS.backbones:
        size, train_rate, encode_rate = time_backbone(name)
        print(f"{name:<16}{size:>8}{train_rate:>16.1f}{encode_rate:>17.1f}")
        results.record(
            "training", f"{name} train, batch {FLAGS.batch_size}", train_rate, "images/s"
        )
        results.record("encoding", f"{name} encode", encode_rate, "images/s")


if __name__ == "__main__":
    app.run(main)
