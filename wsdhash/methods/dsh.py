"""DSH (Liu et al., CVPR 2016) as a binary-code method: its loss
(wsdhash/losses/dsh.py) and its command-line options; everything else is
`BinaryHashMethod`'s. Pairs are taken within the global batch (no memory bank; the loss
module says what differs from DeepHash-pytorch)."""

from __future__ import annotations

from wsdhash.methods.base import METHODS, BinaryHashMethod, Option


@METHODS.register("dsh")
class DSH(BinaryHashMethod):
    name = "dsh"
    loss_path = "wsdhash.losses.dsh:DSHLoss"
    options = (
        Option(
            "dsh_margin",
            "margin",
            "float",
            0.0,
            "DSH contrastive margin m on squared distances; 0 = 2K.",
        ),
        Option(
            "dsh_regularization_weight",
            "regularization_weight",
            "float",
            0.1,
            "DSH alpha on mean_k ||u| - 1| per example (DeepHash-pytorch: 0.1).",
        ),
    )
