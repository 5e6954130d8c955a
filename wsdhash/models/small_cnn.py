"""A small conv-BN-ReLU network for tests and the CPU demo (about 94k parameters).

Not from any paper: it exists so that the whole training and evaluation path can run
in seconds on 32-64 px images without pretrained weights.
"""

from __future__ import annotations

import keras

from wsdhash.models.backbone_registry import BACKBONES, own_backbone

# Widths of the conv blocks; each block halves the resolution except the last.
BLOCK_WIDTHS = (32, 64, 128)
FEATURE_DIM = BLOCK_WIDTHS[-1]


def small_cnn(*, dropout: float | None = None, seed: int = 0) -> keras.Model:
    """Three 3x3 conv-BN-ReLU blocks with 2x2 max pooling between them, then global
    average pooling: images (B, S, S, 3) in [0, 1] -> features (B, 128), any S >= 4.

    Args:
        dropout: optional dropout rate on the pooled features (None or 0: none).
        seed: seeds the random initialisation.

    Returns:
        A functional `keras.Model` named "small_cnn".
    """
    generator = keras.random.SeedGenerator(seed)
    inputs = keras.Input((None, None, 3), name="image")
    x = inputs
    for index, width in enumerate(BLOCK_WIDTHS, start=1):
        x = keras.layers.Conv2D(
            width,
            3,
            padding="same",
            use_bias=False,  # the BN beta is the bias
            kernel_initializer=keras.initializers.HeNormal(seed=generator),
            name=f"conv{index}",
        )(x)
        x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
        if index < len(BLOCK_WIDTHS):
            x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)  # (B, 128)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    return keras.Model(inputs, x, name="small_cnn")


BACKBONES.register("small_cnn")(
    own_backbone(
        small_cnn,
        normalization="unit_range",
        image_size=64,
        default_crop_size=56,
        feature_dim=FEATURE_DIM,
        default_dropout=None,
        fixed_input=False,
        converter=None,
        imagenet_help=(
            "small_cnn is a test/demo network and has no ImageNet weights; use "
            "--weights=none or a weights file saved from it."
        ),
    )
)
