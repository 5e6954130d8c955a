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
import tensorflow as tf

from wsdhash.models import weights as weights_lib
from wsdhash.models.backbone_registry import BACKBONES, own_backbone

FEATURE_DIM = 512
STAGE_WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = (2, 2, 2, 2)
# PyTorch BatchNorm2d defaults: eps 1e-5 and momentum 0.1 for the *new* batch statistic,
# which is Keras' momentum 0.9 for the *old* moving average.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="wsdhash")
class BatchNormalization(keras.layers.BatchNormalization):
    """Keras' `BatchNormalization`, computed by TensorFlow's fused kernel where it can be.

    Keras 3 computes batch normalisation from elementwise ops (moments, then
    `tf.nn.batch_normalization`), forward and backward; TensorFlow's `FusedBatchNormV3`
    (oneDNN's batch normalisation on the CPU) does the same in one pass each way
    (issue 15: ResNet-18's training step). This layer computes the same function with
    the same variables (`gamma`, `beta`, `moving_mean`, `moving_variance`) and the same
    moving-average update, with the *biased* batch variance as Keras does (the fused
    kernel returns the unbiased one; it is scaled back by (n - 1) / n). Results equal
    Keras' layer up to float32 rounding (tests/models/test_resnet18_layout.py).

    It falls back to Keras' computation where the fused kernel does not apply: another
    backend, an input that is not 4-D float32 normalised over its last axis, a mask,
    `synchronized=True` (statistics over all replicas, set by
    `wsdhash.models.assembly.build_model`), batch renormalisation, or `scale`/`center`
    off.

    The class is named `BatchNormalization` on purpose: Keras names a layer's entries in
    a `.weights.h5` file after its class, so files written with Keras' own layer load
    (and the other way round). It is serialized in `.keras` files as
    `wsdhash>BatchNormalization`.
    """

    def _fusable(self, inputs, mask) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.synchronized
            and not self.renorm
            and self.scale
            and self.center
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and keras.backend.standardize_dtype(inputs.dtype) == "float32"
            and self.compute_dtype == "float32"
            and self.variable_dtype == "float32"
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        empty = tf.constant([], tf.float32)
        if training and self.trainable:
            outputs, mean, variance = tf.raw_ops.FusedBatchNormV3(
                x=inputs,
                scale=self.gamma,
                offset=self.beta,
                mean=empty,
                variance=empty,
                epsilon=self.epsilon,
                data_format="NHWC",
                is_training=True,
            )[:3]
            # The kernel's variance is the unbiased one (times n / (n - 1)); Keras
            # averages the biased one. For n = 1 both are 0.
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)
            variance = variance * ((count - 1.0) / tf.maximum(count, 1.0))
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
            return outputs
        return tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=self.gamma,
            offset=self.beta,
            mean=self.moving_mean,
            variance=self.moving_variance,
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=False,
        )[0]


# Builds the layout before issue 15 (Keras' BatchNormalization; ZeroPadding2D + "valid"
# for stride-1 convolutions too): the reference of tests/models/test_resnet18_layout.py and of
# `bench/train_speed.py --resnet18_keras_layers`. The same variables either way.
_FORMER_LAYOUT = False


def resnet18(*, dropout: float | None = None, seed: int = 0) -> keras.Model:
    """torchvision ResNet-18 up to global average pooling.

    Convolutions pad symmetrically, as PyTorch does: stride-1 ones with "same" padding,
    strided ones explicitly (ZeroPadding2D + "valid"), because Keras' "same" padding of
    a stride-2 convolution on an even input pads only at the bottom and right, unlike
    PyTorch, and pretrained weights would see shifted maps. Batch normalisation uses
    TensorFlow's fused kernel (this module's `BatchNormalization`). Inputs are
    expected normalised with `torch_imagenet` (or `torch_cifar10` for the DNNH
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
        padding = "valid"
        if size > 1 and strides == 1 and not _FORMER_LAYOUT:
            # At stride 1 "same" pads size // 2 on every side, as PyTorch does, in the
            # convolution itself. A no-op layer stands where the ZeroPadding2D was:
            # `tf.train.Checkpoint` numbers a functional model's layers, so checkpoints
            # written before restore only if the layer list keeps its length and order.
            x = keras.layers.Identity(name=f"{name}_pad")(x)
            padding = "same"
        elif size > 1:
            x = keras.layers.ZeroPadding2D(size // 2, name=f"{name}_pad")(x)
        return keras.layers.Conv2D(
            filters,
            size,
            strides=strides,
            padding=padding,
            use_bias=False,
            kernel_initializer=keras.initializers.VarianceScaling(
                2.0, "fan_out", "untruncated_normal", seed=generator
            ),
            name=name,
        )(x)

    def batch_norm(x, name):
        layer = keras.layers.BatchNormalization if _FORMER_LAYOUT else BatchNormalization
        return layer(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)(x)

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


BACKBONES.register("resnet18")(
    own_backbone(
        resnet18,
        normalization="torch_imagenet",
        image_size=256,
        default_crop_size=224,
        feature_dim=FEATURE_DIM,
        default_dropout=None,
        fixed_input=False,
        converter=convert_torchvision_resnet18,
        imagenet_help=RESNET18_IMAGENET_HELP,
    )
)
