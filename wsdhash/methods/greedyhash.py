"""GreedyHash (Su et al., NeurIPS 2018) as a binary-code method: its loss
(wsdhash/losses/greedyhash.py, which owns the classification layer) and its command-line
options; everything else is `BinaryHashMethod`'s."""

from __future__ import annotations

from wsdhash.methods.base import METHODS, BinaryHashMethod, Option


@METHODS.register("greedyhash")
class GreedyHash(BinaryHashMethod):
    name = "greedyhash"
    loss_path = "wsdhash.losses.greedyhash:GreedyHashLoss"
    options = (
        Option(
            "greedyhash_alpha",
            "alpha",
            "float",
            0.1,
            "GreedyHash cubic-penalty weight alpha (the authors: 0.1 CIFAR-10, 1 ImageNet).",
        ),
        Option(
            "greedyhash_multiclass",
            "multiclass",
            "bool",
            False,
            "GreedyHash: sigmoid BCE per class (multi-label) instead of softmax CE.",
        ),
    )
