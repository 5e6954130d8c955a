"""The shared real-photo development features as a wsdhash features file.

`../shared/realdata/cifar10_mobilenet_v1_21k.npz` (developers and CI only; users do not
have it) holds 1024-d MobileNet-v1 features of 21,000 real CIFAR-10 photos with a fixed
protocol: 1,000 queries, a 20,000-item database and 5,000 of its rows for training.
`features_file(output)` writes them in the format `python -m wsdhash.extract` writes,
so that `python -m wsdhash.train --backbone=features --features=...` and every bench
that takes a features file read them as they would a user's own extraction.

Optional user tags for weak-supervision studies: `tags` is a (rows, T) 0/1 matrix per
split with its tag names (see `simulated_tags`).
"""

from __future__ import annotations

import os

import numpy as np

NPZ = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    os.pardir,
    os.pardir,
    "shared",
    "realdata",
    "cifar10_mobilenet_v1_21k.npz",
)
PROVENANCE = (
    "1024-d MobileNet-v1 (ImageNet, quantised TFLite) features of 21,000 real CIFAR-10 "
    "photos: 1,000 queries, a 20,000-item database, 5,000 database rows for training; "
    "relevance = same class"
)


def available(path: str = NPZ) -> bool:
    return os.path.exists(path)


def load(path: str = NPZ) -> dict[str, np.ndarray]:
    """The npz's arrays (features as float32)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    for name in ("database_features", "query_features"):
        arrays[name] = arrays[name].astype(np.float32)
    return arrays


def splits(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """{split: {"features", "labels" (one-hot uint8), "paths"}} for train/query/database."""
    classes = len(arrays["label_names"])

    def one_hot(labels):
        return np.eye(classes, dtype=np.uint8)[labels.astype(np.int64)]

    rows = arrays["train_rows"].astype(np.int64)
    database = {
        "features": arrays["database_features"],
        "labels": one_hot(arrays["database_labels"]),
        "paths": arrays["database_paths"].astype(str),
    }
    return {
        "train": {key: value[rows] for key, value in database.items()},
        "query": {
            "features": arrays["query_features"],
            "labels": one_hot(arrays["query_labels"]),
            "paths": arrays["query_paths"].astype(str),
        },
        "database": database,
    }


def write_features_file(
    output: str,
    data: dict[str, dict[str, np.ndarray]],
    label_names,
    *,
    tags: dict[str, np.ndarray] | None = None,
    tag_names=(),
    description: str = PROVENANCE,
) -> str:
    """Writes `data` ({split: features, labels, paths}) as a wsdhash features file."""
    from wsdhash.data import features_file
    from wsdhash.data.types import SplitData

    feature_dim = data["train"]["features"].shape[1]
    settings = {
        "backbone": "precomputed",
        "weights": description,
        "seed": 0,
        "image_size": 0,
        "crop_size": 0,
        "normalization": "",
        "ten_crop": False,
        "dataset": "realdata",
        "data_dir": os.path.abspath(NPZ),
        "dataset_options": "{}",
        "feature_dim": feature_dim,
        "topk": -1,
        "wsdhash_version": "bench",
    }
    writer = features_file.FeaturesWriter(output, settings)
    try:
        for name in ("train", "query", "database"):
            split = data[name]
            n = len(split["paths"])
            split_tags = (tags[name] if tags is not None else np.zeros((n, 0), np.uint8)).astype(
                np.uint8
            )
            item = SplitData(
                name=name,
                paths=split["paths"],
                labels=split["labels"],
                tags=split_tags,
                label_names=tuple(label_names),
                tag_names=tuple(tag_names),
            )
            writer.start_split(item, feature_dim)
            writer.write_rows(name, 0, split["features"])
        return writer.finish()
    finally:
        writer.close()


def features_file(output: str, path: str = NPZ) -> str:
    """The shared CIFAR-10 features as a features file at `output` (made once)."""
    if os.path.exists(output):
        return output
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    arrays = load(path)
    return write_features_file(output, splits(arrays), arrays["label_names"].astype(str))
