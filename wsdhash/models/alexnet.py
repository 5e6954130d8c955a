"""AlexNet in two layouts: CaffeNet (DeepHash / WSDHQ) and torchvision (HyP², OrthoHash).

Both map normalised images to the 4096-d fc7 features; the hash head is added on top by
`wsdhash.models.heads`. Layer names are `conv1`..`conv5`, `fc6`, `fc7` in both, so the
variable paths are `conv1/kernel`, `conv1/bias`, ..., `fc7/bias`.

Reference:
    Krizhevsky, Sutskever, Hinton. ImageNet Classification with Deep Convolutional
    Neural Networks. NeurIPS 2012.
    Jia et al. Caffe: Convolutional Architecture for Fast Feature Embedding, 2014
    (`bvlc_reference_caffenet`, the layout of DeepHash's `alexnet.npy`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from wsdhash.models import weights as weights_lib
from wsdhash.models.backbone_registry import BACKBONES, own_backbone

FEATURE_DIM = 4096
# The map that fc6 reads: 6x6x256 in both layouts (CaffeNet at 227 px, torchvision
# after its adaptive average pooling).
POOL5_SHAPE = (6, 6, 256)


@keras.saving.register_keras_serializable(package="wsdhash")
class LocalResponseNormalization(keras.layers.Layer):
    """Across-channel LRN, `x / (bias + alpha * sum_{|d'-d|<=r} x_d'^2) ** beta`.

    Keras 3 has no LRN layer. The defaults are DeepHash's TensorFlow values; Caffe's
    `alpha = 1e-4` with `local_size = 5` is the same thing, since Caffe divides alpha
    by the window size.

    Args:
        depth_radius: half-width r of the channel window.
        bias: additive constant.
        alpha: scale of the sum of squares.
        beta: exponent.
    """

    def __init__(
        self,
        depth_radius: int = 2,
        bias: float = 1.0,
        alpha: float = 2e-5,
        beta: float = 0.75,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.depth_radius = depth_radius
        self.bias = bias
        self.alpha = alpha
        self.beta = beta

    def call(self, inputs):
        return tf.nn.local_response_normalization(
            inputs,
            depth_radius=self.depth_radius,
            bias=self.bias,
            alpha=self.alpha,
            beta=self.beta,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha, beta=self.beta
        )
        return config


@keras.saving.register_keras_serializable(package="wsdhash")
class Conv2D(keras.layers.Conv2D):
    """Keras' `Conv2D`, with `groups=g` computed as g plain convolutions and a concatenation.

    The same layer as Keras' grouped `Conv2D` (same config, the same `kernel` of shape
    (H, W, C/g, O) and `bias` of shape (O,), so weight files, `.weights.h5` files and
    training checkpoints of either load into the other), computed as DeepHash's
    `tf.split` / `conv2d` / `tf.concat`: group i convolves input channels
    [i C/g, (i+1) C/g) with kernel output channels [i O/g, (i+1) O/g). Keras'
    TensorFlow backend runs a grouped convolution through XLA on the CPU, whose gradient
    is several times slower than g ungrouped convolutions (issue 15: CaffeNet's conv2
    forward+backward took 2.4 s at batch 32 vs 0.6 s for an ungrouped conv2 with twice
    the work). Results equal the grouped layer's up to float32 rounding
    (tests/models/test_alexnet_split_groups.py).

    The class is named `Conv2D` on purpose: Keras names a layer's entries in a
    `.weights.h5` file after its class (`layers/conv2d_1/vars/0`, ...), so this name
    keeps the files written with `keras.layers.Conv2D` loadable. It is serialized in
    `.keras` files as `wsdhash>Conv2D`; files that hold Keras' own grouped `Conv2D`
    still load (as that class).
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1:
            return super().convolution_op(inputs, kernel)
        axis = -1 if self.data_format == "channels_last" else 1
        parts = [
            super(Conv2D, self).convolution_op(x, k)
            for x, k in zip(
                keras.ops.split(inputs, self.groups, axis=axis),
                keras.ops.split(kernel, self.groups, axis=-1),
            )
        ]
        return keras.ops.concatenate(parts, axis=axis)


def _dropout_seeds(seed: int) -> list[int]:
    # Two distinct, seed-dependent dropout streams (one per fc layer).
    return [int(s) for s in np.random.SeedSequence([seed, 1]).generate_state(2) % (2**31)]


# -----------------------------------------------------------------------------
# CaffeNet (DeepHash / WSDHQ)
# -----------------------------------------------------------------------------

CAFFENET_IMAGENET_HELP = (
    "alexnet_caffe has no downloadable Keras ImageNet weights. Use the ImageNet CaffeNet "
    "weights that DeepHash/WSDHQ distribute as `alexnet.npy` (bvlc_reference_caffenet "
    "converted to TensorFlow; a pickled dict {layer: [W (HWIO), b]} for conv1..conv5, "
    "fc6, fc7): pass --weights=/path/to/alexnet.npy with allow_pickle=True, or "
    "--weights=none for a random initialisation."
)


def caffenet(*, crop_size: int = 227, dropout: float = 0.5, seed: int = 0) -> keras.Model:
    """CaffeNet as in WSDHQ's `net.py`: images (B, 227, 227, 3) -> fc7 features (B, 4096).

    Pooling comes before LRN (the CaffeNet order, unlike the original AlexNet), conv2,
    conv4 and conv5 are grouped in two, and dropout follows the ReLU of fc6 and fc7
    (training only). Inputs are expected normalised with `caffe_mean_on_rgb`.

    Args:
        crop_size: input side; fc6 needs a 6x6 pool5 map, which 227 gives.
        dropout: dropout rate after fc6 and fc7.
        seed: seeds the random initialisation and the dropout masks.

    Returns:
        A functional `keras.Model` named "alexnet_caffe".

    Reference:
        Wang et al. Weakly Supervised Deep Hyperspherical Quantization for Image
        Retrieval. AAAI 2021 (docs/methods.md, "WSDHQ: network and input").
    """
    generator = keras.random.SeedGenerator(seed)

    def conv(filters, size, name, *, strides=1, padding="same", groups=1):
        return Conv2D(
            filters,
            size,
            strides=strides,
            padding=padding,
            groups=groups,
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=generator),
            name=name,
        )

    def dense(name):
        return keras.layers.Dense(
            FEATURE_DIM,
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=generator),
            name=name,
        )

    # The grouped layers split the input channels and the kernel's output channels in
    # order, exactly like DeepHash's tf.split/tf.concat, so `alexnet.npy`'s
    # (H, W, C/2, O) kernels load unchanged (checked in
    # tests/models/test_alexnet_layouts.py). They are this module's `Conv2D`, Keras'
    # grouped Conv2D computed as two plain convolutions (faster on the CPU, the same
    # variables and weight-file entries as `keras.layers.Conv2D(groups=2)`).
    drop6_seed, drop7_seed = _dropout_seeds(seed)
    inputs = keras.Input((crop_size, crop_size, 3), name="image")
    x = conv(96, 11, "conv1", strides=4, padding="valid")(inputs)  # (B, 55, 55, 96)
    x = keras.layers.MaxPooling2D(3, 2, padding="valid", name="pool1")(x)  # (B, 27, 27, 96)
    x = LocalResponseNormalization(name="lrn1")(x)
    x = conv(256, 5, "conv2", groups=2)(x)  # (B, 27, 27, 256)
    x = keras.layers.MaxPooling2D(3, 2, padding="valid", name="pool2")(x)  # (B, 13, 13, 256)
    x = LocalResponseNormalization(name="lrn2")(x)
    x = conv(384, 3, "conv3")(x)
    x = conv(384, 3, "conv4", groups=2)(x)
    x = conv(256, 3, "conv5", groups=2)(x)  # (B, 13, 13, 256)
    x = keras.layers.MaxPooling2D(3, 2, padding="valid", name="pool5")(x)  # (B, 6, 6, 256)
    # NHWC flatten, as DeepHash's tf.reshape; the fc6 weights expect this order.
    x = keras.layers.Flatten(name="flatten")(x)
    x = dense("fc6")(x)
    x = keras.layers.Dropout(dropout, seed=drop6_seed, name="drop6")(x)
    x = dense("fc7")(x)
    x = keras.layers.Dropout(dropout, seed=drop7_seed, name="drop7")(x)
    return keras.Model(inputs, x, name="alexnet_caffe")


# Entries of DeepHash/WSDHQ `.npy` files that are not part of the backbone: the 1000-way
# ImageNet classifier (or WSDHQ's own hash layer) and WSDHQ's quantisation codebook.
_CAFFENET_IGNORED_LAYERS = ("fc8", "C")


def convert_deephash_caffenet(
    arrays: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Drops the non-backbone entries (`fc8`, `C`) of a DeepHash/WSDHQ weights file.

    Args:
        arrays: named arrays as read by `weights.read_named_arrays`
            (`conv1/kernel`, `conv1/bias`, ...).

    Returns:
        (the backbone's arrays, names dropped).
    """
    kept, ignored = {}, []
    for name, array in arrays.items():
        if name.split("/")[0] in _CAFFENET_IGNORED_LAYERS:
            ignored.append(name)
        else:
            kept[name] = array
    return kept, sorted(ignored)


# -----------------------------------------------------------------------------
# torchvision AlexNet (HyP², OrthoHash)
# -----------------------------------------------------------------------------

# torchvision module -> Keras layer. `classifier.6` is the 1000-way ImageNet classifier,
# which the hash head replaces.
TORCHVISION_ALEXNET_NAMES = {
    "features.0": "conv1",
    "features.3": "conv2",
    "features.6": "conv3",
    "features.8": "conv4",
    "features.10": "conv5",
    "classifier.1": "fc6",
    "classifier.4": "fc7",
}
_TORCHVISION_ALEXNET_IGNORED = ("classifier.6.weight", "classifier.6.bias")

TORCHVISION_ALEXNET_IMAGENET_HELP = (
    "alexnet has no downloadable Keras ImageNet weights. Convert torchvision's once, on a "
    "machine with PyTorch:\n"
    "    import numpy as np, torchvision\n"
    "    m = torchvision.models.alexnet(weights='IMAGENET1K_V1')\n"
    "    np.savez('alexnet_torchvision.npz', "
    "**{k: v.numpy() for k, v in m.state_dict().items()})\n"
    "and pass --weights=alexnet_torchvision.npz. Expected arrays: "
    "features.{0,3,6,8,10}.{weight,bias} (conv, OIHW) and classifier.{1,4}.{weight,bias} "
    "(linear, (out, in)); classifier.6.* is ignored. On load, conv weights are transposed "
    "OIHW -> HWIO, linear weights (out, in) -> (in, out), and the rows of fc6 "
    "(classifier.1) are permuted from PyTorch's channel-major (C, H, W) flatten order to "
    "Keras' (H, W, C). Or use --weights=none for a random initialisation."
)


def torchvision_alexnet(
    *, crop_size: int = 224, dropout: float = 0.5, seed: int = 0
) -> keras.Model:
    """torchvision AlexNet without its last classifier layer: images -> fc7 (B, 4096).

    `features` -> adaptive average pooling to 6x6 -> flatten -> Dropout -> fc6 -> ReLU
    -> Dropout -> fc7 -> ReLU, i.e. `classifier[:6]` as OrthoHash uses it. HyP² skips the
    pooling; at 224 px the map is already 6x6 and the pooling is the identity.
    PyTorch's symmetric conv padding is made explicit with ZeroPadding2D: Keras' "same"
    pads strided convolutions asymmetrically and would shift every feature map.
    Inputs are expected normalised with `torch_imagenet`.

    Args:
        crop_size: input side (at least 63 px so that pool5 is not empty).
        dropout: dropout rate before fc6 and fc7.
        seed: seeds the random initialisation and the dropout masks. The kernels follow
            PyTorch's default (uniform in +-1/sqrt(fan_in)); biases start at zero.

    Returns:
        A functional `keras.Model` named "alexnet".

    Reference:
        torchvision.models.alexnet; Krizhevsky, "One weird trick for parallelizing
        convolutional neural networks", 2014 (the 64-192-384-256-256 variant).
    """
    generator = keras.random.SeedGenerator(seed)

    def torch_default():
        # PyTorch's kaiming_uniform_(a=sqrt(5)) is uniform in +-sqrt(1 / fan_in).
        return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform", seed=generator)

    def conv(filters, size, name, *, strides=1, pad):
        return [
            keras.layers.ZeroPadding2D(pad, name=f"{name}_pad"),
            keras.layers.Conv2D(
                filters,
                size,
                strides=strides,
                padding="valid",
                activation="relu",
                kernel_initializer=torch_default(),
                name=name,
            ),
        ]

    def dense(name):
        return keras.layers.Dense(
            FEATURE_DIM, activation="relu", kernel_initializer=torch_default(), name=name
        )

    def pool(name):
        return keras.layers.MaxPooling2D(3, 2, padding="valid", name=name)

    drop6_seed, drop7_seed = _dropout_seeds(seed)
    layers = [
        *conv(64, 11, "conv1", strides=4, pad=2),  # (B, 55, 55, 64) at 224
        pool("pool1"),  # (B, 27, 27, 64)
        *conv(192, 5, "conv2", pad=2),
        pool("pool2"),  # (B, 13, 13, 192)
        *conv(384, 3, "conv3", pad=1),
        *conv(256, 3, "conv4", pad=1),
        *conv(256, 3, "conv5", pad=1),
        pool("pool5"),  # (B, 6, 6, 256) at 224
        keras.layers.AdaptiveAveragePooling2D(POOL5_SHAPE[:2], name="avgpool"),
        keras.layers.Flatten(name="flatten"),  # NHWC order; see convert_torchvision_alexnet
        keras.layers.Dropout(dropout, seed=drop6_seed, name="drop6"),
        dense("fc6"),
        keras.layers.Dropout(dropout, seed=drop7_seed, name="drop7"),
        dense("fc7"),
    ]
    inputs = keras.Input((crop_size, crop_size, 3), name="image")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name="alexnet")


def convert_torchvision_alexnet(
    arrays: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Translates a torchvision AlexNet `state_dict` (as an npz) into Keras names/layouts.

    Files already in Keras names (`conv1/kernel`, ...) pass through unchanged; unknown
    keys are kept so that the loader reports them.

    Args:
        arrays: `{k: v.numpy() for k, v in torchvision_alexnet.state_dict().items()}`.

    Returns:
        (arrays keyed by Keras variable path, torchvision names ignored).
    """
    if not any(name.startswith("features.") for name in arrays):
        return dict(arrays), []
    converted, ignored = {}, []
    for name, array in arrays.items():
        module, _, param = name.rpartition(".")
        if name in _TORCHVISION_ALEXNET_IGNORED:
            ignored.append(name)
        elif module not in TORCHVISION_ALEXNET_NAMES or param not in ("weight", "bias"):
            converted[name] = array
        elif param == "bias":
            converted[f"{TORCHVISION_ALEXNET_NAMES[module]}/bias"] = array
        elif array.ndim == 4:
            converted[f"{TORCHVISION_ALEXNET_NAMES[module]}/kernel"] = (
                weights_lib.conv_kernel_from_torch(array)
            )
        elif (
            module == "classifier.1" and array.ndim == 2 and array.shape[1] == np.prod(POOL5_SHAPE)
        ):
            converted["fc6/kernel"] = weights_lib.dense_kernel_after_torch_flatten(
                array, POOL5_SHAPE
            )
        elif array.ndim == 2:
            converted[f"{TORCHVISION_ALEXNET_NAMES[module]}/kernel"] = (
                weights_lib.dense_kernel_from_torch(array)
            )
        else:
            # A wrongly shaped array keeps its name so the shape check reports it.
            converted[f"{TORCHVISION_ALEXNET_NAMES[module]}/kernel"] = array
    return converted, sorted(ignored)


BACKBONES.register("alexnet_caffe")(
    own_backbone(
        caffenet,
        normalization="caffe_mean_on_rgb",
        image_size=256,
        default_crop_size=227,
        feature_dim=FEATURE_DIM,
        default_dropout=0.5,
        fixed_input=True,
        converter=convert_deephash_caffenet,
        imagenet_help=CAFFENET_IMAGENET_HELP,
    )
)

BACKBONES.register("alexnet")(
    own_backbone(
        torchvision_alexnet,
        normalization="torch_imagenet",
        image_size=256,
        default_crop_size=224,
        feature_dim=FEATURE_DIM,
        default_dropout=0.5,
        fixed_input=True,
        converter=convert_torchvision_alexnet,
        imagenet_help=TORCHVISION_ALEXNET_IMAGENET_HELP,
    )
)
