"""The registered datasets that read files of their own pass the dataset contract
(tests/contracts.py) on small fixtures in their real on-disk formats: the built-in
dataset, WSDHQ lists over it and HashNet lists over it. The prepared datasets
(flickr25k, nuswide, ...) are these list formats after `prepare` (tests/data/sources);
features files: tests/data/test_features_file.py."""

import pytest
from contracts import run_dataset_test
from training.train_helpers import single_label_lists

from wsdhash.data import datasets
from wsdhash.data.builtin import generate_builtin


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    root = tmp_path_factory.mktemp("builtin")
    generate_builtin(root, image_size=16, num_train=40, num_query=8, num_database=20)
    return root


def test_builtin(builtin):
    data = datasets.get_dataset(
        "builtin", str(builtin), image_size=16, num_train=40, num_query=8, num_database=20
    )
    run_dataset_test(data)
    assert len(data.split("train").tag_names) > 0  # the built-in dataset carries tags


def test_wsdhq_lists(builtin):
    run_dataset_test(datasets.get_dataset("wsdhq", str(builtin)))


def test_hashnet_lists(builtin, tmp_path):
    single_label_lists(builtin, tmp_path)
    run_dataset_test(datasets.get_dataset("hashnet", str(tmp_path), image_root=str(builtin)))
