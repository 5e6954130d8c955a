"""The trainer's quantizer wrapper: kind/form pairing, spaces, restore after resume."""

import numpy as np
import pytest

from wsdhash.losses.wsdhq import WSDHQLoss
from wsdhash.methods.wsdhq_quantizer import TrainingQuantizer, quantizer_features
from wsdhash.quantization.aqd import reconstruct

TAGS, DIM, TRAIN = 5, 8, 300


def _setup(kind, form, seed=0):
    rng = np.random.default_rng(seed)
    tags = rng.normal(size=(TAGS, DIM)).astype(np.float32)
    features = np.tanh(rng.normal(size=(TRAIN, DIM))).astype(np.float32)
    quantizer = TrainingQuantizer(16, tags, 2, 0, kind=kind, form=form, num_train=TRAIN)
    loss = WSDHQLoss(
        bits=16,
        num_classes=TAGS,
        tag_embeddings=tags,
        num_train_examples=TRAIN,
        quantization_form=form,
    )
    return quantizer, loss, features


@pytest.mark.parametrize(
    "kind,form", [("additive", "faithful"), ("additive", "hypersphere"), ("product", "product")]
)
def test_update_hands_matching_codes_to_the_loss_and_restores(kind, form):
    quantizer, loss, features = _setup(kind, form)
    quantizer.update(features, loss)
    # The stored codes come from the encoding BEFORE the codebook update of the round,
    # as in the original, so they need not equal a fresh encoding.
    codes = loss.train_codes.numpy()
    assert codes.shape == (TRAIN, 2) and codes.min() >= 0 and codes.max() < 256
    books = quantizer.codebooks
    assert books.shape == (2, 256, DIM)
    np.testing.assert_allclose(loss.codebooks.numpy(), books.reshape(512, DIM))
    # The stored codes are the quantizer's encoding in its own space: the reconstruction
    # of a hypersphere quantizer approximates unit rows, a product one unit sub-vectors.
    target = quantizer_features(features, form)
    if form == "product":
        sub = features.reshape(TRAIN, 2, -1)
        target = (sub / np.linalg.norm(sub, axis=2, keepdims=True)).reshape(TRAIN, DIM)
    error = np.mean(np.sum((reconstruct(codes, books) - target) ** 2, axis=1))
    assert error < 0.5 * np.mean(np.sum(target**2, axis=1))
    # A fresh wrapper takes the codebooks back from the loss after a resume.
    fresh, _, _ = _setup(kind, form)
    fresh.restore(loss)
    np.testing.assert_allclose(fresh.codebooks, books)
    np.testing.assert_array_equal(fresh.encode(features), quantizer.encode(features))


def test_pairing_and_size_errors():
    tags = np.ones((TAGS, DIM), np.float32)
    with pytest.raises(ValueError, match="cannot pair"):
        TrainingQuantizer(16, tags, 2, 0, kind="product", form="faithful")
    with pytest.raises(ValueError, match="cannot pair"):
        TrainingQuantizer(16, tags, 2, 0, kind="additive", form="product")
    with pytest.raises(ValueError, match="at least 256 training images"):
        TrainingQuantizer(16, tags, 2, 0, num_train=100)
    with pytest.raises(ValueError, match="M must divide D"):
        TrainingQuantizer(24, tags, 2, 0, kind="product", form="product")
    with pytest.raises(ValueError, match="quantizer must be one of"):
        TrainingQuantizer(16, tags, 2, 0, kind="residual")


@pytest.mark.parametrize(
    "num_train,batch_size,period",
    [
        (250, 64, 100),  # two epochs = 2 x 4 = 8 steps: the floor of 100 steps
        (3_200, 64, 100),  # two epochs = 2 x 50 = 100 steps: exactly the floor
        (3_201, 64, 102),  # 2 x 51: just above it, two epochs
        (18_688, 256, 146),  # WSDHQ's Flickr training split: two epochs, as published
        (100_000, 256, 782),  # 2 x ceil(390.625)
    ],
)
def test_default_period_is_two_epochs_but_at_least_100_steps(num_train, batch_size, period, caplog):
    from wsdhash.methods.wsdhq import quantizer_period
    from wsdhash.methods.wsdhq_quantizer import MIN_DEFAULT_PERIOD

    assert MIN_DEFAULT_PERIOD == 100
    assert TrainingQuantizer.default_period(num_train, batch_size) == period
    # The absl logger's own level too: once any test in this process has parsed absl's
    # flags, absl's --verbosity (WARNING) is that logger's level.
    with caplog.at_level("INFO"), caplog.at_level("INFO", logger="absl"):
        assert quantizer_period(0, num_train, batch_size) == period
    two_epochs = 2 * -(-num_train // batch_size)
    assert f"updated every {period} steps (two epochs" in caplog.text
    assert f"are {two_epochs} steps" in caplog.text
    # An explicit period is used as given, below the floor too.
    assert quantizer_period(3, num_train, batch_size) == 3
