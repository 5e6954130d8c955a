"""Training on precomputed features vs on images: images/s of the same head and loss.

Run by hand: `python bench/features_training.py [--quick]`.
On the built-in dataset, times OrthoHash training steps (batch 32, 64 bits, SGD) fed by
the real input pipeline: once from the images (decode, random crop and flip, backbone
forward and backward, head), once from a features file of the same backbone
(`python -m wsdhash.extract`; only the head trains). Also reports the extraction rate,
the one-off cost that training on features pays first. `--quick` runs the small CNN
on a few hundred 32-pixel images; the full run adds ResNet-18 at 224 pixels.
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from wsdhash.data import datasets, features_file, pipeline  # noqa: E402
from wsdhash.losses.orthohash import OrthoHashLoss  # noqa: E402
from wsdhash.models import build_backbone  # noqa: E402
from wsdhash.models.assembly import build_model, with_normalization  # noqa: E402
from wsdhash.models.encoder import Encoder  # noqa: E402
from wsdhash.training.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from wsdhash.training.optimization import GroupedOptimizer, OptimizerConfig  # noqa: E402

BENCHMARK = "features_training"
BATCH_SIZE = 32
BITS = 64


def _train_rate(config: TrainConfig, split, steps: int) -> float:
    """Training images/s of `config`'s model fed by the training pipeline of `split`."""
    model, backbone, hashing = build_model(config, config.model.bits)
    loss_layer = OrthoHashLoss(bits=BITS, num_classes=split.labels.shape[1])
    optimizer = GroupedOptimizer(
        OptimizerConfig(learning_rate=1e-3),
        hashing.backbone.trainable_variables,
        hashing.head.trainable_variables,
    )
    batches = iter(
        pipeline.make_dataset(
            split,
            backbone.pipeline_config(
                config.data.image_size, config.data.crop_size, config.data.ten_crop
            ),
            training=True,
            batch_size=BATCH_SIZE,
        )
    )

    @tf.function
    def train_step(batch):
        with tf.GradientTape() as tape:
            codes = model(batch["image"], training=True)
            loss = tf.reduce_mean(loss_layer(codes, batch["labels"])["loss"])
        optimizer.apply(tape.gradient(loss, optimizer.variables))
        return loss

    for _ in range(2):  # tracing and warm-up
        train_step(next(batches)).numpy()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(next(batches)).numpy()
    return steps * BATCH_SIZE / (time.perf_counter() - start)


def _compare(backbone: str, image_size: int, num_train: int, steps: int, folder: str) -> list:
    data_dir = os.path.join(folder, f"builtin_{backbone}")
    sizes = {"num_train": num_train, "num_query": 10, "num_database": 10}
    dataset = datasets.get_dataset("builtin", data_dir, image_size=image_size, **sizes)
    train = dataset.split("train")
    images = TrainConfig(model=ModelConfig(backbone=backbone, bits=BITS), seed=0)

    spec = build_backbone(backbone, weights="none", seed=0)
    model = with_normalization(spec.model, spec.normalization)
    config = spec.pipeline_config(
        images.data.image_size, images.data.crop_size, images.data.ten_crop
    )
    encoder = Encoder(model, config, 64)
    path = os.path.join(folder, f"{backbone}.h5")
    settings = {
        "backbone": backbone,
        "weights": "none",
        "image_size": config.image_size,
        "crop_size": config.crop_size,
        "normalization": spec.normalization,
        "ten_crop": False,
        "dataset": "builtin",
        "data_dir": data_dir,
        "topk": 1000,
        "feature_dim": spec.feature_dim,
        "wsdhash_version": "bench",
    }
    start = time.perf_counter()
    features_file.extract_dataset(path, dataset, ("train",), encoder.batches, settings)
    extraction = num_train / (time.perf_counter() - start)

    image_rate = _train_rate(images, train, steps)
    on_features = TrainConfig(
        data=DataConfig(dataset="features", data_dir=path),
        model=ModelConfig(backbone="features", bits=BITS),
        seed=0,
    )
    features_rate = _train_rate(on_features, features_file.read_split(path, "train"), steps)
    name = f"{backbone} {config.crop_size}px"
    return [
        {
            "benchmark": BENCHMARK,
            "metric": f"{name} train from images",
            "value": image_rate,
            "unit": "images/s",
        },
        {
            "benchmark": BENCHMARK,
            "metric": f"{name} train from features",
            "value": features_rate,
            "unit": "images/s",
        },
        {
            "benchmark": BENCHMARK,
            "metric": f"{name} speed-up",
            "value": features_rate / image_rate,
            "unit": "x",
        },
        {
            "benchmark": BENCHMARK,
            "metric": f"{name} extraction (one-off)",
            "value": extraction,
            "unit": "images/s",
        },
    ]


def run(quick: bool = False) -> list[dict]:
    """Rows {"benchmark", "metric", "value", "unit"} of the comparison (module doc)."""
    cases = (
        [("small_cnn", 32, 256, 5)]
        if quick
        else [
            ("small_cnn", 64, 2000, 50),
            ("resnet18", 64, 640, 10),  # 64-pixel images resized to 256, cropped to 224
        ]
    )
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for backbone, image_size, num_train, steps in cases:
            rows += _compare(backbone, image_size, num_train, steps, folder)
    return rows


FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Small sizes: a smoke run, not the reference numbers.")


def main(argv=None):
    del argv
    import machine_info  # bench/ is on the path when run as a script
    import results

    print(f"machine: {machine_info.describe()}")
    print(f"batch {BATCH_SIZE}, {BITS} bits, OrthoHash loss, SGD; the real input pipeline")
    print(f"{'metric':<44}{'value':>12}  unit")
    for row in run(quick=FLAGS.quick):
        print(f"{row['metric']:<44}{row['value']:>12.1f}  {row['unit']}")
        results.record(row["benchmark"], row["metric"], row["value"], row["unit"])


if __name__ == "__main__":
    app.run(main)
