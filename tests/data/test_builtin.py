"""Tests of the built-in synthetic dataset (`wsdhash.data.builtin`)."""

import hashlib
import json
import os

import cv2
import numpy as np
import pytest

from wsdhash.data import builtin
from wsdhash.data.builtin import CONCEPT_SYNONYMS, CONCEPTS, NOISE_TAGS, generate_builtin

SMALL = {"num_train": 60, "num_query": 20, "num_database": 60}
MEDIUM = {"num_train": 1500, "num_query": 10, "num_database": 10}


def _file_hashes(root) -> dict[str, str]:
    """sha256 of every file under root, keyed by relative path."""
    hashes = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                hashes[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return hashes


def _lines(root, name) -> list[str]:
    with open(os.path.join(root, name), encoding="utf-8") as f:
        text = f.read()
    assert text.endswith("\n"), f"{name} must end with a newline"
    return text[:-1].split("\n")


def _matrix(root, name) -> np.ndarray:
    return np.loadtxt(os.path.join(root, name), dtype=np.int64, ndmin=2)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small_seed0")
    info = generate_builtin(root, seed=0, num_workers=0, **SMALL)
    return root, info


@pytest.fixture(scope="module")
def small_seed1(tmp_path_factory):
    root = tmp_path_factory.mktemp("small_seed1")
    generate_builtin(root, seed=1, num_workers=0, **SMALL)
    return root


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    root = tmp_path_factory.mktemp("medium")
    info = generate_builtin(root, seed=0, **MEDIUM)
    tags = _matrix(root, "train_tag.txt")
    labels = _matrix(root, "train_label.txt")
    return root, info, tags, labels


# ---- Determinism -------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(small, tmp_path):
    root, _ = small
    # Two worker processes, so chunking and process boundaries are exercised too.
    generate_builtin(tmp_path, seed=0, num_workers=2, **SMALL)
    expected, actual = _file_hashes(root), _file_hashes(tmp_path)
    assert len(expected) == 9 + 1 + sum(SMALL.values())  # text, json, images
    assert actual == expected


def test_different_seed_gives_different_data(small, small_seed1):
    root, _ = small
    a, b = _file_hashes(root), _file_hashes(small_seed1)
    assert a.keys() == b.keys()
    for name in ("train_tag.txt", "train_label.txt", "database_label.txt"):
        assert a[name] != b[name], name
    images = [name for name in a if name.startswith("images")]
    assert sum(a[name] != b[name] for name in images) == len(images)


def test_image_depends_only_on_seed_and_index(small, medium):
    # Image i is drawn from (seed, i) alone: the small dataset's images are the first
    # images of the medium one, although the split sizes differ.
    small_root, _ = small
    medium_root, _, _, _ = medium
    a, b = _file_hashes(small_root), _file_hashes(medium_root)
    for i in range(SMALL["num_train"]):
        name = os.path.join("images", f"{i:06d}.png")
        assert a[name] == b[name], name
    np.testing.assert_array_equal(
        _matrix(small_root, "train_label.txt"), _matrix(medium_root, "train_label.txt")[:60]
    )


# ---- Format ------------------------------------------------------------------------------


def test_wsdhq_layout(small):
    root, info = small
    counts = {
        "train": SMALL["num_train"],
        "test": SMALL["num_query"],
        "database": SMALL["num_database"],
    }
    assert (info.num_train, info.num_query, info.num_database) == tuple(counts.values())
    assert _lines(root, "label_names.txt") == list(CONCEPTS)
    assert len(CONCEPTS) >= 12 and info.num_concepts == len(CONCEPTS)
    vocab = _lines(root, "tag_vocab.txt")
    assert vocab == sorted(vocab) == list(info.tag_vocab)
    assert len(set(vocab)) == len(vocab)

    splits = {}
    for split, n in counts.items():
        paths = _lines(root, f"{split}_img.txt")
        assert len(paths) == n
        for path in paths:
            assert not os.path.isabs(path) and path.startswith("images/")
            image = cv2.imread(os.path.join(root, path), cv2.IMREAD_UNCHANGED)
            assert image is not None and image.shape == (64, 64, 3) and image.dtype == np.uint8
        labels = _matrix(root, f"{split}_label.txt")
        assert labels.shape == (n, len(CONCEPTS))
        assert set(np.unique(labels)) <= {0, 1}
        splits[split] = set(paths)
    assert not splits["train"] & splits["test"]
    assert not splits["train"] & splits["database"]
    assert not splits["test"] & splits["database"]

    tags = _matrix(root, "train_tag.txt")
    assert tags.shape == (counts["train"], len(vocab)) == (info.num_train, info.num_tags)
    assert set(np.unique(tags)) == {0, 1}
    # The vocabulary holds exactly the words used in the train split.
    assert tags.sum(0).min() >= 1

    with open(os.path.join(root, builtin.INFO_FILE), encoding="utf-8") as f:
        record = json.load(f)
    assert record["format_version"] == builtin.FORMAT_VERSION
    assert record["params"]["seed"] == 0 and record["params"]["num_query"] == 20
    leftovers = [n for n in os.listdir(root) + os.listdir(root / "images") if n.endswith(".tmp")]
    assert not leftovers


def test_large_jpeg_images(tmp_path):
    info = generate_builtin(
        tmp_path, image_size=256, image_format="jpeg", num_train=3, num_query=2, num_database=2
    )
    assert info.image_format == "jpg"
    for split in ("train", "test", "database"):
        for path in _lines(tmp_path, f"{split}_img.txt"):
            assert path.endswith(".jpg")
            image = cv2.imread(os.path.join(tmp_path, path))
            assert image.shape == (256, 256, 3)
            assert image.std() > 5  # not a blank canvas


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="image_format"):
        generate_builtin(tmp_path, image_format="gif", **SMALL)
    with pytest.raises(ValueError, match="num_query"):
        generate_builtin(tmp_path, num_train=5, num_query=0, num_database=5)


# ---- Statistical properties --------------------------------------------------------------


def _concept_columns(vocab, concept):
    return [vocab.index(w) for w in (concept,) + CONCEPT_SYNONYMS[concept] if w in vocab]


def test_labels_cover_all_concepts_with_one_to_three_per_image(medium):
    _, _, _, labels = medium
    assert (labels.sum(0) > 30).all()
    per_image = labels.sum(1)
    assert per_image.min() == 1 and per_image.max() == 3
    assert 0.2 < (per_image > 1).mean() < 0.8


def test_concept_tags_are_frequent_but_incomplete_and_rare_when_absent(medium):
    _, info, tags, labels = medium
    vocab = list(info.tag_vocab)
    synonyms_used = 0
    for j, concept in enumerate(CONCEPTS):
        columns = _concept_columns(vocab, concept)
        tagged = tags[:, columns].any(1)
        present = labels[:, j] == 1
        assert 0.4 < tagged[present].mean() < 0.95, concept
        assert tagged[~present].mean() < 0.03, concept
        synonyms_used += sum(
            tags[:, vocab.index(w)].sum() > 0 for w in CONCEPT_SYNONYMS[concept] if w in vocab
        )
    assert synonyms_used >= len(CONCEPTS)


def test_noise_tags_untagged_images_and_long_tail(medium):
    _, info, tags, _ = medium
    vocab = list(info.tag_vocab)
    assert len(set(NOISE_TAGS)) >= 60
    assert len(set(NOISE_TAGS) & set(vocab)) >= 50
    assert all(w.islower() or w.isdigit() for w in vocab)
    assert 0.02 < (tags.sum(1) == 0).mean() < 0.12
    counts = np.sort(tags.sum(0))[::-1]
    assert counts[0] > 10 * np.median(counts)
    # The most frequent tags carry no content: a noise word tops the list.
    assert vocab[int(np.argmax(tags.sum(0)))] in NOISE_TAGS


def _hue_histograms(root, paths, bins=18):
    """Square-rooted hue histograms of the saturated (= mostly object) pixels."""
    features = []
    for path in paths:
        hsv = cv2.cvtColor(cv2.imread(os.path.join(root, path)), cv2.COLOR_BGR2HSV)
        hsv = hsv.reshape(-1, 3).astype(np.int64)
        keep = (hsv[:, 1] > 150) & (hsv[:, 2] > 120)
        counts = np.bincount(hsv[keep, 0] * bins // 180, minlength=bins).astype(float)
        features.append(np.sqrt(counts / max(counts.sum(), 1.0)))
    return np.array(features)


def _mean_average_precision(distances, relevant):
    """mAP over all items; each item queries all others (slow loop on purpose)."""
    precisions = []
    for i in range(len(distances)):
        order = np.argsort(distances[i], kind="stable")
        order = order[order != i]
        hits = relevant[i, order]
        if hits.sum() == 0:
            continue
        precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        precisions.append((precision_at * hits).sum() / hits.sum())
    return float(np.mean(precisions))


def test_retrieval_is_neither_trivial_nor_hopeless(medium):
    root, _, _, labels = medium
    n = 300
    features = _hue_histograms(root, _lines(root, "train_img.txt")[:n])
    labels = labels[:n]
    relevant = (labels @ labels.T) > 0
    distances = ((features[:, None] - features[None]) ** 2).sum(-1)
    hue_map = _mean_average_precision(distances, relevant)
    random_map = _mean_average_precision(np.random.default_rng(0).random((n, n)), relevant)
    assert random_map < 0.3
    assert hue_map > random_map + 0.1  # colour alone already helps ...
    assert hue_map < 0.8  # ... but shape matters: colours are shared between concepts


# ---- Reuse and protection of existing folders --------------------------------------------


def test_second_call_returns_without_rewriting(small):
    root, info = small
    stamps = {p: os.stat(os.path.join(root, p)).st_mtime_ns for p in _file_hashes(root)}
    again = generate_builtin(root, seed=0, **SMALL)
    assert again == info
    assert {p: os.stat(os.path.join(root, p)).st_mtime_ns for p in stamps} == stamps


def test_other_parameters_raise_unless_overwrite(small, small_seed1, tmp_path):
    root, _ = small
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_builtin(root, seed=1, **SMALL)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_builtin(root, seed=0, image_size=32, **SMALL)

    # Overwriting a larger dataset with a smaller one leaves no stale images behind.
    target = tmp_path / "data"
    generate_builtin(target, seed=0, num_train=70, num_query=20, num_database=60)
    info = generate_builtin(target, seed=1, overwrite=True, **SMALL)
    assert info.seed == 1
    assert _file_hashes(target) == _file_hashes(small_seed1)


def test_interrupted_generation_is_redone(small, tmp_path):
    root, _ = small
    generate_builtin(tmp_path, seed=0, **SMALL)
    # Simulate a crash: the marker is written last, so it is missing; a file is damaged.
    os.remove(tmp_path / builtin.INFO_FILE)
    (tmp_path / "train_tag.txt").write_text("garbage\n")
    generate_builtin(tmp_path, seed=0, **SMALL)
    assert _file_hashes(tmp_path) == _file_hashes(root)


def test_refuses_a_folder_with_foreign_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(FileExistsError, match="notes.txt"):
        generate_builtin(tmp_path, **SMALL)
    assert not (tmp_path / "images").exists()
