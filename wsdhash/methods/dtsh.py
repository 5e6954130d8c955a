"""DTSH (Wang, Shi and Kitani, ACCV 2016) as a binary-code method: its loss
(wsdhash/losses/dtsh.py) and its command-line options; everything else is
`BinaryHashMethod`'s. Triplets are formed over the global batch (anchors local,
positives and negatives from every replica's codes), not from the authors' memory bank
of all training codes (the loss module says what differs), so the method needs no
per-example indices and no state between steps."""

from __future__ import annotations

from wsdhash.methods.base import METHODS, BinaryHashMethod, Option


@METHODS.register("dtsh")
class DTSH(BinaryHashMethod):
    name = "dtsh"
    loss_path = "wsdhash.losses.dtsh:DTSHLoss"
    options = (
        Option(
            "dtsh_margin",
            "margin",
            "float",
            0.0,
            "DTSH triplet margin alpha; 0 = K / 2 (the authors').",
        ),
        Option(
            "dtsh_scale",
            "scale",
            "float",
            0.5,
            "DTSH theta = scale * u_i . u_j (paper: 1/2; DeepHash-pytorch: 1).",
        ),
        Option(
            "dtsh_quantization_weight",
            "quantization_weight",
            "float",
            1.0,
            "DTSH lambda on mean_k (u - sign u)^2 per example (DeepHash-pytorch: 1; "
            "the authors' eta = 100 over 22,500 triplets per anchor: K / 225).",
        ),
        Option(
            "dtsh_include_self",
            "include_self",
            "bool",
            False,
            "DTSH: each anchor is one of its own positives (DeepHash-pytorch).",
        ),
    )
