"""The binary-code methods: OrthoHash, HyP2 and the DNNH-style triplet loss.

Each is its loss (wsdhash/losses/) and its command-line options; everything else
(sign codes, Hamming ranking, the codes file, serving) is `BinaryHashMethod`'s.
"""

from __future__ import annotations

from wsdhash.methods.base import METHODS, BinaryHashMethod, Option


@METHODS.register("orthohash")
class OrthoHash(BinaryHashMethod):
    name = "orthohash"
    loss_path = "wsdhash.losses.orthohash:OrthoHashLoss"
    options = (
        Option(
            "orthohash_codebook",
            "codebook_method",
            "enum",
            "B",
            "OrthoHash codebook method.",
            choices=("B", "N", "O"),
        ),
        Option(
            "orthohash_scale",
            "scale",
            "float",
            0.0,
            "OrthoHash logit scale s (0: sqrt(K)).",
            convert=lambda value, flags: value or None,
        ),
        Option("orthohash_margin", "margin", "float", 0.2, "OrthoHash margin m."),
        Option(
            "orthohash_margin_type",
            "margin_type",
            "enum",
            "cos",
            "OrthoHash margin type.",
            choices=("cos", "arc"),
        ),
        Option(
            "orthohash_multiclass", "multiclass", "bool", True, "Multi-label label-smoothing CE."
        ),
        Option(
            "orthohash_quantization_weight",
            "quantization_weight",
            "float",
            0.0,
            "OrthoHash quantization term.",
        ),
    )


@METHODS.register("hyp2")
class HyP2(BinaryHashMethod):
    name = "hyp2"
    loss_path = "wsdhash.losses.hyp2:HyP2Loss"
    options = (
        Option("hyp2_beta", "beta", "float", 0.5, "HyP2 pair-term weight."),
        Option(
            "hyp2_zeta",
            "zeta",
            "float",
            None,
            "HyP2 cosine threshold (default: from the code table).",
            minimum=-1,
            maximum=1,
        ),
    )


@METHODS.register("triplet")
class Triplet(BinaryHashMethod):
    name = "triplet"
    loss_path = "wsdhash.losses.triplet:TripletLoss"
    options = (
        Option(
            "triplet_margin", "margin", "float", None, "Triplet margin (default: the method's)."
        ),
        Option("triplet_dnnh_sigmoid", "dnnh_sigmoid", "bool", False, "Original DNNH [0, 1] form."),
    )
