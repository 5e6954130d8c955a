"""CSQ (Yuan et al., CVPR 2020) as a binary-code method: its loss
(wsdhash/losses/csq.py) and its command-line options; everything else is
`BinaryHashMethod`'s."""

from __future__ import annotations

from wsdhash.methods.base import METHODS, BinaryHashMethod, Option


@METHODS.register("csq")
class CSQ(BinaryHashMethod):
    name = "csq"
    loss_path = "wsdhash.losses.csq:CSQLoss"
    options = (
        Option(
            "csq_quantization_weight",
            "quantization_weight",
            "float",
            1e-4,
            "CSQ quantization weight lambda.",
        ),
        Option(
            "csq_center_method",
            "center_method",
            "enum",
            "auto",
            "CSQ hash centres: auto (Hadamard when K is a power of 2 and C <= 2K) or random.",
            choices=("auto", "random"),
        ),
        Option(
            "csq_apply_tanh",
            "apply_tanh",
            "bool",
            True,
            "CSQ: apply tanh to the model output (false: the head already ends in tanh).",
        ),
    )
