"""IDHN (Zhang et al., IEEE TMM 2019) as a binary-code method: its loss
(wsdhash/losses/idhn.py) and its command-line options; everything else is
`BinaryHashMethod`'s. Pairs are taken within the global batch, as in the authors'
TensorFlow code (DeepHash-pytorch's memory bank is not implemented)."""

from __future__ import annotations

from wsdhash.methods.base import METHODS, BinaryHashMethod, Option


@METHODS.register("idhn")
class IDHN(BinaryHashMethod):
    name = "idhn"
    loss_path = "wsdhash.losses.idhn:IDHNLoss"
    options = (
        Option(
            "idhn_beta",
            "beta",
            "float",
            5.0,
            "IDHN theta = (beta / K) u_i . u_j (authors 5; DeepHash-pytorch 0.5 K).",
        ),
        Option(
            "idhn_soft_weight",
            "soft_weight",
            "float",
            0.1,
            "IDHN gamma on the soft-pair squared error.",
        ),
        Option(
            "idhn_quantization_weight",
            "quantization_weight",
            "float",
            0.1,
            "IDHN lambda on mean_k ||u| - 1|.",
        ),
        Option(
            "idhn_soft_scaled",
            "soft_scaled",
            "bool",
            False,
            "IDHN: soft term on theta instead of u_i . u_j (DeepHash-pytorch).",
        ),
        Option(
            "idhn_apply_softsign",
            "apply_softsign",
            "bool",
            True,
            "IDHN: u = softsign(output) (false: the head already ends in softsign).",
        ),
    )
