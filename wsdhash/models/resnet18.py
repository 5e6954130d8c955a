"""ResNet-18 in torchvision's layout, without its classifier: images -> (B, 512).

Layer names mirror torchvision's module names with "." replaced by "_"
(`layer2.0.downsample.1` -> `layer2_0_downsample_1`), so a torchvision `state_dict`
maps onto the Keras variables one to one (`convert_torchvision_resnet18`).

Reference:
    He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016.
    Used with a Linear + tanh hash head by the DNNH re-implementation
    zhongzhh8/Image-Retrieval (docs/methods.md, "Triplet hashing: network, input and
    optimiser").
"""

from __future__ import annotations

import keras
import numpy as np

from wsdhash.models import weights as weights_lib

FEATURE_DIM = 512
STAGE_WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = (2, 2, 2, 2)
# PyTorch BatchNorm2d defaults: eps 1e-5 and momentum 0.1 for the *new* batch statistic,
# which is Keras' momentum 0.9 for the *old* moving average.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def resnet18(*, dropout: float | None = None, seed: int = 0) -> keras.Model:
    """torchvision ResNet-18 up to global average pooling.

    Strided convolutions pad explicitly (ZeroPadding2D + "valid"), because Keras'
    "same" padding of a stride-2 convolution on an even input pads only at the bottom
    and right, unlike PyTorch, and pretrained weights would see shifted maps. Inputs
    are expected normalised with `torch_imagenet` (or `torch_cifar10` for the DNNH
    re-implementation). The input size is free.

    Args:
        dropout: optional dropout rate on the pooled features (None or 0: none).
        seed: seeds the random initialisation (torchvision's: He normal with fan_out
            for convolutions; BN gamma 1, beta 0).

    Returns:
        A functional `keras.Model` named "resnet18" with output (B, 512).
    """
    generator = keras.random.SeedGenerator(seed)

    def conv(x, filters, size, strides, name):
        if size > 1:
            x = keras.layers.ZeroPadding2D(size // 2, name=f"{name}_pad")(x)
        return keras.layers.Conv2D(
            filters,
            size,
            strides=strides,
            padding="valid",
            use_bias=False,
            kernel_initializer=keras.initializers.VarianceScaling(
                2.0, "fan_out", "untruncated_normal", seed=generator
            ),
            name=name,
        )(x)

    def batch_norm(x, name):
        return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(
            x
        )

    def basic_block(x, filters, strides, name):
        shortcut = x
        y = conv(x, filters, 3, strides, f"{name}_conv1")
        y = keras.layers.ReLU(name=f"{name}_relu1")(batch_norm(y, f"{name}_bn1"))
        y = conv(y, filters, 3, 1, f"{name}_conv2")
        y = batch_norm(y, f"{name}_bn2")
        if strides != 1 or x.shape[-1] != filters:
            shortcut = conv(x, filters, 1, strides, f"{name}_downsample_0")
            shortcut = batch_norm(shortcut, f"{name}_downsample_1")
        y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
        return keras.layers.ReLU(name=f"{name}_relu2")(y)

    inputs = keras.Input((None, None, 3), name="image")
    x = conv(inputs, 64, 7, 2, "conv1")  # (B, S/2, S/2, 64)
    x = keras.layers.ReLU(name="relu")(batch_norm(x, "bn1"))
    # PyTorch pads max pooling with -inf; after a ReLU zero padding is the same thing.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, 2, padding="valid", name="maxpool")(x)  # (B, S/4, S/4, 64)
    for stage, (width, blocks) in enumerate(zip(STAGE_WIDTHS, BLOCKS_PER_STAGE), start=1):
        for block in range(blocks):
            strides = 2 if stage > 1 and block == 0 else 1
            x = basic_block(x, width, strides, f"layer{stage}_{block}")
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)  # (B, 512)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    return keras.Model(inputs, x, name="resnet18")


RESNET18_IMAGENET_HELP = (
    "resnet18 has no downloadable Keras ImageNet weights. Convert torchvision's once, on "
    "a machine with PyTorch:\n"
    "    import numpy as np, torchvision\n"
    "    m = torchvision.models.resnet18(weights='IMAGENET1K_V1')\n"
    "    np.savez('resnet18_torchvision.npz', "
    "**{k: v.numpy() for k, v in m.state_dict().items()})\n"
    "and pass --weights=resnet18_torchvision.npz. Expected arrays: the torchvision "
    "state_dict keys conv1.weight, bn1.{weight,bias,running_mean,running_var}, "
    "layer{1-4}.{0,1}.conv{1,2}.weight, layer{1-4}.{0,1}.bn{1,2}.*, "
    "layer{2-4}.0.downsample.0.weight and layer{2-4}.0.downsample.1.*; fc.* (replaced by "
    "the hash head) and *.num_batches_tracked are ignored. On load, conv weights are "
    "transposed OIHW -> HWIO and BN weight/bias/running_mean/running_var become "
    "gamma/beta/moving_mean/moving_variance. Or use --weights=none for a random "
    "initialisation."
)

_BN_PARAMS = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}


def convert_torchvision_resnet18(
    arrays: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Translates a torchvision ResNet `state_dict` (as an npz) into Keras names/layouts.

    Files already in Keras names (`conv1/kernel`, ...) pass through unchanged.

    Args:
        arrays: `{k: v.numpy() for k, v in torchvision_resnet18.state_dict().items()}`.

    Returns:
        (arrays keyed by Keras variable path, torchvision names ignored: `fc.*` and
        `*.num_batches_tracked`).
    """
    if "conv1.weight" not in arrays:
        return dict(arrays), []
    converted, ignored = {}, []
    for name, array in arrays.items():
        module, _, param = name.rpartition(".")
        layer = module.replace(".", "_")
        if module == "fc" or param == "num_batches_tracked":
            ignored.append(name)
        elif param == "weight" and array.ndim == 4:
            converted[f"{layer}/kernel"] = weights_lib.conv_kernel_from_torch(array)
        elif param in _BN_PARAMS:
            converted[f"{layer}/{_BN_PARAMS[param]}"] = array
        else:
            converted[name] = array  # unknown: reported as unexpected by the loader
    return converted, sorted(ignored)
