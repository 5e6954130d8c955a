"""Grouped optimisers: coupled L2 weight decay, backbone lr multiplier, step schedule."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wsdhash.training.optimization import GroupedOptimizer, OptimizerConfig


def _run(config, steps, gradient):
    backbone = keras.Variable(np.array([1.0, -2.0], np.float32))
    head = keras.Variable(np.array([0.5], np.float32))
    optimizer = GroupedOptimizer(config, [backbone], [head])
    for _ in range(steps):
        optimizer.apply([tf.constant(gradient[:2]), tf.constant(gradient[2:])])
    return backbone.numpy(), head.numpy()


def test_sgd_momentum_with_coupled_weight_decay_and_multiplier_by_hand():
    config = OptimizerConfig(
        name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=0.5, backbone_lr_multiplier=0.1
    )
    gradient = np.array([0.2, 0.4, -1.0], np.float32)
    backbone, head = _run(config, 2, gradient)
    # PyTorch SGD: d = g + wd * p; buf = m * buf + d; p -= lr * buf (Keras: v = m v - lr d).
    expected = []
    for p0, g, lr in ((1.0, 0.2, 0.01), (-2.0, 0.4, 0.01), (0.5, -1.0, 0.1)):
        p, velocity = p0, 0.0
        for _ in range(2):
            velocity = 0.9 * velocity - lr * (g + 0.5 * p)
            p = p + velocity
        expected.append(p)
    np.testing.assert_allclose(np.concatenate([backbone, head]), expected, rtol=1e-6)


def test_adam_groups_use_their_own_learning_rate():
    config = OptimizerConfig(name="adam", learning_rate=0.1, backbone_lr_multiplier=0.01)
    backbone, head = _run(config, 1, np.array([3.0, -5.0, 7.0], np.float32))
    # Adam's first step moves every weight by about lr * sign(g), whatever |g| is: scaling
    # gradients would not have changed the step, a learning-rate multiplier does.
    np.testing.assert_allclose(backbone, [1.0 - 0.001, -2.0 + 0.001], rtol=1e-4)
    np.testing.assert_allclose(head, [0.5 - 0.1], rtol=1e-4)


def test_step_schedule():
    config = OptimizerConfig(learning_rate=1.0, boundaries=(2, 4), decay=0.5)
    assert [config.learning_rate_at(s) for s in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    backbone, head = _run(
        OptimizerConfig(name="sgd", learning_rate=1.0, momentum=0.0, boundaries=(2,), decay=0.5),
        3,
        np.array([1.0, 1.0, 1.0], np.float32),
    )
    # Updates 0 and 1 at lr 1, update 2 at lr 0.5 (StepLR(step_size=2) semantics).
    np.testing.assert_allclose(head, [0.5 - 1.0 - 1.0 - 0.5])
    with pytest.raises(ValueError, match="boundaries must increase"):
        OptimizerConfig(boundaries=(5, 2))
    with pytest.raises(ValueError, match="Unknown optimizer"):
        OptimizerConfig(name="rmsprop")
