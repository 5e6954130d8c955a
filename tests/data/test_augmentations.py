"""The training augmentations (`preprocessing.AUGMENTATIONS`, `--augment`): each on a
tiny image eagerly and inside tf.data (the deterministic ones against values worked by
hand), and in the training pipeline against the decoded pixels."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from wsdhash.data import preprocessing
from wsdhash.data.pipeline import PipelineConfig, make_dataset
from wsdhash.data.types import SplitData

AUGMENTATIONS = preprocessing.AUGMENTATIONS
# A 5 x 5 one-channel image whose pixel (r, c) is 5 r + c.
IMAGE = np.arange(25, dtype=np.uint8).reshape(5, 5, 1)
SEED = tf.constant([3, 11], tf.int64)


def _in_tf_data(name, image, crop_size, seeds):
    """The op applied to the image once per seed inside a tf.data map (graph mode)."""
    augment = AUGMENTATIONS.get(name)
    image = tf.constant(image)

    def apply(seed):
        return augment(image, crop_size, seed)

    dataset = tf.data.Dataset.from_tensor_slices(seeds).map(apply).batch(len(seeds))
    return next(iter(dataset)).numpy()


def _both(name, image, crop_size, seeds=((3, 11),)):
    """The op's outputs for each seed, eagerly and inside tf.data, which must be equal:
    (len(seeds), crop_size, crop_size, C)."""
    seeds = np.asarray(seeds, np.int64)
    augment = AUGMENTATIONS.get(name)
    eager = np.stack([augment(tf.constant(image), crop_size, seed).numpy() for seed in seeds])
    np.testing.assert_array_equal(_in_tf_data(name, image, crop_size, seeds), eager)
    return eager


def test_registered_names():
    assert AUGMENTATIONS.names() == ["center_crop", "random_crop_flip", "resize", "resize_flip"]
    assert set(preprocessing.WHOLE_IMAGE_AUGMENTATIONS) <= set(AUGMENTATIONS.names())


def test_center_crop_by_hand_with_no_flip():
    # (5 - 3) // 2 = 1: rows and columns 1..3 of 5 r + c, for every seed.
    expected = np.array([[6, 7, 8], [11, 12, 13], [16, 17, 18]], np.uint8)[..., None]
    out = _both("center_crop", IMAGE, 3, seeds=[(0, 0), (3, 11), (9, 2)])
    np.testing.assert_array_equal(out, np.stack([expected] * 3))


def test_resize_is_the_whole_image_with_no_flip():
    square = IMAGE[:4, :4]  # image_size = crop_size = 4: the decoder already resized it
    out = _both("resize", square, 4, seeds=[(0, 0), (3, 11), (9, 2)])
    np.testing.assert_array_equal(out, np.stack([square] * 3))
    with pytest.raises(ValueError, match=r"augment='resize' trains on the whole image.*5x5"):
        AUGMENTATIONS.get("resize")(tf.constant(IMAGE), 4, SEED)


def test_resize_flip_is_the_image_or_its_mirror_as_random_crop_flip_at_full_size():
    square = IMAGE[:4, :4]
    seeds = [(s, 5) for s in range(12)]
    out = _both("resize_flip", square, 4, seeds)
    flipped = [np.array_equal(image, square[:, ::-1]) for image in out]
    for image, was_flipped in zip(out, flipped):
        assert was_flipped or np.array_equal(image, square)
    assert set(flipped) == {False, True}  # the seed decides the flip
    # A full-size random crop is the image itself, so the two recipes coincide.
    np.testing.assert_array_equal(out, _both("random_crop_flip", square, 4, seeds))
    with pytest.raises(ValueError, match="augment='resize_flip' trains on the whole image"):
        AUGMENTATIONS.get("resize_flip")(tf.constant(IMAGE), 4, SEED)


def test_random_crop_flip_is_the_default_op_and_a_crop_of_the_image_or_mirror():
    views = [IMAGE, IMAGE[:, ::-1]]
    seeds = [(s, 1) for s in range(16)]
    seen = set()
    for seed, out in zip(seeds, _both("random_crop_flip", IMAGE, 3, seeds)):
        np.testing.assert_array_equal(
            out,
            preprocessing.random_crop_and_flip(
                tf.constant(IMAGE), 3, tf.constant(seed, tf.int64)
            ).numpy(),
        )
        matches = [
            (v, top, left)
            for v, view in enumerate(views)
            for top in range(3)
            for left in range(3)
            if np.array_equal(out, view[top : top + 3, left : left + 3])
        ]
        assert matches
        seen.update(matches)
    assert len(seen) > 4


def test_pipeline_config_checks_the_name_and_the_sizes():
    assert PipelineConfig().augment == "random_crop_flip"
    with pytest.raises(KeyError, match="Unknown augmentation 'jitter'; known: center_crop"):
        PipelineConfig(augment="jitter")
    with pytest.raises(
        ValueError,
        match=r"--augment=resize trains on the whole image, so it "
        r"needs --image_size equal to --crop_size .* image_size=256, crop_size=224",
    ):
        PipelineConfig(image_size=256, crop_size=224, augment="resize")
    PipelineConfig(image_size=224, crop_size=224, augment="resize_flip")
    PipelineConfig(image_size=256, crop_size=224, augment="center_crop")


# --- In the training pipeline ------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """7 random PNGs (lossless) of 20 x 24, decoded and resized to 16 x 16."""
    root = tmp_path_factory.mktemp("augment_images")
    rng = np.random.default_rng(1)
    paths, pixels = [], []
    for i in range(7):
        rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        path = str(root / f"{i}.png")
        cv2.imwrite(path, rgb[..., ::-1])
        paths.append(path)
        pixels.append(cv2.resize(rgb, (16, 16), interpolation=cv2.INTER_LINEAR))
    labels = np.eye(7, dtype=np.uint8)
    return SplitData("train", np.array(paths), labels, labels), np.stack(pixels)


def _training_stream(split, config, seed=0):
    dataset = make_dataset(split, config, training=True, batch_size=7, seed=seed)
    batch = next(iter(dataset.take(1)))
    return batch["index"].numpy(), batch["image"].numpy()


def test_training_pipeline_applies_the_named_augmentation(images):
    split, pixels = images
    # center_crop: (16 - 12) // 2 = 2, the same crop as evaluation, never flipped.
    config = PipelineConfig(16, 12, normalization=None, augment="center_crop")
    index, out = _training_stream(split, config)
    assert sorted(index) == list(range(7)) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, pixels[index, 2:14, 2:14])
    evaluation = next(iter(make_dataset(split, config, training=False, batch_size=7)))
    np.testing.assert_array_equal(evaluation["image"].numpy(), pixels[:, 2:14, 2:14])
    # resize: the decoded 16 x 16 image itself.
    index, out = _training_stream(split, PipelineConfig(16, 16, None, augment="resize"))
    np.testing.assert_array_equal(out, pixels[index])
    # resize_flip: the image or its mirror, and both occur.
    flips = set()
    for seed in range(2):
        index, out = _training_stream(
            split, PipelineConfig(16, 16, None, augment="resize_flip"), seed
        )
        for image, i in zip(out, index):
            flipped = np.array_equal(image, pixels[i, :, ::-1])
            assert flipped or np.array_equal(image, pixels[i])
            flips.add(flipped)
    assert flips == {False, True}


def test_default_training_stream_is_unchanged_random_crop_flip(images):
    split, pixels = images
    default = _training_stream(split, PipelineConfig(16, 12, None))
    named = _training_stream(split, PipelineConfig(16, 12, None, augment="random_crop_flip"))
    np.testing.assert_array_equal(default[0], named[0])
    np.testing.assert_array_equal(default[1], named[1])
    # Random crops: not all of them are the centre crop.
    index, out = default
    assert not np.array_equal(out, pixels[index, 2:14, 2:14])
