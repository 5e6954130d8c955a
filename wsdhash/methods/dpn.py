"""DPN (Fan et al., IJCAI 2020) as a binary-code method: its loss
(wsdhash/losses/dpn.py) and its command-line options; everything else is
`BinaryHashMethod`'s. The class targets are fixed non-trainable weights of the loss,
drawn from (C, K, seed), so a resumed run keeps them; the authors' adaptive target
update and ternary evaluation are not implemented (the loss module says what differs)."""

from __future__ import annotations

from wsdhash.methods.base import METHODS, BinaryHashMethod, Option


@METHODS.register("dpn")
class DPN(BinaryHashMethod):
    name = "dpn"
    loss_path = "wsdhash.losses.dpn:DPNLoss"
    options = (
        Option("dpn_margin", "margin", "float", 1.0, "DPN polarization margin m."),
        Option(
            "dpn_polarization_weight",
            "polarization_weight",
            "float",
            1.0,
            "DPN weight on the hinge summed over bits (authors 1; DeepHash-pytorch 1/K).",
        ),
        Option(
            "dpn_regularization_weight",
            "regularization_weight",
            "float",
            0.0,
            "DPN weight on mean_k u^2 (the authors' --reg).",
        ),
        Option(
            "dpn_target_method",
            "target_method",
            "enum",
            "bernoulli",
            "DPN class targets: bernoulli (authors) or balanced (DeepHash-pytorch).",
            choices=("bernoulli", "balanced"),
        ),
        Option(
            "dpn_target_probability",
            "target_probability",
            "float",
            0.5,
            "DPN probability (bernoulli) or fraction (balanced) of -1 target bits.",
            maximum=1,
        ),
        Option(
            "dpn_multi_label",
            "multi_label",
            "enum",
            "per_class",
            "DPN multi-label rows: per_class hinge sum (authors) or combined target "
            "(DeepHash-pytorch, CSQ's rule).",
            choices=("per_class", "combined"),
        ),
    )
