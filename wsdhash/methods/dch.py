"""DCH (Cao et al., CVPR 2018) as a binary-code method: its loss (wsdhash/losses/dch.py)
and its command-line options; everything else is `BinaryHashMethod`'s. Pairs are taken
within the global batch, as the authors and DeepHash-pytorch do within their batch, so
the method needs no per-example indices and no state between steps. Codes are ranked by
Hamming distance over the whole list (the paper's MAP@H<=2 is not what wsdhash reports;
docs/methods.md, DCH)."""

from __future__ import annotations

from wsdhash.methods.base import METHODS, BinaryHashMethod, Option


@METHODS.register("dch")
class DCH(BinaryHashMethod):
    name = "dch"
    loss_path = "wsdhash.losses.dch:DCHLoss"
    options = (
        Option(
            "dch_gamma",
            "gamma",
            "float",
            20.0,
            "DCH Cauchy scale gamma (the authors and DeepHash-pytorch: 20).",
        ),
        Option(
            "dch_quantization_weight",
            "quantization_weight",
            "float",
            0.1,
            "DCH lambda on the Cauchy quantization loss (DeepHash-pytorch: 0.1).",
        ),
        Option(
            "dch_include_self",
            "include_self",
            "bool",
            False,
            "DCH: count each example's pair with itself (DeepHash-pytorch).",
        ),
    )
