"""Every registered method passes the same contract (tests/contracts.py): 1 vs 2
replicas, resume equality, export-and-serve without wsdhash, evaluation through its
scorer; and its loss layer passes the loss contract.

A method registered in `wsdhash.methods.METHODS` is picked up here with no edit; a
method that needs more than labels (WSDHQ's processed tags) says so in SETTINGS.
"""

import subprocess
import sys

import pytest
from contracts import run_loss_test, run_method_test

from wsdhash.data.builtin import generate_builtin
from wsdhash.methods import METHODS

SIZES = (320, 30, 80)  # WSDHQ's 256-codeword k-means needs more than 256 training items


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    data_dir, tag_dir = root / "builtin", root / "tags"
    train, query, database = SIZES
    generate_builtin(
        data_dir, image_size=32, num_train=train, num_query=query, num_database=database
    )
    return data_dir, tag_dir


def _tags(data_dir, tag_dir):
    if not tag_dir.exists():
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "wsdhash.tags",
                f"--vocab={data_dir / 'tag_vocab.txt'}",
                f"--tag_matrix={data_dir / 'train_tag.txt'}",
                "--vectors=train",
                "--w2v_dim=24",
                "--w2v_epochs=5",
                f"--output_dir={tag_dir}",
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    return str(tag_dir)


# What a method needs beyond the contract's defaults (a callable of the fixture).
SETTINGS = {
    "wsdhq": lambda data_dir, tag_dir: dict(
        supervision="tags",
        tag_dir=_tags(data_dir, tag_dir),
        head="tanh",
        method_options={"quantization_weight": 0.1, "quantizer_update_every": 2},
    ),
    # Two outer iterations of 2 steps in 4 (V is updated at steps 2 and 4).
    "adsh": lambda *_: dict(
        head="tanh",
        method_options={
            "num_samples": 32,
            "epochs_per_iteration": 1,
            "gamma": 200.0,
            "soft_constraint": "sample",
        },
    ),
}


@pytest.mark.parametrize("method", METHODS.names())
def test_method_contract(method, builtin, tmp_path):
    data_dir, tag_dir = builtin
    extra = SETTINGS.get(method, lambda *_: {})(data_dir, tag_dir)
    metrics = run_method_test(method, tmp_path, data_dir, sizes=SIZES, **extra)
    assert 0.0 <= metrics["map"] <= 1.0


# Loss keyword arguments for the loss contract (tiny tag embeddings for WSDHQ).
LOSS_ARGUMENTS = {
    "adsh": lambda: {"num_database_items": 10},
    "wsdhq": lambda: {
        "tag_embeddings": [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]],
        "num_train_examples": 10,
    },
}


@pytest.mark.parametrize("method", METHODS.names())
def test_loss_contract(method):
    kwargs = LOSS_ARGUMENTS.get(method, dict)()
    width = len(kwargs["tag_embeddings"][0]) if "tag_embeddings" in kwargs else None
    run_loss_test(METHODS.get(method).loss_class, output_dim=width, **kwargs)


@pytest.mark.parametrize("method", METHODS.names())
def test_loss_config_names_every_constructor_argument(method):
    # get_config comes from HashingLoss and the layer's `hyperparameters`: a constructor
    # argument missing there would silently take its default in from_config.
    import inspect

    from wsdhash.losses.base import HashingLoss

    loss_class = METHODS.get(method).loss_class
    assert issubclass(loss_class, HashingLoss)
    parameters = inspect.signature(loss_class.__init__).parameters
    arguments = {
        name for name, p in parameters.items() if name != "self" and p.kind is not p.VAR_KEYWORD
    }
    assert arguments == {"bits", "num_classes", "seed", *loss_class.hyperparameters}
