"""Optimisers with the conventions of the original PyTorch code.

* Two variable groups: the backbone trains at `lr * backbone_lr_multiplier`, the head
  and the loss's own variables (e.g. HyP2 proxies) at `lr`. Each group has its own
  optimiser, because scaling gradients is not the same as scaling the learning rate
  for Adam.
* Weight decay is PyTorch's coupled L2 (`wd * theta` added to the gradient, so it goes
  through momentum and Adam's moments), not Keras' decoupled `weight_decay`.
* A step schedule multiplies the learning rate by `decay` at each boundary (in steps).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from wsdhash.training.config import OPTIMIZERS, OptimizerConfig  # noqa: F401 (re-export)


def learning_rate_schedule(config: OptimizerConfig, multiplier: float = 1.0):
    base = config.learning_rate * multiplier
    if not config.boundaries:
        return base
    values = [base * config.decay**i for i in range(len(config.boundaries) + 1)]
    # Keras switches when iterations > boundary; `boundary - 1` makes update number
    # `boundary` the first with the decayed rate (PyTorch StepLR semantics).
    boundaries = [boundary - 1 for boundary in config.boundaries]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def _make(config: OptimizerConfig, multiplier: float, name: str) -> keras.optimizers.Optimizer:
    schedule = learning_rate_schedule(config, multiplier)
    if config.name == "sgd":
        return keras.optimizers.SGD(schedule, momentum=config.momentum, name=name)
    return keras.optimizers.Adam(
        schedule, beta_1=config.beta_1, beta_2=config.beta_2, epsilon=config.epsilon, name=name
    )


class GroupedOptimizer:
    """One optimiser per variable group, applied together with coupled weight decay."""

    def __init__(
        self,
        config: OptimizerConfig,
        backbone_variables: Sequence[tf.Variable],
        head_variables: Sequence[tf.Variable],
    ):
        self.config = config
        self.groups = []
        for name, variables, multiplier in (
            ("backbone", list(backbone_variables), config.backbone_lr_multiplier),
            ("head", list(head_variables), 1.0),
        ):
            if variables:
                optimizer = _make(config, multiplier, f"{name}_optimizer")
                optimizer.build(variables)  # Slots exist before a checkpoint is restored.
                self.groups.append((name, optimizer, variables))

    @property
    def variables(self) -> list[tf.Variable]:
        return [v for _, _, variables in self.groups for v in variables]

    @property
    def optimizers(self) -> dict[str, keras.optimizers.Optimizer]:
        return {name: optimizer for name, optimizer, _ in self.groups}

    def learning_rates(self, step: int) -> dict[str, float]:
        """The learning rate of each group at `step`, for logging."""
        return {
            name: self.config.learning_rate_at(step, multiplier)
            for name, multiplier in (
                ("backbone", self.config.backbone_lr_multiplier),
                ("head", 1.0),
            )
            if name in self.optimizers
        }

    def apply(self, gradients: Sequence[tf.Tensor]) -> None:
        """Applies gradients given in the order of `variables`."""
        position = 0
        for _, optimizer, variables in self.groups:
            grads = list(gradients[position : position + len(variables)])
            position += len(variables)
            if self.config.weight_decay:
                grads = [
                    g + self.config.weight_decay * tf.cast(v, g.dtype) if g is not None else g
                    for g, v in zip(grads, variables)
                ]
            optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
