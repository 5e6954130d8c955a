"""The tag-processing steps on inputs small enough to work by hand."""

import numpy as np
import pytest
from gensim.models import KeyedVectors

from wsdhash.tagging import processing


def _keyed(vectors: dict) -> KeyedVectors:
    keyed = KeyedVectors(vector_size=len(next(iter(vectors.values()))))
    keyed.add_vectors(list(vectors), np.array(list(vectors.values()), dtype=np.float32))
    return keyed


def test_candidate_keys_order_and_phrases():
    keys = processing.candidate_keys(" New York ")
    assert keys[0] == "New York"
    for variant in ("new york", "New_York", "new_york", "newyork", "NEW_YORK", "new-york"):
        assert variant in keys
    assert len(keys) == len(set(keys))
    assert processing.candidate_keys("   ") == []


def test_lookup_prefers_the_tag_as_written_then_variants():
    vectors = _keyed({"New_York": [1, 0], "dog": [0, 1], "Paris": [1, 1], "zero": [0, 0]})
    keys = processing.lookup_keys(["new york", "Dog", "paris", "zero", "cat"], vectors)
    # A zero vector has no direction: treated as no vector.
    assert keys == ["New_York", "dog", "Paris", None, None]


def test_select_tags_reasons_by_hand():
    # 4 images x 5 tags; counts = [3, 1, 0, 2, 0].
    tags = np.array([[1, 0, 0, 1, 0], [1, 1, 0, 0, 0], [1, 0, 0, 1, 0], [0, 0, 0, 0, 0]])
    keys = ["a", None, "c", "d", None]
    selection = processing.select_tags(keys, tags, min_count=2)
    np.testing.assert_array_equal(selection.counts, [3, 1, 0, 2, 0])
    np.testing.assert_array_equal(selection.kept, [0, 3])
    # One reason each, the first that applies: absent (0 images), no vector, rare.
    np.testing.assert_array_equal(selection.dropped["absent"], [2, 4])
    np.testing.assert_array_equal(selection.dropped["no_vector"], [1])
    np.testing.assert_array_equal(selection.dropped["rare"], [])
    # min_count=0 keeps tags with a vector even when absent (nothing is "absent").
    loose = processing.select_tags(keys, tags, min_count=0)
    np.testing.assert_array_equal(loose.kept, [0, 2, 3])
    np.testing.assert_array_equal(loose.dropped["no_vector"], [1, 4])
    assert len(loose.dropped["absent"]) == 0


def _slow_conditional(tags):
    n, t = tags.shape
    out = np.zeros((t, t))
    for a in range(t):
        n_a = sum(tags[i, a] for i in range(n))
        for b in range(t):
            if a != b and n_a:
                out[a, b] = sum(tags[i, a] and tags[i, b] for i in range(n)) / n_a
    return out


def test_conditional_probabilities_vs_slow_loop():
    rng = np.random.default_rng(0)
    tags = (rng.random((40, 9)) < 0.3).astype(np.uint8)
    tags[:, 4] = 0  # an unseen tag: zero row
    got = processing.conditional_probabilities(processing.cooccurrence_counts(tags))
    np.testing.assert_allclose(got, _slow_conditional(tags))
    assert not got[4].any()


def test_correlation_graph_threshold_and_weighting():
    # a on 4 images, b on 2 (both with a), c on 1 (with a).
    tags = np.array([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 0, 0]])
    # P(b|a)=0.5, P(c|a)=0.25, P(a|b)=1, P(c|b)=0.5, P(a|c)=1, P(b|c)=1.
    binary = processing.correlation_graph(tags, threshold=0.5, min_cooccurrence=1)
    np.testing.assert_array_equal(binary, [[0, 1, 0], [1, 0, 1], [1, 1, 0]])
    # N_ac = N_bc = 1 < 2: the edges that rest on one image go.
    floor = processing.correlation_graph(tags, threshold=0.5, min_cooccurrence=2)
    np.testing.assert_array_equal(floor, [[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    weighted = processing.correlation_graph(
        tags, threshold=0.5, min_cooccurrence=1, weighting="probability"
    )
    np.testing.assert_allclose(weighted, [[0, 0.5, 0], [1, 0, 0.5], [1, 1, 0]])
    with pytest.raises(ValueError, match="threshold"):
        processing.correlation_graph(tags, threshold=1.5)


def test_enhancement_formula_by_hand():
    embeddings = np.array([[2.0, 0, 0], [0, 3.0, 0], [0, 0, 1.0]])
    adjacency = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=float)
    got = processing.enhance_embeddings(embeddings, adjacency, weight=0.5)
    # a: u_a + 0.5 * (u_b + u_c) / 2 = (1, .25, .25); b: (.5, 1, 0); c unchanged.
    expected = np.array([[1, 0.25, 0.25], [0.5, 1, 0], [0, 0, 1]])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected)
    np.testing.assert_allclose(
        processing.enhance_embeddings(embeddings, adjacency, weight=0.0), np.eye(3)
    )


def _synonym_vectors():
    # Tags 1 and 3 are near-identical synonyms; the rest are orthogonal.
    embeddings = np.eye(5)
    embeddings[3] = embeddings[1] + 0.05 * embeddings[4]
    return embeddings


@pytest.mark.parametrize("method", ["dbscan", "agglomerative"])
def test_exactly_the_synonym_pair_merges(method):
    groups = processing.merge_groups(_synonym_vectors(), method=method, eps=0.1)
    assert groups == [[0], [1, 3], [2], [4]]


def test_dbscan_min_samples_and_chaining():
    # Points on a chain 0-1-2 (neighbours 0.05 apart), 3 far away.
    angle = np.array([0.0, 0.3, 0.6, 2.0])
    embeddings = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    distances = processing.cosine_distances(embeddings)
    eps = 1 - np.cos(0.35)
    labels = processing.dbscan_labels(distances, eps=eps, min_samples=2)
    assert processing.groups_from_labels(labels) == [[0, 1, 2], [3]]
    # min_samples=3: only point 1 is core; 0 and 2 are its border points.
    labels = processing.dbscan_labels(distances, eps=eps, min_samples=3)
    assert processing.groups_from_labels(labels) == [[0, 1, 2], [3]]
    labels = processing.dbscan_labels(distances, eps=eps, min_samples=4)
    assert processing.groups_from_labels(labels) == [[0], [1], [2], [3]]


def test_merged_embedding_is_normalised_mean():
    embeddings = np.array([[3.0, 0], [0, 1.0], [1.0, 1.0]])
    got = processing.merged_embeddings(embeddings, [[0, 1], [2]])
    np.testing.assert_allclose(got, [[np.sqrt(0.5), np.sqrt(0.5)], [np.sqrt(0.5), np.sqrt(0.5)]])


def test_process_tags_end_to_end_small():
    vocabulary = ["dog", "Puppy", "sky", "nikon", "unknownword", "tree"]
    vectors = _keyed(
        {
            "dog": [1, 0, 0, 0],
            "puppy": [0.99, 0.05, 0, 0],
            "sky": [0, 1, 0, 0],
            "nikon": [0, 0, 1, 0],
            "tree": [0, 0, 0, 1],
        }
    )
    tags = np.array(
        [
            [1, 0, 1, 0, 1, 0],
            [0, 1, 1, 0, 0, 0],
            [1, 0, 0, 1, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ]
    )
    result = processing.process_tags(vocabulary, tags, vectors, min_count=1, merge_eps=0.05)
    np.testing.assert_array_equal(result.selection.dropped["no_vector"], [4])
    np.testing.assert_array_equal(result.selection.dropped["absent"], [5])  # "tree": 0 images
    np.testing.assert_array_equal(result.selection.dropped["rare"], [])
    assert "merge_fallback" not in result.parameters
    assert result.merge_map == {0: [0, 1], 1: [2], 2: [3]}
    assert result.group_names == ["dog|Puppy", "sky", "nikon"]
    np.testing.assert_array_equal(
        result.merged_tag_matrix, [[1, 1, 0], [1, 1, 0], [1, 0, 1], [0, 0, 0]]
    )
    np.testing.assert_allclose(np.linalg.norm(result.final_embeddings, axis=1), 1, rtol=1e-6)


def test_process_tags_errors():
    vectors = _keyed({"dog": [1.0, 0]})
    with pytest.raises(ValueError, match="3 words but the tag matrix has shape \\(2, 2\\)"):
        processing.process_tags(["a", "b", "c"], np.zeros((2, 2)), vectors)
    with pytest.raises(
        ValueError, match="No tag left of 2: 0 are on no training image, 2 have no word vector"
    ):
        processing.process_tags(["cat", "sky"], np.ones((2, 2)), vectors)


def test_failed_merge_by_hand():
    # 6 images x 5 kept tags.
    tags = np.array(
        [
            [1, 0, 0, 0, 0],
            [1, 0, 0, 0, 0],
            [0, 1, 0, 0, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 0, 1, 1],
            [0, 0, 0, 0, 0],  # untagged: not counted
        ]
    )
    assert processing.failed_merge([[0], [1], [2], [3], [4]], tags) is None
    assert processing.failed_merge([[0, 1], [2], [3, 4]], tags) is None  # 3 of 5 images
    # 3 of 5 tags in one group.
    assert "holds 3 of the 5 kept tags" in processing.failed_merge([[0, 1, 2], [3], [4]], tags)
    # Covering 3 of 5 tagged images is fine when one member alone covers 2 of them...
    assert processing.failed_merge([[0, 2], [1], [3], [4]], tags) is None
    # ... not when the group triples its most frequent member (1 image -> 3 of 4).
    spread = np.hstack([np.eye(4, dtype=int), np.eye(4, dtype=int)[:, :2]])  # 6 tags
    assert processing.failed_merge([[0], [1], [2], [3], [4, 5]], spread) is None
    failure = processing.failed_merge([[0, 1, 2], [3], [4], [5]], spread)
    assert failure == (
        "one group of 3 tags covers 3 of the 4 tagged training images (its most frequent "
        "tag alone: 1)"
    )


def test_a_collapsed_clustering_falls_back_to_no_merging():
    # Every word vector nearly the same: DBSCAN at eps 0.3 puts all tags in one group.
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(8)]
    vectors = _keyed({w: (np.ones(4) + 0.01 * rng.normal(size=4)).tolist() for w in words})
    tags = (rng.random((40, 8)) < 0.3).astype(np.uint8)
    tags[:, 0] = 1  # at least one tag per image
    messages = []
    result = processing.process_tags(words, tags, vectors, progress=messages.append)
    assert len(result.merge_map) == 8 and all(len(g) == 1 for g in result.merge_map.values())
    assert "holds 8 of the 8 kept tags" in result.parameters["merge_fallback"]
    assert any("synonym merging failed" in m for m in messages)
    np.testing.assert_array_equal(result.merged_tag_matrix, tags)
