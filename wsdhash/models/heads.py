"""Hash heads (features -> relaxed codes) and the hashing model (images -> codes).

| head      | layers                                               | used by            |
|-----------|------------------------------------------------------|--------------------|
| linear    | Dense(K)                                             | HyP²               |
| tanh      | Dense(K, W ~ N(0, 0.01²), b = 0) + tanh              | WSDHQ, DNNH        |
| linear_bn | Dense(K, no bias, W ~ N(0, 0.01²)) + BatchNorm       | OrthoHash          |

Each factory is `(bits, *, seed) -> keras.Sequential` named "hash_head".
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from wsdhash.models.spec import BackboneSpec
from wsdhash.registry import Registry

HeadFactory = Callable[..., keras.Sequential]
HEADS: Registry[HeadFactory] = Registry("head")

HEAD_NAME = "hash_head"
# PyTorch BatchNorm1d(momentum=0.1) updates running = 0.9 running + 0.1 batch, which is
# Keras' momentum=0.9; and PyTorch's epsilon 1e-5 (Keras' default is 1e-3).
TORCH_BN_MOMENTUM = 0.9
TORCH_BN_EPSILON = 1e-5


def linear_head(bits: int, *, seed: int = 0) -> keras.Sequential:
    """Dense(K): HyP²'s linear hash layer (no tanh, no BN).

    Args:
        bits: K.
        seed: seeds the Glorot-uniform kernel.

    Returns:
        keras.Sequential features (B, F) -> (B, K).

    Reference:
        Xu et al. HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image
        Retrieval. ACM MM 2022.
    """
    return keras.Sequential(
        [
            keras.layers.Dense(
                bits, kernel_initializer=keras.initializers.GlorotUniform(seed=seed), name="hash_fc"
            )
        ],
        name=HEAD_NAME,
    )


def tanh_head(bits: int, *, seed: int = 0) -> keras.Sequential:
    """Dense(K) + tanh, with WSDHQ's fc8 initialisation W ~ N(0, 0.01²), b = 0.

    Args:
        bits: K (300 for WSDHQ's embedding, the code length for DNNH).
        seed: seeds the kernel.

    Returns:
        keras.Sequential features (B, F) -> (B, K) in (-1, 1).

    Reference:
        Wang et al. Weakly Supervised Deep Hyperspherical Quantization for Image
        Retrieval. AAAI 2021. Lai et al. Simultaneous Feature Learning and Hash Coding
        with Deep Neural Networks. CVPR 2015.
    """
    return keras.Sequential(
        [
            keras.layers.Dense(
                bits,
                kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01, seed=seed),
                name="hash_fc",
            ),
            keras.layers.Activation("tanh", name="hash_tanh"),
        ],
        name=HEAD_NAME,
    )


def linear_bn_head(bits: int, *, seed: int = 0) -> keras.Sequential:
    """OrthoHash's latent layer: Dense(K, no bias, W ~ N(0, 0.01²)) + BatchNorm(K).

    The BN uses PyTorch's statistics settings (momentum 0.1 in PyTorch terms, epsilon
    1e-5); at test time the codes are sign(v) with the moving statistics.

    Args:
        bits: K.
        seed: seeds the kernel.

    Returns:
        keras.Sequential features (B, F) -> continuous codes v (B, K).

    Reference:
        Hoe et al. One Loss for All: Deep Hashing with a Single Cosine Similarity based
        Learning Objective. NeurIPS 2021.
    """
    return keras.Sequential(
        [
            keras.layers.Dense(
                bits,
                use_bias=False,  # BN's beta is the bias
                kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01, seed=seed),
                name="hash_fc",
            ),
            keras.layers.BatchNormalization(
                momentum=TORCH_BN_MOMENTUM, epsilon=TORCH_BN_EPSILON, name="hash_bn"
            ),
        ],
        name=HEAD_NAME,
    )


HEADS.register("linear")(linear_head)
HEADS.register("tanh")(tanh_head)
HEADS.register("linear_bn")(linear_bn_head)


# -----------------------------------------------------------------------------
# The hashing model
# -----------------------------------------------------------------------------


def with_hidden_layer(
    head: keras.Sequential, units: int, dropout: float, *, seed: int = 0
) -> keras.Sequential:
    """`head` behind Dense(units, ReLU, Glorot-uniform) and Dropout(dropout): the
    fully connected layer an end-to-end network fine-tunes before its hash layer (AlexNet's
    fc7), for a head on features extracted once (`--head_hidden`). Still one layer named
    "hash_head"; dropout acts only while training."""
    layers = [
        keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            name="hidden_fc",
        )
    ]
    if dropout:
        layers.append(keras.layers.Dropout(dropout, seed=seed, name="hidden_dropout"))
    return keras.Sequential(layers + list(head.layers), name=HEAD_NAME)


def build_hashing_model(
    backbone: BackboneSpec,
    head: str,
    bits: int,
    *,
    seed: int = 0,
    hidden: int = 0,
    dropout: float = 0.0,
) -> keras.Model:
    """Backbone + hash head: normalised images (B, S, S, 3) -> relaxed codes (B, K).

    The returned functional model has exactly two layers with variables, reachable as
    attributes so that the trainer can treat them separately (e.g. OrthoHash's 0.1x
    learning rate for the backbone):

        model.backbone.trainable_variables  # pretrained part
        model.head.trainable_variables      # hash layer(s)

    The two lists are disjoint and together are `model.trainable_variables`. The
    attributes do not survive `keras.saving.load_model`; `split_hashing_model` finds the
    two parts in a reloaded model too.

    Args:
        backbone: from `build_backbone`.
        head: a name in `HEADS`.
        bits: K, the code length.
        seed: seeds the head's initialisation.
        hidden, dropout: a hidden layer of `hidden` units before the head
            (`with_hidden_layer`); 0: none.

    Returns:
        A `keras.Model` named "hashing_model" with `.backbone` and `.head` attributes.
    """
    head_layer = HEADS.get(head)(bits, seed=seed)
    if hidden:
        head_layer = with_hidden_layer(head_layer, hidden, dropout, seed=seed)
    inputs = keras.Input(backbone.model.input_shape[1:], name="image")
    codes = head_layer(backbone.model(inputs))  # (B, K)
    model = keras.Model(inputs, codes, name="hashing_model")
    model.backbone = backbone.model
    model.head = head_layer
    return model


def split_hashing_model(model: keras.Model) -> tuple[keras.Model, keras.Layer]:
    """(backbone, head) of a model from `build_hashing_model`, also after a reload.

    Args:
        model: a hashing model, freshly built or loaded from a `.keras` file.

    Returns:
        The backbone sub-model and the "hash_head" layer.
    """
    head = model.get_layer(HEAD_NAME)
    others = [
        layer
        for layer in model.layers
        if layer is not head and not isinstance(layer, keras.layers.InputLayer)
    ]
    if len(others) != 1:
        names = [layer.name for layer in others]
        raise ValueError(f"Expected one backbone layer besides {HEAD_NAME!r}, found {names}.")
    return others[0], head
