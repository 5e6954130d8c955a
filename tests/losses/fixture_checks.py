"""What the loss tests against PyTorch fixtures share: the fixture inputs, a value and
gradient check to float32 rounding, and the checks of the unsupervised
feature-similarity losses (BiHalf, GreedyHash-unsupervised).

    check_torch_fixture(layer, codes, labels, means, gradient, **inputs)
    check_labels_ignored(loss_class)                  # BiHalf, GreedyHash-unsupervised
    check_features_required(loss_class, name)         # the same two
    feature_loss_with_references(layer, rows)         # their numpy-loop case
    slow_pair_similarity(binary, features, offset, count)

Each test file's docstring gives the command that produced its fixture values; the
inputs those commands ran on are here, because two files share them. pytest puts this
folder on sys.path (it has no __init__.py), so the tests import `fixture_checks`.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

# ---------------------------------------------------------------------------------------
# Fixture inputs
# ---------------------------------------------------------------------------------------

# DCH and DTSH (swuxyj/DeepHash-pytorch, /tmp/fixtures_dch_dtsh/make_fixtures.py):
# two batches of 4 outputs (K = 4) with their 3-class labels, by name.
Z = np.array(
    [
        [0.5, -1.0, 0.25, 2.0],
        [-0.75, 0.5, 1.5, -0.25],
        [1.25, 0.75, -0.5, 0.5],
        [0.1, -0.3, -1.2, 0.8],
    ],
    np.float32,
)
Y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]], np.float32)
Z2 = np.array(
    [[0.9, 0.2, -0.4, -1.1], [0.3, 0.8, 0.6, -0.2], [-0.5, -0.7, 0.1, 0.4], [1.0, -0.6, -0.9, 0.3]],
    np.float32,
)
Y2 = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 1, 1]], np.float32)
DEEPHASH_INPUTS = {"Z": (Z, Y), "Z2": (Z2, Y2)}

# BiHalf and GreedyHash-unsupervised (the authors' code,
# /tmp/fixtures_unsupervised/make_fixtures.py): H, 8 x 4 outputs (no zero entry:
# torch.sign(0) = 0 where wsdhash gives +1), X, 8 x 5 backbone features, and labels the
# losses ignore.
H = np.array(
    [
        [0.5, -1.0, 0.25, 2.0],
        [-0.75, 0.5, 1.5, -0.25],
        [1.25, 0.75, -0.5, 0.5],
        [0.1, -0.3, -1.2, 0.8],
        [-0.6, 1.1, 0.3, -1.5],
        [0.9, -0.2, -0.8, 0.05],
        [-1.3, 0.4, 0.7, -0.9],
        [0.2, -0.65, 1.05, 1.2],
    ],
    np.float32,
)
X = np.array(
    [
        [0.3, 1.2, 0.0, 0.7, 0.1],
        [1.0, 0.2, 0.4, 0.0, 0.9],
        [0.0, 0.8, 1.1, 0.3, 0.2],
        [0.6, 0.0, 0.5, 1.4, 0.3],
        [0.2, 0.9, 0.1, 0.6, 0.0],
        [1.3, 0.1, 0.0, 0.2, 0.8],
        [0.4, 0.3, 0.9, 0.0, 1.1],
        [0.0, 1.0, 0.2, 0.5, 0.6],
    ],
    np.float32,
)
LABELS = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2, 0, 1]]

# ---------------------------------------------------------------------------------------
# Values and gradients against PyTorch's
# ---------------------------------------------------------------------------------------


def check_torch_fixture(layer, codes, labels, means, gradient, **inputs) -> None:
    """Calls `layer` on the fixture's codes (as a variable) and labels, plus `inputs`
    (e.g. features), and compares with PyTorch's numbers to float32 rounding: the batch
    mean of each term named in `means` ({term: value}, rtol 1e-6) and the gradient of
    the mean "loss" with respect to the codes (`gradient`, rtol 1e-5, atol 1e-7)."""
    z = tf.Variable(codes)
    with tf.GradientTape() as tape:
        terms = layer(z, tf.constant(labels), **inputs)
        loss = tf.reduce_mean(terms["loss"])
    for name, value in means.items():
        got = loss if name == "loss" else tf.reduce_mean(terms[name])
        np.testing.assert_allclose(got.numpy(), value, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(tape.gradient(loss, z), np.array(gradient), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------
# Unsupervised feature-similarity losses (wsdhash/losses/feature_similarity.py)
# ---------------------------------------------------------------------------------------


def check_labels_ignored(loss_class) -> None:
    """The loss on (H, X) is the same with the labels' rows reversed."""
    layer = loss_class(bits=4, num_classes=3)
    a = layer(H, tf.constant(LABELS), features=X)["loss"]
    b = layer(H, tf.constant(LABELS[::-1].copy()), features=X)["loss"]
    np.testing.assert_array_equal(a, b)


def check_features_required(loss_class, name: str) -> None:
    """A call without `features` raises ValueError naming the loss (`name`) and
    `uses_backbone_features`, with references or without; one with references but no
    `ref_features` raises too."""
    layer = loss_class(bits=4, num_classes=3)
    with pytest.raises(ValueError, match="features"):
        layer(H, LABELS, ref_codes=H, ref_labels=LABELS)
    with pytest.raises(ValueError, match="ref_features"):
        layer(H, LABELS, ref_codes=H, ref_labels=LABELS, features=X)
    # Codes and labels alone (the call the trainer no longer makes to build variables).
    with pytest.raises(ValueError, match=f"{name} .*uses_backbone_features"):
        layer(tf.zeros([1, 4]), tf.zeros([1, 3]))


def feature_loss_with_references(layer, rows: int):
    """(the "loss" of anchors 4..10 against `rows` random references, the references'
    codes (rows, 6), their features (rows, 9)): `layer` must take K = 6 and C = 2."""
    rng = np.random.default_rng(0)
    refs = rng.normal(size=(rows, 6)).astype(np.float32)
    feats = np.abs(rng.normal(size=(rows, 9))).astype(np.float32)
    labels = np.zeros((rows, 2), np.float32)
    got = layer(
        refs[4:11],
        labels[4:11],
        ref_codes=refs,
        ref_labels=labels,
        anchor_offset=4,
        features=feats[4:11],
        ref_features=feats,
    )["loss"]
    return got, refs, feats


def slow_pair_similarity(binary, features, offset: int, count: int) -> list[float]:
    """Per-anchor (cos(b_a, b_p) - cos(x_a, x_p))^2 by loops (float64) for the anchors
    a = offset..offset+count-1 of the references, p = a +- R/2 their partner; 0 for the
    unpaired last row of an odd R."""
    binary, features = np.asarray(binary, np.float64), np.asarray(features, np.float64)

    def cos(a, c):
        return float(a @ c / np.sqrt(max((a @ a) * (c @ c), 1e-16)))

    half, out = len(binary) // 2, []
    for a in range(offset, offset + count):
        if a >= 2 * half:
            out.append(0.0)
        else:
            p = a + half if a < half else a - half
            out.append((cos(binary[a], binary[p]) - cos(features[a], features[p])) ** 2)
    return out


def check_centered_features(loss_class, term: str, code_cosine: float) -> None:
    """`center_features=True`: the similarity term is the uncentred one computed on the
    features minus the references' mean (a slow loop), it ignores a constant added to
    every feature row, and it equals the uncentred term when the features' mean is 0.
    With references, the mean is the references' (every replica's), not the anchors'."""
    rng = np.random.default_rng(1)
    refs = rng.normal(size=(10, 6)).astype(np.float32)
    feats = np.abs(rng.normal(size=(10, 9))).astype(np.float32) + 2.0  # all positive
    labels = np.zeros((10, 2), np.float32)
    centered = loss_class(bits=6, num_classes=2, center_features=True)
    plain = loss_class(bits=6, num_classes=2)

    def similarity(layer, features):
        return layer(
            refs[3:8],
            labels[3:8],
            ref_codes=refs,
            ref_labels=labels,
            anchor_offset=3,
            features=features[3:8],
            ref_features=features,
        )[term].numpy()

    got = similarity(centered, feats)
    mean_free = feats - feats.mean(axis=0, keepdims=True)
    np.testing.assert_allclose(got, similarity(plain, mean_free), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got, similarity(centered, feats + 5.0), rtol=1e-4, atol=1e-6)
    assert not np.allclose(got, similarity(plain, feats), atol=1e-3)  # it does change
    # By hand, two rows: x = (1, 0), (1, 2); mean (1, 1); centred (0, -1), (0, 1): cos -1
    # (uncentred: 1 / sqrt(5)). h = (0.5, -2), (0.25, 1.5): the codes' cosine is the
    # loss's `code_cosine` (sign: (1, -1), (1, 1), cos 0; bi-half: (1, -1), (-1, 1), -1).
    h = tf.constant([[0.5, -2.0], [0.25, 1.5]])
    x = tf.constant([[1.0, 0.0], [1.0, 2.0]])
    for center, feature_cosine in ((True, -1.0), (False, 1 / np.sqrt(5))):
        layer = loss_class(bits=2, num_classes=2, center_features=center)
        expected = (code_cosine - feature_cosine) ** 2
        np.testing.assert_allclose(
            layer(h, labels[:2], features=x)[term], [expected] * 2, rtol=1e-6, atol=1e-7
        )
    assert loss_class.from_config(centered.get_config()).center_features is True
