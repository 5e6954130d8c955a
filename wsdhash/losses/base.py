"""What every method's loss layer shares: its constructor contract and its config.

A loss layer is built by its method as `LossClass(bits=K, num_classes=C, seed=seed,
**hyperparameters)` and called as

    terms = layer(codes, labels, ref_codes=None, ref_labels=None, anchor_offset=0)

returning a dict of (B,) float32 tensors with a "loss" key (wsdhash/losses/__init__.py
explains the references). `call` is written once, here: it checks that the references
come as a pair, packs them with the offset into one `references.References` and calls
the subclass's

    def terms(self, codes, labels, refs, **inputs) -> dict[str, tf.Tensor]

which is all a loss implements (`inputs`: the extra per-batch inputs the loss takes,
e.g. `features`/`ref_features` or `example_index`, as keywords of its `terms`).
`HashingLoss` holds K, C and the seed, runs in float32 whatever
the global mixed-precision policy is, needs no input-dependent build, and serialises
itself: a subclass lists the names of its hyperparameters in `hyperparameters`, stores
each as an attribute of that name, and `get_config` returns them (numpy arrays as
lists), so `from_config(get_config())` rebuilds the same layer. Where the attribute a
layer computes with differs from the argument it was given (HyP2's zeta looked up from
a table when None), `config_attributes` maps the argument to the attribute that keeps
the given value.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
import numpy as np

from wsdhash.losses import references


class HashingLoss(keras.layers.Layer):
    """Base of the loss layers (module doc).

    Args:
        bits: K, the code length (or the model's output width where a method says so).
        num_classes: C, the label (or tag) columns.
        seed: seeds whatever the layer draws at random (codebooks, proxies, ...).
        **kwargs: keras.layers.Layer arguments (name, ...); dtype defaults to float32.
    """

    # Names of the constructor's hyperparameters beyond bits, num_classes and seed.
    hyperparameters: ClassVar[tuple[str, ...]] = ()
    # Argument name -> attribute holding its given value, where the two differ.
    config_attributes: ClassVar[dict[str, str]] = {}

    def __init__(self, bits: int, num_classes: int, seed: int = 0, **kwargs: Any):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.bits = int(bits)
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        # Every weight is created in the constructor; nothing depends on input shapes.
        self.built = True

    def call(self, codes, labels, ref_codes=None, ref_labels=None, anchor_offset=0, **inputs):
        """The loss's terms: a dict of (B,) float32 tensors with a "loss" key.

        Args:
            codes: (B, K) the anchors' relaxed codes (the model's outputs).
            labels: (B, C) 0/1 (or multi-hot) labels, or (B,) class ids.
            ref_codes, ref_labels: the reference set (module doc), both or neither.
            anchor_offset: the anchors' first row in the references.
            **inputs: the loss's extra inputs (keywords of its `terms`).
        """
        refs = references.References(ref_codes, ref_labels, anchor_offset)
        return self.terms(codes, labels, refs, **inputs)

    def terms(self, codes, labels, refs: references.References, **inputs) -> dict:
        """The loss itself (see `call`); every subclass defines it."""
        raise NotImplementedError(f"{type(self).__name__} does not define terms().")

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(bits=self.bits, num_classes=self.num_classes, seed=self.seed)
        for name in self.hyperparameters:
            value = getattr(self, self.config_attributes.get(name, name))
            config[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return config
