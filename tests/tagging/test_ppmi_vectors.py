"""PPMI-SVD tag vectors: a PPMI matrix worked by hand, invariants, and the pipeline."""

import math

import numpy as np
import pytest

from wsdhash.tagging import ppmi_vectors, process_tags

# Five tags a..e on nine images: {a,b} x3, {c,d} x3, {a,c}, {b} alone, {e} alone.
_TAGS = np.array(
    [[1, 1, 0, 0, 0]] * 3
    + [[0, 0, 1, 1, 0]] * 3
    + [[1, 0, 1, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1]],
    dtype=np.uint8,
)


def test_ppmi_worked_by_hand():
    # Pair counts: C_ab = 3, C_cd = 3, C_ac = 1 (both orders), so S = 14 and the row
    # sums are c = (4, 3, 4, 3, 0). PMI_ab = log(3 * 14 / (4 * 3)) = log(3.5),
    # PMI_cd = log(3 * 14 / (4 * 3)) = log(3.5), PMI_ac = log(1 * 14 / (4 * 4)) =
    # log(7/8) < 0, clipped to 0. The lone images add nothing; e has no pair at all.
    expected = np.zeros((5, 5))
    expected[0, 1] = expected[1, 0] = math.log(3.5)
    expected[2, 3] = expected[3, 2] = math.log(3.5)
    np.testing.assert_allclose(ppmi_vectors.ppmi_matrix(_TAGS), expected, atol=1e-12)


def test_context_smoothing_worked_by_hand():
    # alpha = 0.5: p_alpha(b) = sqrt(3) / (2 + sqrt(3) + 2 + sqrt(3)), p(a) = 4/14,
    # PMI_ab = log((3/14) / (4/14 * p_alpha(b))) = log(3 (4 + 2 sqrt 3) / (4 sqrt 3)).
    ppmi = ppmi_vectors.ppmi_matrix(_TAGS, context_smoothing=0.5)
    root3 = math.sqrt(3)
    assert ppmi[0, 1] == pytest.approx(math.log(3 * (4 + 2 * root3) / (4 * root3)))
    # The context c (row sum 4) gets p_alpha(c) = 2 / (4 + 2 sqrt 3) instead of 4/14.
    assert ppmi[3, 2] == pytest.approx(math.log(3 * (4 + 2 * root3) / (3 * 2)))
    assert not np.allclose(ppmi, ppmi.T)  # smoothing acts on the context side only


def _random_tags(seed=0, n=300, t=12):
    rng = np.random.default_rng(seed)
    return (rng.random((n, t)) < rng.uniform(0.05, 0.4, size=t)).astype(np.uint8)


def test_ppmi_is_symmetric_non_negative_with_zero_diagonal():
    ppmi = ppmi_vectors.ppmi_matrix(_random_tags())
    np.testing.assert_allclose(ppmi, ppmi.T, atol=1e-12)
    assert ppmi.min() >= 0 and np.all(np.diag(ppmi) == 0) and ppmi.max() > 0


def test_ppmi_follows_a_permutation_of_the_tag_columns():
    tags = _random_tags(1)
    order = np.random.default_rng(2).permutation(tags.shape[1])
    np.testing.assert_allclose(
        ppmi_vectors.ppmi_matrix(tags[:, order]),
        ppmi_vectors.ppmi_matrix(tags)[np.ix_(order, order)],
        atol=1e-12,
    )


def test_ppmi_of_images_without_pairs_is_zero():
    assert not ppmi_vectors.ppmi_matrix(np.eye(4, dtype=np.uint8)).any()


def test_truncated_svd_reconstructs_a_low_rank_matrix():
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(9, 3)) @ rng.normal(size=(3, 9))  # rank 3
    u, s, vt = ppmi_vectors.truncated_svd(matrix, 3)
    assert u.shape == (9, 3) and s.shape == (3,) and vt.shape == (3, 9)
    np.testing.assert_allclose(u @ np.diag(s) @ vt, matrix, atol=1e-10)
    np.testing.assert_allclose(u.T @ u, np.eye(3), atol=1e-10)
    # Sign convention: each column's largest-magnitude entry is positive.
    assert np.all(u[np.argmax(np.abs(u), axis=0), np.arange(3)] > 0)
    # Rank 2 of a rank-3 matrix: the error is the dropped singular value (Eckart-Young).
    u2, s2, vt2 = ppmi_vectors.truncated_svd(matrix, 2)
    assert np.linalg.norm(matrix - u2 @ np.diag(s2) @ vt2, 2) == pytest.approx(s[2])
    assert ppmi_vectors.truncated_svd(matrix, 50)[1].shape == (9,)  # capped


def test_embeddings_reproduce_a_psd_ppmi_and_are_deterministic():
    tags = _random_tags(4)
    ppmi = ppmi_vectors.ppmi_matrix(tags)
    first = ppmi_vectors.ppmi_svd_embeddings(tags, dim=50, eigenvalue_power=0.5)
    assert first.shape == (12, 12)
    np.testing.assert_array_equal(first, ppmi_vectors.ppmi_svd_embeddings(tags, dim=50))
    # W = U S^(1/2) with full rank: W W^T = U S U^T, equal to PPMI up to the sign of its
    # eigenvalues, so |W W^T| = |PPMI| entrywise only when PPMI is PSD; check the general
    # identity instead: W S^(1/2) V^T = PPMI.
    _, s, vt = ppmi_vectors.truncated_svd(ppmi, 12)
    np.testing.assert_allclose(first * np.sqrt(s) @ vt, ppmi, atol=1e-9)


def test_tags_without_pairs_get_no_vector_and_are_dropped():
    vocabulary = ["a", "b", "c", "d", "e"]
    # d = 4 keeps the PPMI's whole rank (two 2 x 2 blocks with equal singular values).
    vectors = ppmi_vectors.ppmi_svd_vectors(vocabulary, _TAGS, dim=4)
    assert vectors.vector_size == 4
    assert sorted(vectors.key_to_index) == ["a", "b", "c", "d"]
    result = process_tags(vocabulary, _TAGS, vectors, center=True, merge_method="none")
    assert list(result.selection.dropped["no_vector"]) == [4]
    assert [members for members in result.merge_map.values()] == [[0], [1], [2], [3]]
    # a and b (which co-occur) end closer than a and d (which never do).
    e = result.final_embeddings
    assert e[0] @ e[1] > e[0] @ e[3]


def test_shared_contexts_make_synonyms_close():
    # "car" and "auto" never co-occur but share their contexts ("road", "wheel"): the
    # second-order similarity that lets synonym merging work without words.
    vocabulary = ["car", "auto", "road", "wheel", "sea", "boat"]
    rows = [[1, 0, 1, 1, 0, 0]] * 5 + [[0, 1, 1, 1, 0, 0]] * 5 + [[0, 0, 0, 0, 1, 1]] * 6
    vectors = ppmi_vectors.ppmi_svd_vectors(vocabulary, np.array(rows), dim=3)
    unit = {w: vectors[w] / np.linalg.norm(vectors[w]) for w in vocabulary}
    assert unit["car"] @ unit["auto"] > 0.99
    assert abs(unit["car"] @ unit["sea"]) < 0.1


def test_bad_arguments():
    with pytest.raises(ValueError, match="context smoothing"):
        ppmi_vectors.ppmi_matrix(_TAGS, context_smoothing=0)
    with pytest.raises(ValueError, match="dimension"):
        ppmi_vectors.truncated_svd(np.eye(3), 0)
    with pytest.raises(ValueError, match="one column per tag"):
        ppmi_vectors.ppmi_svd_vectors(["a"], _TAGS)
