"""DFH (Li et al., BMVC 2019) as a binary-code method: its loss
(wsdhash/losses/dfh.py) and its command-line options; everything else is
`BinaryHashMethod`'s.

The authors and DeepHash-pytorch keep a memory bank of every training code and the
class centres between steps; wsdhash compares each batch with the codes of the global
batch and fits the centres on the global batch at every call (the loss module explains
why and what differs), so this method needs no per-example indices and no state between
steps."""

from __future__ import annotations

from wsdhash.methods.base import METHODS, BinaryHashMethod, Option


@METHODS.register("dfh")
class DFH(BinaryHashMethod):
    name = "dfh"
    loss_path = "wsdhash.losses.dfh:DFHLoss"
    options = (
        Option(
            "dfh_margin",
            "margin",
            "float",
            3.0,
            "DFH pair margin m (DeepHash-pytorch 3; the authors' Main.py 0).",
        ),
        Option(
            "dfh_push",
            "push",
            "float",
            0.1,
            "DFH mu: weight of the label centres in b = sign(mu C y + u) (authors 1).",
        ),
        Option(
            "dfh_quantization_weight",
            "quantization_weight",
            "float",
            0.5,
            "DFH eta on mean_k (b - u)^2.",
        ),
        Option(
            "dfh_inter_weight",
            "inter_weight",
            "float",
            1.0,
            "DFH vul: inter-class term of the centre fit.",
        ),
        Option(
            "dfh_center_quantization_weight",
            "center_quantization_weight",
            "float",
            1.0,
            "DFH nta: quantization term of the centre fit.",
        ),
        Option(
            "dfh_normalize_labels",
            "normalize_labels",
            "bool",
            False,
            "DFH: divide label rows by their label count (the authors' Main.py).",
        ),
    )
