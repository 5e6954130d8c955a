"""BiHalf (Li and van Gemert, AAAI 2021) as a binary-code method: unsupervised, its loss
(wsdhash/losses/bihalf.py) compares the bi-half codes' pair similarities with the
backbone features', so the trainer passes it the features of the global batch. Test-time
codes are sign(u), as every binary method's; labels serve only evaluation."""

from __future__ import annotations

from wsdhash.methods.base import METHODS, BinaryHashMethod, Option


@METHODS.register("bihalf")
class BiHalf(BinaryHashMethod):
    name = "bihalf"
    loss_path = "wsdhash.losses.bihalf:BiHalfLoss"
    uses_backbone_features = True
    options = (
        Option(
            "bihalf_gamma",
            "gamma",
            "float",
            6.0,
            "BiHalf gamma: the bi-half layer's backward adds gamma (u - b) / (R K) "
            "(the authors' code: 6).",
        ),
        Option(
            "bihalf_center_features",
            "center_features",
            "bool",
            False,
            "Match the cosines of the backbone features minus the batch's mean feature "
            "(for non-negative pooled features, e.g. MobileNet's; the authors': off).",
        ),
    )
