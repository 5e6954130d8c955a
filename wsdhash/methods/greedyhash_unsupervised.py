"""GreedyHash-unsupervised (Su et al., NeurIPS 2018, the authors' unsupervised script) as
a binary-code method: its loss (wsdhash/losses/greedyhash_unsupervised.py) compares the
sign codes' pair similarities with the backbone features', so the trainer passes it the
features of the global batch. Labels serve only evaluation."""

from __future__ import annotations

from wsdhash.methods.base import METHODS, BinaryHashMethod, Option


@METHODS.register("greedyhash_unsupervised")
class GreedyHashUnsupervised(BinaryHashMethod):
    name = "greedyhash_unsupervised"
    loss_path = "wsdhash.losses.greedyhash_unsupervised:GreedyHashUnsupervisedLoss"
    uses_backbone_features = True
    options = (
        Option(
            "greedyhash_unsupervised_alpha",
            "alpha",
            "float",
            0.1,
            "GreedyHash-unsupervised cubic-penalty weight alpha (the authors: 0.1).",
        ),
        Option(
            "greedyhash_unsupervised_center_features",
            "center_features",
            "bool",
            False,
            "Match the cosines of the backbone features minus the batch's mean feature "
            "(for non-negative pooled features, e.g. MobileNet's; the authors': off).",
        ),
    )
