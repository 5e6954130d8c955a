"""GreedyHash-unsupervised loss (wsdhash/losses/greedyhash_unsupervised.py): a value by
hand, a numpy loop with references, fixtures from the authors' PyTorch code, and the
loss contract.

Fixtures: the `hash` autograd Function of ssppp/GreedyHash unsupervised_vgg.py (fetched,
class source executed unchanged) and the loss lines of its training loop (F.cosine_similarity
of the batch's two halves, F.mse_loss, plus alpha * mean | (|h| - 1)^3 |), on H (8 x 4
outputs, no zero entry: torch.sign(0) = 0 where wsdhash gives +1) and X (8 x 5 features)
of fixture_checks.py; produced by a scratch script outside the repository:

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python /tmp/fixtures_unsupervised/make_fixtures.py

It prints loss1, loss2, loss.item() and h.grad for alpha = 0.1 and 0.
"""

import numpy as np
import pytest
import tensorflow as tf
from contracts import run_loss_test
from fixture_checks import (
    LABELS,
    H,
    X,
    check_centered_features,
    check_features_required,
    check_labels_ignored,
    check_torch_fixture,
    feature_loss_with_references,
    slow_pair_similarity,
)

from wsdhash.losses.greedyhash_unsupervised import (
    GreedyHashUnsupervisedLoss,
    greedyhash_unsupervised_terms,
)

TORCH_SIMILARITY = 1.8405073881149292  # loss1
TORCH_PENALTY = 0.19840624928474426  # loss2
TORCH_VALUE = {0.1: 1.8603479862213135, 0.0: 1.8405073881149292}
TORCH_GRAD = {  # float32 values (shortest round-trip repr of the printed floats)
    0.1: [
        [0.0908613, -0.09320505, -0.2848886, 0.10258005],
        [5.859375e-04, -0.00234375, 0.00234375, 0.0052734376],
        [0.07458263, -0.22257602, -0.07165294, 0.07165294],
        [-0.005580111, 0.0025801114, 0.0056659156, 0.0016386387],
        [-0.09170505, 0.0932988, -0.28420892, -0.0955488],
        [-9.375004e-05, 0.0060000005, 3.7499997e-04, -0.008460938],
        [-0.07484044, -0.22536507, 0.073152944, -0.07390294],
        [-0.003986362, -8.652009e-04, -0.006017478, 0.0023886387],
    ],
    0.0: [
        [0.09320505, -0.09320505, -0.27961516, 0.09320505],
        [0.0, 0.0, 0.0, 0.0],
        [0.07399669, -0.22199008, -0.07399669, 0.07399669],
        [0.0020136386, -0.0020136386, 0.006040916, 0.0020136386],
        [-0.09320505, 0.09320505, -0.27961516, -0.09320505],
        [0.0, 0.0, 0.0, 0.0],
        [-0.07399669, -0.22199008, 0.07399669, -0.07399669],
        [0.0020136386, -0.0020136386, -0.006040916, 0.0020136386],
    ],
}


def test_value_by_hand():
    # Two rows, one pair. h = (0.5, -2), (0.0, 1.5): b = (1, -1), (1, 1) (sign(0) = +1),
    # cos(b) = 0. Features (1, 0), (1, 1): cos = 1/sqrt(2). Pair: (0 - 0.7071)^2 = 0.5.
    h = tf.constant([[0.5, -2.0], [0.0, 1.5]])
    x = tf.constant([[1.0, 0.0], [1.0, 1.0]])
    similarity, penalty = greedyhash_unsupervised_terms(h, features=x)
    np.testing.assert_allclose(similarity, [0.5, 0.5], rtol=1e-6)
    # mean_k ||h| - 1|^3: row 0 (0.125 + 1) / 2; row 1 (1 + 0.125) / 2.
    np.testing.assert_allclose(penalty, [0.5625, 0.5625], rtol=1e-6)
    terms = GreedyHashUnsupervisedLoss(bits=2, num_classes=2, alpha=2.0)(
        h, tf.constant([[1.0, 0], [0, 1]]), features=x
    )
    np.testing.assert_allclose(terms["loss"], [1.625, 1.625], rtol=1e-6)


def _reference(ref_h, ref_x, offset, count, alpha):
    ref_h = ref_h.astype(np.float64)
    b = np.where(ref_h >= 0, 1.0, -1.0)
    similarity = slow_pair_similarity(b, ref_x, offset, count)
    anchors = range(offset, offset + count)
    return np.array(
        [
            s + alpha * np.mean(np.abs(np.abs(ref_h[a]) - 1) ** 3)
            for s, a in zip(similarity, anchors)
        ]
    )


@pytest.mark.parametrize("rows", [12, 11])
def test_matches_slow_loop_with_references(rows):
    layer = GreedyHashUnsupervisedLoss(bits=6, num_classes=2, alpha=0.3)
    got, refs, feats = feature_loss_with_references(layer, rows)
    np.testing.assert_allclose(got, _reference(refs, feats, 4, 7, 0.3), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("alpha", [0.1, 0.0])
def test_matches_the_authors_code(alpha):
    layer = GreedyHashUnsupervisedLoss(bits=4, num_classes=3, alpha=alpha)
    means = {"similarity": TORCH_SIMILARITY, "penalty": TORCH_PENALTY, "loss": TORCH_VALUE[alpha]}
    check_torch_fixture(layer, H, LABELS, means, TORCH_GRAD[alpha], features=tf.constant(X))


def test_labels_are_ignored():
    check_labels_ignored(GreedyHashUnsupervisedLoss)


def test_features_are_required():
    check_features_required(GreedyHashUnsupervisedLoss, "GreedyHashUnsupervisedLoss")
    with pytest.raises(ValueError, match="GreedyHashUnsupervisedLoss"):
        greedyhash_unsupervised_terms(H)


@pytest.mark.parametrize("labels_kind", ["single", "multi"])
def test_loss_contract_and_reference_split(labels_kind):
    # run_loss_test passes random features (the layer's call takes `features`).
    run_loss_test(
        GreedyHashUnsupervisedLoss, labels_kind=labels_kind, keys={"loss", "similarity", "penalty"}
    )


def test_config_round_trip():
    layer = GreedyHashUnsupervisedLoss(bits=8, num_classes=3, alpha=0.7)
    assert GreedyHashUnsupervisedLoss.from_config(layer.get_config()).alpha == 0.7


def test_centered_features():
    check_centered_features(GreedyHashUnsupervisedLoss, "similarity", code_cosine=0.0)
