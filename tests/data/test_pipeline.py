"""Tests for the tf.data pipeline and the preprocessing ops (eagerly and inside tf.data)."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from wsdhash.data import preprocessing
from wsdhash.data.pipeline import PipelineConfig, make_dataset, make_features_dataset
from wsdhash.data.types import SplitData

SIZE, CROP = 16, 12


@pytest.fixture(scope="module")
def image_split(tmp_path_factory):
    """11 random PNG images (lossless, so pixels can be compared exactly), sized 20x24 so
    that the loader's resize is exercised."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths, pixels = [], []
    for i in range(11):
        rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        path = str(root / f"{i:02d}.png")
        cv2.imwrite(path, rgb[..., ::-1])
        paths.append(path)
        pixels.append(cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR))
    labels = rng.integers(0, 2, (11, 3)).astype(np.uint8)
    tags = rng.integers(0, 2, (11, 5)).astype(np.uint8)
    split = SplitData("train", np.array(paths), labels, tags)
    return split, np.stack(pixels)


CONFIG = PipelineConfig(image_size=SIZE, crop_size=CROP, normalization="raw_pixels")


def _collect(dataset, steps=None):
    batches = list(dataset if steps is None else dataset.take(steps))
    return {key: np.concatenate([b[key].numpy() for b in batches]) for key in batches[0]}


def test_evaluation_keeps_file_order_and_last_partial_batch(image_split):
    split, pixels = image_split
    dataset = make_dataset(split, CONFIG, training=False, batch_size=4)
    sizes = [int(b["index"].shape[0]) for b in dataset]
    assert sizes == [4, 4, 3]
    out = _collect(dataset)
    np.testing.assert_array_equal(out["index"], np.arange(11))
    np.testing.assert_array_equal(out["labels"], split.labels.astype(np.float32))
    np.testing.assert_array_equal(out["tags"], split.tags.astype(np.float32))
    assert out["image"].dtype == np.float32 and out["image"].shape == (11, CROP, CROP, 3)
    offset = (SIZE - CROP) // 2
    expected = pixels[:, offset : offset + CROP, offset : offset + CROP]
    np.testing.assert_array_equal(out["image"], expected.astype(np.float32))


def test_splits_without_tags_give_zero_width_tags(image_split):
    split, _ = image_split
    untagged = SplitData("query", split.paths, split.labels, np.zeros((11, 0), np.uint8))
    batch = next(iter(make_dataset(untagged, CONFIG, training=False, batch_size=4)))
    assert batch["tags"].shape == (4, 0)


def test_ten_crop_matches_wsdhq_offsets():
    assert preprocessing.ten_crop_offsets(256, 227) == [
        (0, 0),
        (28, 28),
        (28, 0),
        (0, 28),
        (14, 14),
    ]
    image = tf.reshape(tf.range(10 * 10 * 1), (10, 10, 1))
    crops = preprocessing.ten_crop(image, 6).numpy()
    assert crops.shape == (10, 6, 6, 1)
    flipped = image.numpy()[:, ::-1]
    np.testing.assert_array_equal(crops[0], flipped[0:6, 0:6])
    np.testing.assert_array_equal(crops[6], image.numpy()[4:10, 4:10])  # (span, span)
    np.testing.assert_array_equal(crops[9], image.numpy()[2:8, 2:8])  # centre


def test_ten_crop_in_pipeline(image_split):
    split, pixels = image_split
    config = PipelineConfig(SIZE, CROP, normalization="raw_pixels", ten_crop=True)
    out = _collect(make_dataset(split, config, training=False, batch_size=5))
    assert out["image"].shape == (11, 10, CROP, CROP, 3)
    np.testing.assert_array_equal(out["image"][3, 5], pixels[3, :CROP, :CROP])


@pytest.mark.parametrize(
    "name, pixel, expected",
    [
        # (255/255 - 0.485) / 0.229 for the red channel, worked by hand: 2.2489...
        ("torch_imagenet", (255, 0, 0), (2.248908, -2.035714, -1.804444)),
        ("caffe_mean_on_rgb", (103.939, 116.779, 123.68), (0.0, 0.0, 0.0)),
        ("caffe_bgr", (123.68, 116.779, 103.939), (0.0, 0.0, 0.0)),
        ("minus_one_to_one", (0, 127.5, 255), (-1.0, 0.0, 1.0)),
        ("unit_range", (0, 51, 255), (0.0, 0.2, 1.0)),
        ("torch_cifar10", (0, 0, 0), (-2.429065, -2.418254, -2.221393)),
    ],
)
def test_normalizations_by_hand(name, pixel, expected):
    normalize = preprocessing.NORMALIZATIONS.get(name)
    image = tf.constant([[pixel]], tf.float32)
    np.testing.assert_allclose(normalize(image).numpy()[0, 0], expected, atol=1e-5)


def test_unknown_normalization_fails_early():
    with pytest.raises(KeyError, match="Unknown normalization 'imagenett'"):
        PipelineConfig(normalization="imagenett")
    with pytest.raises(ValueError, match="crop_size"):
        PipelineConfig(image_size=8, crop_size=9)


def test_random_crop_and_flip_is_a_crop_of_the_image():
    image = tf.reshape(tf.range(8 * 9 * 2), (8, 9, 2))
    seen = set()
    for s in range(20):
        crop = preprocessing.random_crop_and_flip(image, 5, tf.constant([s, 7])).numpy()
        found = False
        for view, flipped in ((image.numpy(), False), (image.numpy()[:, ::-1], True)):
            for top in range(4):
                for left in range(5):
                    if np.array_equal(crop, view[top : top + 5, left : left + 5]):
                        found = True
                        seen.add((top, left, flipped))
        assert found
    assert len(seen) > 5  # The seed actually changes the crop.


def test_training_stream_is_seeded_shuffled_and_epoch_complete(image_split):
    split, _ = image_split

    def stream(seed):
        dataset = make_dataset(split, CONFIG, training=True, batch_size=2, seed=seed)
        return _collect(dataset, steps=11)  # 22 elements: two full epochs.

    first, again, other = stream(1), stream(1), stream(2)
    np.testing.assert_array_equal(first["index"], again["index"])
    np.testing.assert_array_equal(first["image"], again["image"])
    assert not np.array_equal(first["index"], other["index"])
    assert sorted(first["index"][:11]) == list(range(11))  # Each epoch is a permutation.
    assert sorted(first["index"][11:]) == list(range(11))
    assert not np.array_equal(first["index"][:11], first["index"][11:])  # Reshuffled.
    np.testing.assert_array_equal(first["labels"], split.labels[first["index"]])


def test_skip_elements_resumes_the_same_stream(image_split):
    split, _ = image_split
    full = _collect(make_dataset(split, CONFIG, training=True, batch_size=3, seed=5), steps=6)
    resumed = make_dataset(split, CONFIG, training=True, batch_size=3, seed=5, skip_elements=9)
    tail = _collect(resumed, steps=3)
    np.testing.assert_array_equal(tail["index"], full["index"][9:])
    np.testing.assert_array_equal(tail["image"], full["image"][9:])  # Same crops too.
    with pytest.raises(ValueError, match="skip_elements"):
        make_dataset(split, CONFIG, training=False, batch_size=3, skip_elements=1)


def test_sharding_by_input_context(image_split):
    split, _ = image_split
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
        )
        dataset = make_dataset(split, CONFIG, training=False, batch_size=4, input_context=context)
        batches = list(dataset)
        assert max(int(b["index"].shape[0]) for b in batches) == 2  # Per-replica batch.
        seen.append(np.concatenate([b["index"].numpy() for b in batches]))
    assert set(seen[0]).isdisjoint(seen[1])
    assert sorted(np.concatenate(seen)) == list(range(11))


def test_cache_gives_the_same_elements(image_split):
    split, _ = image_split
    plain = _collect(make_dataset(split, CONFIG, training=False, batch_size=4))
    cached = make_dataset(split, CONFIG, training=False, batch_size=4, cache=True)
    for _ in range(2):  # The second pass reads from the cache.
        out = _collect(cached)
        for key in plain:
            np.testing.assert_array_equal(out[key], plain[key])


def test_corrupt_image_is_named_or_skipped_and_counted(image_split, tmp_path):
    split, _ = image_split
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    paths = np.concatenate([split.paths[:4], [str(bad)], split.paths[4:6]])
    broken = SplitData("query", paths, np.zeros((7, 1), np.uint8), np.zeros((7, 0), np.uint8))
    with pytest.raises(tf.errors.OpError, match=r"Cannot decode image file: .*broken.jpg"):
        _collect(make_dataset(broken, CONFIG, training=False, batch_size=4))
    log = preprocessing.CorruptImageLog()
    out = _collect(make_dataset(broken, CONFIG, training=False, batch_size=4, corrupt_log=log))
    np.testing.assert_array_equal(out["index"], [0, 1, 2, 3, 5, 6])
    assert log.paths == [str(bad)] and len(log) == 1


def test_empty_split_and_bad_batch_size(image_split):
    split, _ = image_split
    empty = SplitData("query", np.array([], str), np.zeros((0, 1), np.uint8), np.zeros((0, 0)))
    with pytest.raises(ValueError, match="Split 'query' is empty"):
        make_dataset(empty, CONFIG, training=False, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(split, CONFIG, training=False, batch_size=0)


def test_normalization_none_yields_uint8_for_the_model_to_normalise(image_split):
    split, pixels = image_split
    config = PipelineConfig(SIZE, CROP, normalization=None)
    out = _collect(make_dataset(split, config, training=False, batch_size=4))
    assert out["image"].dtype == np.uint8
    offset = (SIZE - CROP) // 2
    np.testing.assert_array_equal(
        out["image"], pixels[:, offset : offset + CROP, offset : offset + CROP]
    )


def test_index_stream_replaces_the_shuffle_and_resumes(image_split):
    split, _ = image_split

    def stream():
        rng = np.random.default_rng(0)
        while True:
            yield from rng.integers(0, 11, 6)

    expected = []
    generator = stream()
    for _ in range(18):
        expected.append(next(generator))
    out = _collect(
        make_dataset(split, CONFIG, training=True, batch_size=6, index_stream=stream), steps=3
    )
    np.testing.assert_array_equal(out["index"], expected)
    np.testing.assert_array_equal(out["labels"], split.labels[expected].astype(np.float32))
    tail = _collect(
        make_dataset(
            split, CONFIG, training=True, batch_size=6, index_stream=stream, skip_elements=6
        ),
        steps=2,
    )
    np.testing.assert_array_equal(tail["index"], expected[6:])
    np.testing.assert_array_equal(tail["image"], out["image"][6:])
    # Two input pipelines split each global batch between them.
    halves = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, 2)
        dataset = make_dataset(
            split, CONFIG, training=True, batch_size=6, index_stream=stream, input_context=context
        )
        halves.append(next(iter(dataset))["index"].numpy())
    assert sorted(np.concatenate(halves)) == sorted(expected[:6])


def test_features_pipeline_follows_the_image_order_without_decoding(image_split):
    split, _ = image_split
    features = np.random.default_rng(1).normal(size=(len(split), 6)).astype(np.float32)
    with_features = SplitData("train", split.paths, split.labels, split.tags, features=features)
    images = _collect(make_dataset(split, CONFIG, training=True, batch_size=3, seed=4), steps=5)
    out = _collect(make_features_dataset(with_features, training=True, batch_size=3, seed=4), 5)
    # The same seed gives the same shuffled order as the image pipeline of the split.
    np.testing.assert_array_equal(out["index"], images["index"])
    np.testing.assert_array_equal(out["image"], features[out["index"]])
    np.testing.assert_array_equal(out["labels"], split.labels[out["index"]].astype(np.float32))
    routed = make_dataset(with_features, CONFIG, training=True, batch_size=3, seed=4)
    np.testing.assert_array_equal(_collect(routed, steps=5)["image"], out["image"])
    resumed = make_features_dataset(
        with_features, training=True, batch_size=3, seed=4, skip_elements=6
    )
    np.testing.assert_array_equal(_collect(resumed, steps=3)["index"], out["index"][6:])
    evaluation = _collect(make_features_dataset(with_features, training=False, batch_size=4))
    np.testing.assert_array_equal(evaluation["image"], features)
    with pytest.raises(ValueError, match="carries no precomputed features"):
        make_features_dataset(split, training=False, batch_size=4)
    with pytest.raises(ValueError, match="a stream of encoded images cannot feed it"):
        make_dataset(
            with_features, CONFIG, training=True, batch_size=3, stream=tf.data.Dataset.range(1)
        )
