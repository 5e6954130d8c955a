"""A small features file of Gaussian clusters, in the format `python -m wsdhash.extract`
writes, for tests that train heads on features."""

import numpy as np

from wsdhash.data import features_file
from wsdhash.data.types import SplitData


def write_clustered_features(path, sizes=(200, 20, 100), classes=4, dim=16, seed=0):
    """A features file of Gaussian clusters, one per class (what extract writes)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 3
    settings = {
        "backbone": "synthetic",
        "weights": "none",
        "seed": seed,
        "image_size": 0,
        "crop_size": 0,
        "normalization": "",
        "ten_crop": False,
        "dataset": "synthetic",
        "data_dir": "",
        "dataset_options": "{}",
        "feature_dim": dim,
        "topk": -1,
        "wsdhash_version": "test",
    }
    writer = features_file.FeaturesWriter(str(path), settings)
    try:
        for name, n in zip(("train", "query", "database"), sizes):
            y = rng.integers(0, classes, n)
            x = centres[y] + rng.normal(size=(n, dim))
            split = SplitData(
                name=name,
                paths=np.array([f"{name}/{i}.jpg" for i in range(n)]),
                labels=np.eye(classes, dtype=np.uint8)[y],
                tags=np.zeros((n, 0), np.uint8),
            )
            writer.start_split(split, dim)
            writer.write_rows(name, 0, x.astype(np.float32))
        return writer.finish()
    finally:
        writer.close()
