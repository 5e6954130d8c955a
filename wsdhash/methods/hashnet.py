"""HashNet (Cao et al., ICCV 2017) as a binary-code method: its loss
(wsdhash/losses/hashnet.py) and options, and the continuation of beta.

beta (tanh(beta z)) is a non-trainable variable of the loss layer. After training step
t the method assigns the value forward pass t + 1 will use (the authors' schedule,
`HashNetLoss.scale_at`). The assignment happens before the step's checkpoint is
written, so a checkpoint holds the beta of the next step and a resumed run continues
the schedule exactly; a step counter inside the loss would instead advance on every
call (validation, tests) and need cross-replica updates inside the replicated step.
The codes are sign(z) = sign(tanh(beta z)), so beta never changes evaluation."""

from __future__ import annotations

from wsdhash.methods.base import METHODS, BinaryHashMethod, Option


@METHODS.register("hashnet")
class HashNet(BinaryHashMethod):
    name = "hashnet"
    loss_path = "wsdhash.losses.hashnet:HashNetLoss"
    options = (
        Option(
            "hashnet_alpha",
            "alpha",
            "float",
            0.0,
            "HashNet inner-product scale alpha; 0 = 10 / K (the authors' sigmoid_param).",
        ),
        Option(
            "hashnet_class_num",
            "class_num",
            "float",
            0.0,
            "HashNet similar-pair weight: 0 = balanced |S|/|S1|, |S|/|S0| (paper); > 0 = "
            "the authors' fixed weight (ImageNet 100, NUS-WIDE 5, COCO 1).",
        ),
        Option(
            "hashnet_include_self",
            "include_self",
            "bool",
            False,
            "HashNet: count each example's pair with itself (DeepHash-pytorch).",
        ),
        Option(
            "hashnet_step_size",
            "step_size",
            "integer",
            200,
            "HashNet: refresh beta = (1 + gamma t)^power every this many steps.",
            minimum=1,
            maximum=1e9,
        ),
        Option("hashnet_gamma", "gamma", "float", 0.005, "HashNet beta schedule gamma."),
        Option("hashnet_power", "power", "float", 0.5, "HashNet beta schedule power."),
    )

    def after_step(self, step, encode_train, loss) -> None:
        # Forward pass step + 1 uses the value of its own step number (module doc).
        value = loss.scale_at(step + 1)
        if value != float(loss.scale.numpy()):
            loss.scale.assign(value)
