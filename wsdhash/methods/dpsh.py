"""DPSH (Li et al., IJCAI 2016) as a binary-code method: its loss
(wsdhash/losses/dpsh.py) and its command-line options; everything else is
`BinaryHashMethod`'s.

The authors compare each batch with a memory bank of all N training codes; wsdhash
compares it with the codes of the global batch (the loss module explains why and what
differs), so this method needs no per-example indices and no state between steps."""

from __future__ import annotations

from wsdhash.methods.base import METHODS, BinaryHashMethod, Option


@METHODS.register("dpsh")
class DPSH(BinaryHashMethod):
    name = "dpsh"
    loss_path = "wsdhash.losses.dpsh:DPSHLoss"
    options = (
        Option(
            "dpsh_quantization_weight",
            "quantization_weight",
            "float",
            0.01,
            "DPSH eta on sum_k (u - sign u)^2 per example (the authors' lambda / N: "
            "50 / 5000 on CIFAR-10).",
        ),
    )
