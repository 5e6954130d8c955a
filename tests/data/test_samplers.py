"""Tests for wsdhash.data.samplers.ClassBalancedSampler."""

import numpy as np
import pytest
import tensorflow as tf

from wsdhash.data.samplers import ClassBalancedSampler, class_ids_from_labels
from wsdhash.losses import triplet


def _class_ids(seed=0, classes=30, per_class=(8, 20)):
    rng = np.random.default_rng(seed)
    ids = np.concatenate([np.full(rng.integers(*per_class), c) for c in range(classes)])
    return rng.permutation(ids)


def test_every_batch_has_p_classes_of_q_distinct_images():
    class_ids = _class_ids()
    sampler = ClassBalancedSampler(class_ids, classes_per_batch=10, images_per_class=8, seed=1)
    batches = sampler.epoch_batches(0)
    assert len(sampler) == len(class_ids) // 80 and batches.shape == (len(sampler), 80)
    for batch in batches:
        assert len(set(batch.tolist())) == 80  # no duplicates: every class has >= 8 images
        classes, counts = np.unique(class_ids[batch], return_counts=True)
        assert len(classes) == 10 and np.all(counts == 8)
        # Shuffled: the batch is not grouped by class.
        assert np.any(class_ids[batch][:8] != class_ids[batch][0])
        assert triplet.count_triplets(class_ids[batch]).numpy() == 20160


def test_deterministic_per_seed_and_epoch():
    class_ids = _class_ids()
    first = ClassBalancedSampler(class_ids, seed=5)
    again = ClassBalancedSampler(class_ids, seed=5)
    np.testing.assert_array_equal(first.epoch_batches(3), again.epoch_batches(3))
    assert not np.array_equal(first.epoch_batches(3), first.epoch_batches(4))
    assert not np.array_equal(
        first.epoch_batches(3), ClassBalancedSampler(class_ids, seed=6).epoch_batches(3)
    )
    stream = iter(first)
    streamed = np.stack([next(stream) for _ in range(2 * len(first))])
    np.testing.assert_array_equal(
        streamed, np.concatenate([first.epoch_batches(0), first.epoch_batches(1)])
    )


def test_small_classes_replacement_or_skip():
    class_ids = np.concatenate([np.repeat(np.arange(10), 8), [10, 10, 10], [-1] * 5])
    replace = ClassBalancedSampler(class_ids, classes_per_batch=4, images_per_class=8, seed=0)
    seen_small = False
    for epoch in range(5):
        for batch in replace.epoch_batches(epoch):
            assert batch.size == 32 and np.all(class_ids[batch] >= 0)
            classes, counts = np.unique(class_ids[batch], return_counts=True)
            assert len(classes) == 4 and np.all(counts == 8)
            seen_small |= 10 in classes
    assert seen_small
    skip = ClassBalancedSampler(
        class_ids, classes_per_batch=4, images_per_class=8, small_classes="skip"
    )
    for epoch in range(5):
        assert not np.isin(10, class_ids[skip.epoch_batches(epoch)])
    # N counts the 83 labelled samples.
    assert len(replace) == 83 // 32
    with pytest.raises(ValueError, match="Need at least 11 classes"):
        ClassBalancedSampler(
            class_ids, classes_per_batch=11, images_per_class=8, small_classes="skip"
        )


def test_one_hot_labels_and_errors():
    class_ids = _class_ids(classes=12)
    one_hot = np.eye(12)[class_ids]
    one_hot[0] = 0  # unlabelled row
    ids = class_ids_from_labels(one_hot)
    assert ids[0] == -1 and np.array_equal(ids[1:], class_ids[1:])
    sampler = ClassBalancedSampler(one_hot, seed=2)
    assert 0 not in sampler.epoch_batches(0)
    one_hot[3, :2] = 1
    with pytest.raises(ValueError, match="single-label"):
        ClassBalancedSampler(one_hot)
    with pytest.raises(ValueError, match="Unknown small_classes"):
        ClassBalancedSampler(class_ids, small_classes="drop")


def test_feeds_a_tf_data_pipeline():
    class_ids = _class_ids(classes=12)
    sampler = ClassBalancedSampler(class_ids, classes_per_batch=3, images_per_class=4, seed=0)
    dataset = tf.data.Dataset.from_tensor_slices(sampler.epoch_batches(0))
    batches = [b.numpy() for b in dataset]
    np.testing.assert_array_equal(np.stack(batches), sampler.epoch_batches(0))
