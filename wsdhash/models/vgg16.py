"""VGG16 in torchvision's layout, up to fc7 (BiHalf, GreedyHash-unsupervised).

Maps `torch_imagenet`-normalised images to the 4096-d fc7 features, as
`torchvision.models.vgg16(...).features` -> `avgpool` -> `flatten` -> `classifier[:6]`;
the hash head is added on top by `wsdhash.models.heads`. Layer names follow the VGG
paper's numbering: `conv1_1` .. `conv5_3`, `pool1` .. `pool5`, `avgpool`, `fc6`, `fc7`,
so the variable paths are `conv1_1/kernel`, `conv1_1/bias`, ..., `fc7/bias`.

Reference:
    Simonyan, Zisserman. Very Deep Convolutional Networks for Large-Scale Image
    Recognition. ICLR 2015 (configuration D); torchvision.models.vgg16.
"""

from __future__ import annotations

import keras
import numpy as np

from wsdhash.models import weights as weights_lib
from wsdhash.models.backbone_registry import BACKBONES, own_backbone

FEATURE_DIM = 4096
# Output channels of the 13 convolutions, block by block; a 2x2 max-pool ends each block.
BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# The map that fc6 reads: torchvision's adaptive average pooling makes it 7x7x512 at any
# input size (at 224 px pool5 is already 7x7 and the pooling is the identity).
POOL5_SHAPE = (7, 7, 512)
# Five 2x2 max-pools: below 32 px pool5 would be empty.
MIN_CROP_SIZE = 32


def _torchvision_names() -> dict[str, str]:
    """torchvision module -> Keras layer: `features.{0,2,5,...,28}` -> `conv1_1` ..
    `conv5_3` (ReLUs and max-pools hold no parameters but take indices), and
    `classifier.{0,3}` -> `fc6`, `fc7`."""
    names, index = {}, 0
    for block, widths in enumerate(BLOCKS, start=1):
        for position in range(1, len(widths) + 1):
            names[f"features.{index}"] = f"conv{block}_{position}"
            index += 2  # the conv and its ReLU
        index += 1  # the max-pool
    names["classifier.0"] = "fc6"
    names["classifier.3"] = "fc7"
    return names


# torchvision module -> Keras layer. `classifier.6` is the 1000-way ImageNet classifier,
# which the hash head replaces.
TORCHVISION_VGG16_NAMES = _torchvision_names()
_TORCHVISION_VGG16_IGNORED = ("classifier.6.weight", "classifier.6.bias")


def _torchvision_shapes() -> dict[str, tuple[int, ...]]:
    """torchvision key -> the shape of that array in `vgg16().state_dict()`."""
    shapes, in_channels = {}, 3
    conv_modules = iter(TORCHVISION_VGG16_NAMES)
    for widths in BLOCKS:
        for width in widths:
            module = next(conv_modules)
            shapes[f"{module}.weight"] = (width, in_channels, 3, 3)
            shapes[f"{module}.bias"] = (width,)
            in_channels = width
    fc6_inputs = int(np.prod(POOL5_SHAPE))
    shapes["classifier.0.weight"] = (FEATURE_DIM, fc6_inputs)
    shapes["classifier.0.bias"] = (FEATURE_DIM,)
    shapes["classifier.3.weight"] = (FEATURE_DIM, FEATURE_DIM)
    shapes["classifier.3.bias"] = (FEATURE_DIM,)
    return shapes


TORCHVISION_VGG16_SHAPES = _torchvision_shapes()

TORCHVISION_VGG16_IMAGENET_HELP = (
    "vgg16 has no downloadable Keras ImageNet weights. Convert torchvision's once, on a "
    "machine with PyTorch:\n"
    "    import numpy as np, torchvision\n"
    "    m = torchvision.models.vgg16(weights='IMAGENET1K_V1')\n"
    "    np.savez('vgg16_torchvision.npz', "
    "**{k: v.numpy() for k, v in m.state_dict().items()})\n"
    "and pass --weights=vgg16_torchvision.npz. Expected arrays: "
    "features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.{weight,bias} (conv, OIHW) and "
    "classifier.{0,3}.{weight,bias} (linear, (out, in)); classifier.6.* is ignored. On "
    "load, conv weights are transposed OIHW -> HWIO, linear weights (out, in) -> (in, out), "
    "and the rows of fc6 (classifier.0) are permuted from PyTorch's channel-major (C, H, W) "
    "flatten order to Keras' (H, W, C). Or use --weights=none for a random initialisation."
)


def _dropout_seeds(seed: int) -> list[int]:
    # Two distinct, seed-dependent dropout streams (one per fc layer).
    return [int(s) for s in np.random.SeedSequence([seed, 2]).generate_state(2) % (2**31)]


def vgg16(*, crop_size: int = 224, dropout: float = 0.5, seed: int = 0) -> keras.Model:
    """torchvision VGG16 without its last classifier layer: images -> fc7 (B, 4096).

    `features` (13 3x3 convolutions with padding 1 and ReLU, a 2x2 stride-2 max-pool after
    each of the 5 blocks) -> adaptive average pooling to 7x7 -> flatten -> fc6 -> ReLU ->
    Dropout -> fc7 -> ReLU -> Dropout, i.e. `classifier[:6]` as BiHalf and
    GreedyHash-unsupervised use it (dropout acts in training only).

    At 224 px pool5 is 7x7 and the average pooling is the identity. At other sizes it is
    torchvision's `AdaptiveAvgPool2d((7, 7))`: output bin i averages input rows
    floor(i n / 7) .. ceil((i + 1) n / 7) - 1 of an n-row map, so a larger map (e.g. 8x8
    at 256 px) is averaged in overlapping windows and a smaller one (1x1 at 32 px, 3x3 at
    96 px) is spread over the 7x7 grid, its cells repeated; fc6 always reads
    7 * 7 * 512 = 25088 values and the ImageNet weights load at any size >= 32 px.

    The map is flattened in Keras' (H, W, C) order; `convert_torchvision_vgg16` permutes
    the rows of torchvision's fc6 weight, written for PyTorch's (C, H, W) flatten, to
    match, so the features equal torchvision's. A 3x3 stride-1 convolution with padding 1
    is Keras' "same" padding exactly, and PyTorch's 2x2 stride-2 max-pool (floor mode)
    is Keras' "valid" one.

    Args:
        crop_size: input side, at least 32 px so that pool5 is not empty.
        dropout: dropout rate after fc6 and after fc7.
        seed: seeds the random initialisation and the dropout masks. The initialisation
            is torchvision VGG's own: conv kernels normal with std sqrt(2 / fan_out)
            (kaiming_normal_, mode="fan_out"), linear weights normal with std 0.01,
            biases zero.

    Returns:
        A functional `keras.Model` named "vgg16".

    Raises:
        ValueError: crop_size below 32.
    """
    if crop_size < MIN_CROP_SIZE:
        raise ValueError(
            f"vgg16 needs crop_size >= {MIN_CROP_SIZE} (five 2x2 max-pools); got {crop_size}."
        )
    generator = keras.random.SeedGenerator(seed)

    def conv(filters, name):
        return keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            activation="relu",
            kernel_initializer=keras.initializers.VarianceScaling(
                2.0, "fan_out", "untruncated_normal", seed=generator
            ),
            name=name,
        )

    def dense(name):
        return keras.layers.Dense(
            FEATURE_DIM,
            activation="relu",
            kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01, seed=generator),
            name=name,
        )

    drop6_seed, drop7_seed = _dropout_seeds(seed)
    layers = []
    for block, widths in enumerate(BLOCKS, start=1):
        layers += [conv(width, f"conv{block}_{i}") for i, width in enumerate(widths, start=1)]
        # (B, 112, 112, 64), (56, 56, 128), (28, 28, 256), (14, 14, 512), (7, 7, 512) at 224
        layers.append(keras.layers.MaxPooling2D(2, 2, padding="valid", name=f"pool{block}"))
    layers += [
        keras.layers.AdaptiveAveragePooling2D(POOL5_SHAPE[:2], name="avgpool"),
        keras.layers.Flatten(name="flatten"),  # NHWC order; see convert_torchvision_vgg16
        dense("fc6"),
        keras.layers.Dropout(dropout, seed=drop6_seed, name="drop6"),
        dense("fc7"),
        keras.layers.Dropout(dropout, seed=drop7_seed, name="drop7"),
    ]
    inputs = keras.Input((crop_size, crop_size, 3), name="image")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name="vgg16")


def convert_torchvision_vgg16(
    arrays: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Translates a torchvision VGG16 `state_dict` (as an npz) into Keras names/layouts.

    Files already in Keras names (`conv1_1/kernel`, ...) pass through unchanged; unknown
    keys are kept so that the loader reports them (with the Keras names left missing).

    Args:
        arrays: `{k: v.numpy() for k, v in torchvision.models.vgg16().state_dict().items()}`.

    Returns:
        (arrays keyed by Keras variable path, torchvision names ignored).

    Raises:
        weights.WeightsMismatchError: a torchvision key holds an array of the wrong shape;
            every such key is listed with its shape and the expected one.
    """
    if not any(name.startswith("features.") for name in arrays):
        return dict(arrays), []
    wrong_shapes = [
        f"    {name}: file {tuple(np.shape(array))} vs torchvision vgg16 "
        f"{TORCHVISION_VGG16_SHAPES[name]}"
        for name, array in sorted(arrays.items())
        if name in TORCHVISION_VGG16_SHAPES
        and tuple(np.shape(array)) != TORCHVISION_VGG16_SHAPES[name]
    ]
    if wrong_shapes:
        raise weights_lib.WeightsMismatchError(
            "Not a torchvision VGG16 state_dict: "
            f"{len(wrong_shapes)} shape mismatches:\n" + "\n".join(wrong_shapes)
        )
    converted, ignored = {}, []
    for name, array in arrays.items():
        module, _, param = name.rpartition(".")
        if name in _TORCHVISION_VGG16_IGNORED:
            ignored.append(name)
        elif name not in TORCHVISION_VGG16_SHAPES:
            converted[name] = array
        elif param == "bias":
            converted[f"{TORCHVISION_VGG16_NAMES[module]}/bias"] = array
        elif module.startswith("features."):
            converted[f"{TORCHVISION_VGG16_NAMES[module]}/kernel"] = (
                weights_lib.conv_kernel_from_torch(array)
            )
        elif module == "classifier.0":
            converted["fc6/kernel"] = weights_lib.dense_kernel_after_torch_flatten(
                array, POOL5_SHAPE
            )
        else:
            converted[f"{TORCHVISION_VGG16_NAMES[module]}/kernel"] = (
                weights_lib.dense_kernel_from_torch(array)
            )
    return converted, sorted(ignored)


BACKBONES.register("vgg16")(
    own_backbone(
        vgg16,
        normalization="torch_imagenet",
        image_size=256,
        default_crop_size=224,
        feature_dim=FEATURE_DIM,
        default_dropout=0.5,
        fixed_input=True,
        converter=convert_torchvision_vgg16,
        imagenet_help=TORCHVISION_VGG16_IMAGENET_HELP,
    )
)
