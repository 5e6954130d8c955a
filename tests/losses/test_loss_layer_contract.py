"""The contract every loss layer keeps with the trainer: registry, (B,) dicts, reference
sets that split a batch across replicas exactly, XLA agreement, config round trips."""

import numpy as np
import pytest
import tensorflow as tf

from wsdhash.losses import HyP2Loss, OrthoHashLoss, TripletLoss, WSDHQLoss
from wsdhash.methods import METHODS

BITS, CLASSES, BATCH = 16, 4, 10

CASES = {
    "orthohash_single_cos": ("orthohash", {"margin": 0.3}, "single"),
    "orthohash_multi_arc_quan": (
        "orthohash",
        {
            "margin_type": "arc",
            "multiclass": True,
            "quantization_weight": 0.1,
            "codebook_method": "N",
        },
        "multi",
    ),
    "hyp2": ("hyp2", {"beta": 0.5, "zeta": -0.2}, "multi"),
    "hyp2_table_zeta_no_pair": ("hyp2", {"beta": 0.0}, "multi"),
    "triplet": ("triplet", {"margin": 12.0}, "single"),
    "triplet_dnnh": ("triplet", {"dnnh_sigmoid": True}, "single"),
    "wsdhq": (
        "wsdhq",
        {
            "tag_embeddings": np.random.default_rng(7).normal(size=(CLASSES, BITS)).tolist(),
            "num_train_examples": BATCH,
        },
        "multi",
    ),
}
KEYS = {
    "orthohash": {"loss", "ce", "quantization"},
    "hyp2": {"loss", "proxy", "pair"},
    "triplet": {"loss", "triplet"},
    "wsdhq": {"loss", "embedding", "quantization"},
}


def _inputs(kind, seed=0):
    rng = np.random.default_rng(seed)
    codes = np.tanh(rng.normal(size=(BATCH, BITS))).astype(np.float32)
    if kind == "single":
        labels = np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, BATCH)]
    else:
        labels = (rng.random((BATCH, CLASSES)) < 0.4).astype(np.float32)
        labels[0] = [1, 1, 0, 0]
        labels[1] = [0, 0, 1, 1]
        labels[2] = 0
    return tf.Variable(codes), tf.constant(labels)


def _layer(case, seed=3):
    name, kwargs, kind = CASES[case]
    return METHODS.get(name).loss_class(bits=BITS, num_classes=CLASSES, seed=seed, **kwargs), kind


def test_methods_name_their_loss_classes():
    assert METHODS.get("orthohash").loss_class is OrthoHashLoss
    assert METHODS.get("hyp2").loss_class is HyP2Loss
    assert METHODS.get("triplet").loss_class is TripletLoss
    assert METHODS.get("wsdhq").loss_class is WSDHQLoss
    with pytest.raises(KeyError, match="Unknown method 'no_such_method'; known: .*hyp2"):
        METHODS.get("no_such_method")


@pytest.mark.parametrize("case", sorted(CASES))
def test_call_returns_dict_of_per_example_values(case):
    layer, kind = _layer(case)
    codes, labels = _inputs(kind)
    out = layer(codes, labels)
    assert set(out) == KEYS[CASES[case][0]]
    for value in out.values():
        assert value.shape == (BATCH,) and value.dtype == tf.float32
        assert np.all(np.isfinite(value.numpy()))
    assert float(tf.reduce_sum(out["loss"])) > 0


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("split", [3, 5])
def test_two_halves_against_the_full_batch_equal_the_full_batch(case, split):
    """What makes two replicas with all-gathered references train like one device."""
    layer, kind = _layer(case)
    codes, labels = _inputs(kind, seed=split)
    weights = [codes] + layer.trainable_weights
    with tf.GradientTape() as tape:
        full = layer(codes, labels)
        full_sum = tf.reduce_sum(full["loss"])
    full_grads = tape.gradient(full_sum, weights)
    with tf.GradientTape() as tape:
        first = layer(codes[:split], labels[:split], codes, labels, anchor_offset=0)
        second = layer(codes[split:], labels[split:], codes, labels, anchor_offset=split)
        halves_sum = tf.reduce_sum(first["loss"]) + tf.reduce_sum(second["loss"])
    halves_grads = tape.gradient(halves_sum, weights)
    for key in full:
        np.testing.assert_allclose(
            tf.concat([first[key], second[key]], 0).numpy(), full[key].numpy(), rtol=1e-5, atol=1e-6
        )
    for got, want in zip(halves_grads, full_grads):
        assert np.all(np.isfinite(want.numpy())) and np.any(want.numpy() != 0)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_xla_agrees_with_eager(case):
    layer, kind = _layer(case)
    codes, labels = _inputs(kind, seed=7)

    @tf.function(jit_compile=True)
    def compiled(anchors, anchor_labels, refs, ref_labels, offset):
        return layer(anchors, anchor_labels, refs, ref_labels, anchor_offset=offset)

    codes = tf.convert_to_tensor(codes)
    eager = layer(codes[4:], labels[4:], codes, labels, anchor_offset=4)
    xla = compiled(codes[4:], labels[4:], codes, labels, tf.constant(4))
    for key in eager:
        np.testing.assert_allclose(xla[key].numpy(), eager[key].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_round_trip(case):
    layer, kind = _layer(case, seed=11)
    config = layer.get_config()
    for key in ("bits", "num_classes", "seed"):
        assert key in config
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    for mine, theirs in zip(layer.weights, clone.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    codes, labels = _inputs(kind, seed=1)
    np.testing.assert_allclose(
        clone(codes, labels)["loss"], layer(codes, labels)["loss"], rtol=1e-6
    )


def test_orthohash_explicit_codebook_round_trips():
    codebook = np.where(np.random.default_rng(0).random((CLASSES, BITS)) < 0.5, 1.0, -1.0)
    layer = OrthoHashLoss(bits=BITS, num_classes=CLASSES, codebook=codebook)
    clone = OrthoHashLoss.from_config(layer.get_config())
    np.testing.assert_array_equal(clone.codebook.numpy(), codebook)


def test_references_must_come_in_pairs():
    for layer in (
        HyP2Loss(bits=BITS, num_classes=CLASSES),
        TripletLoss(bits=BITS, num_classes=CLASSES),
    ):
        codes, labels = _inputs("single")
        with pytest.raises(ValueError, match="both ref_codes and ref_labels"):
            layer(codes, labels, ref_codes=codes)


def test_call_resolves_the_references_once_and_calls_terms():
    """HashingLoss.call is the template: it checks the pair, packs the references and
    the offset, and passes extra inputs to the subclass's terms unchanged."""
    from wsdhash.losses.base import HashingLoss
    from wsdhash.losses.references import References

    seen = []

    class Recording(HashingLoss):
        def terms(self, codes, labels, refs, features=None):
            seen.append((refs, features))
            return {"loss": tf.reduce_sum(codes, axis=1)}

    layer = Recording(bits=BITS, num_classes=CLASSES)
    codes, labels = _inputs("single")
    codes = tf.convert_to_tensor(codes)
    np.testing.assert_array_equal(layer(codes, labels)["loss"], tf.reduce_sum(codes, axis=1))
    refs, features = seen[-1]
    assert isinstance(refs, References) and not refs.given
    assert refs.codes is None and refs.labels is None and refs.anchor_offset == 0
    assert features is None
    layer(codes[2:], labels[2:], codes, labels, anchor_offset=2, features=codes[2:])
    refs, features = seen[-1]
    assert refs.given and refs.anchor_offset == 2
    np.testing.assert_array_equal(refs.codes, codes)
    np.testing.assert_array_equal(refs.labels, labels)
    np.testing.assert_array_equal(features, codes[2:])
    with pytest.raises(ValueError, match="both ref_codes and ref_labels"):
        layer(codes, labels, ref_labels=labels)
    assert len(seen) == 2  # the check comes before terms
    with pytest.raises(NotImplementedError, match="terms"):
        HashingLoss(bits=BITS, num_classes=CLASSES)(codes, labels)
