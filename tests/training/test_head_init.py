"""--head_init (wsdhash/training/head_init.py): the head starts where a linear baseline
ends, so its codes before any step are the baseline's codes."""

import numpy as np
import pytest
from synthetic_features import write_clustered_features

from wsdhash.baselines import BASELINES
from wsdhash.eval import binarize, read_codes_file
from wsdhash.models.heads import HEADS
from wsdhash.training import head_init, trainer
from wsdhash.training.config import (
    DataConfig,
    EvaluationConfig,
    MethodConfig,
    ModelConfig,
    OptimizerConfig,
    SamplerConfig,
    ScheduleConfig,
    TrainConfig,
)


@pytest.mark.parametrize("baseline", ["lsh", "pcah", "itq"])
def test_kernel_and_bias_give_the_baselines_codes_at_unit_scale(baseline):
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(300, 20))) + 1.0  # non-negative, off-centre: bias matters
    kernel, bias = head_init.baseline_head_weights(x, baseline, 8, seed=3)
    outputs = x @ kernel + bias
    expected = BASELINES.get(baseline)(8, seed=3).fit(x).encode(x)
    np.testing.assert_array_equal(binarize(outputs), expected)
    assert np.std(outputs) == pytest.approx(1.0, rel=1e-4)
    assert np.abs(outputs.mean(axis=0)).max() < 1e-4  # centred as the baseline centres


@pytest.mark.parametrize("head", ["linear", "tanh", "linear_bn"])
def test_initialize_head_sets_its_dense_layer(head):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 12)).astype(np.float32) + 2.0
    layer = HEADS.get(head)(6, seed=0)
    layer(x[:2])  # build
    head_init.initialize_head(layer, x, "itq", seed=0)
    expected = BASELINES.get("itq")(6, seed=0).fit(x).encode(x)
    codes = binarize(layer(x, training=False).numpy())
    if head == "linear_bn":  # no bias: the batch norm centres (its initial statistics do not)
        kernel, _ = head_init.baseline_head_weights(x, "itq", 6, seed=0)
        np.testing.assert_allclose(layer.get_layer("hash_fc").kernel.numpy(), kernel, rtol=1e-6)
    else:
        np.testing.assert_array_equal(codes, expected)


def test_errors_name_the_flag():
    x = np.random.default_rng(0).normal(size=(50, 4))
    with pytest.raises(ValueError, match=r"--head_init=nope: not a registered baseline"):
        head_init.baseline_head_weights(x, "nope", 2, seed=0)


def test_a_run_that_never_moves_keeps_itq_codes(tmp_path):
    """With a learning rate of 0 the trained head is its initialisation: the run's codes
    are ITQ's, fitted on the training rows with the run's seed."""
    path = write_clustered_features(tmp_path / "f.h5")
    config = TrainConfig(
        data=DataConfig(dataset="features", data_dir=path),
        model=ModelConfig(backbone="features", head="linear", bits=8, head_init="itq"),
        method=MethodConfig(name="greedyhash_unsupervised", options={"alpha": 0.1}),
        sampler=SamplerConfig(batch_size=32),
        optimizer=OptimizerConfig(name="sgd", learning_rate=0.0, momentum=0.0),
        schedule=ScheduleConfig(steps=3),
        evaluation=EvaluationConfig(validation_size=0),
        seed=5,
        workdir=str(tmp_path / "run"),
    )
    trainer.train(config)
    codes = read_codes_file(tmp_path / "run" / "codes.h5")
    from wsdhash.data import features_file

    train = features_file.read_split(path, "train")
    database = features_file.read_split(path, "database")
    itq = BASELINES.get("itq")(8, seed=5).fit(train.features)
    from wsdhash.eval import pack_codes

    np.testing.assert_array_equal(codes.database.codes, pack_codes(itq.encode(database.features)))
