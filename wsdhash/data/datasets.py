"""The dataset registry: each entry knows where its splits live and its protocol.

A dataset is one `DatasetSpec` (dataset_spec.py) declared and registered in the module
that reads it: the list layouts and the built-in dataset in list_datasets.py, the real
datasets in `wsdhash.data.sources` (one module each, with their preparers), precomputed
features in features_file.py. Importing this module imports them all, so `DATASETS`
(name -> `(data_dir, **options) -> RetrievalDataset`) is complete.
"""

from __future__ import annotations

# Every module that registers datasets, in registration order.
# isort: off
from wsdhash.data.list_datasets import (  # builtin, wsdhq, hashnet
    HASHNET_FILES,
    builtin,
    hashnet_lists,
    prepared_lists,
    wsdhq_lists,
)
from wsdhash.data import sources  # noqa: F401  the real datasets (sources/__init__.py)
from wsdhash.data import features_file  # noqa: F401  features

# isort: on
from wsdhash.data.dataset_spec import DATASETS, SPECS, DatasetSpec
from wsdhash.data.types import RetrievalDataset

__all__ = [
    "DATASETS",
    "HASHNET_FILES",
    "SPECS",
    "DatasetSpec",
    "builtin",
    "command_line_options",
    "get_dataset",
    "hashnet_lists",
    "prepared_lists",
    "wsdhq_lists",
]


def get_dataset(name: str, data_dir: str, **options) -> RetrievalDataset:
    """Builds the registered dataset `name` rooted at `data_dir`."""
    return DATASETS.get(name)(data_dir, **options)


def command_line_options(
    name: str,
    *,
    image_root: str | None,
    builtin_sizes: tuple[int, int, int],
    builtin_image_size: int,
    seed: int,
) -> dict:
    """Factory options from the entry points' common data flags (train, extract)."""
    options = {}
    # Unknown names keep the option (get_dataset then says the name is unknown).
    if image_root and (name not in SPECS or SPECS.get(name).image_root):
        options["image_root"] = image_root
    if name == "builtin":
        num_train, num_query, num_database = builtin_sizes
        options.update(
            seed=seed,
            image_size=builtin_image_size,
            num_train=num_train,
            num_query=num_query,
            num_database=num_database,
        )
    return options
