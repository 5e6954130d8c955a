"""The tag-processing steps as pure functions, and `process_tags` chaining them.

Our documented reconstruction of WSDHQ's `tag_preproc.py` (docs/methods.md, "WSDHQ: tag
processing"; the original is not public). Letters: N training images, T raw tags, T_k kept tags,
T' merged tags, D embedding dimension.

1. Lookup: each raw tag is matched against the word vectors through `candidate_keys`
   (as written, lowercase, phrase variants with "_", " ", "", "-" between words, and
   Title/UPPER case); the first variant with a vector wins.
   Optionally (`center`) the mean vector of the kept tags is subtracted first.
2. Selection: drop tags absent from the training split (reason "absent", when
   `min_count` >= 1; checked first), tags without a (non-zero) vector ("no_vector") and
   tags on fewer than `min_count` training images ("rare").
3. Correlation graph over the kept tags, ML-GCN style: N_ab = #images with a and b,
   N_a = #images with a, P(b|a) = N_ab / N_a. Edge a->b when P(b|a) >= `threshold` and
   N_ab >= `min_cooccurrence`; A_ab = 1 ("binary") or P(b|a) ("probability"); A_aa = 0.
4. Enhancement: with unit vectors u_a = e_a / |e_a|,
       e'_a = normalise(u_a + alpha * sum_b A_ab u_b / sum_b A_ab),
   and e'_a = u_a for a tag without edges.
5. Synonym merging: cluster on cosine distance 1 - cos (of the raw vectors by default,
   `merge_on`), DBSCAN (eps, min_samples; noise points stay singletons) or average-
   linkage agglomerative clustering cut at a distance threshold. Merged embedding =
   normalise(mean of the members' enhanced embeddings); merged label = OR of the
   members' columns. Merged ids follow the smallest raw column index of each group, so
   the output order follows the vocabulary order.
   A clustering that collapses the vocabulary is refused (`failed_merge`): a group of
   two or more tags holding more than half of the kept tags (with at least four kept),
   or covering more than half of the tagged training images and more than 1.5 times
   the images of its most frequent member. Then no tags are merged, and the result's
   `parameters["merge_fallback"]` (shown in report.md) says why.

Reference:
    Wang et al., "Weakly Supervised Deep Hyperspherical Quantization for Image
    Retrieval", AAAI 2021. Chen et al., "Multi-Label Image Recognition with Graph
    Convolutional Networks" (ML-GCN), CVPR 2019. Ester et al., "A Density-Based
    Algorithm for Discovering Clusters" (DBSCAN), KDD 1996.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

import numpy as np
from gensim.models import KeyedVectors
from scipy.cluster import hierarchy
from scipy.sparse import csgraph, csr_matrix
from scipy.spatial.distance import squareform

CORRELATION_WEIGHTINGS = ("binary", "probability")
MERGE_METHODS = ("dbscan", "agglomerative", "none")
MERGE_ON = ("raw", "enhanced")
DROP_REASONS = ("absent", "no_vector", "rare")
MAX_GROUP_TAG_FRACTION = 0.5  # a merge group holding more of the kept tags has failed
MAX_GROUP_IMAGE_FRACTION = 0.5  # ... or covering more of the tagged training images
MIN_COVERAGE_GAIN = 1.5  # ... and this many times its most frequent member's images

_WORD_SEPARATORS = re.compile(r"[\s_\-]+")


# --- 1. Lookup ------------------------------------------------------------------------


def candidate_keys(tag: str) -> list[str]:
    """Spellings of `tag` to try against the word vectors, most faithful first.

    GoogleNews joins phrases with "_" and is case-sensitive ("New_York"); GloVe is
    lowercase; Flickr tags are often run together ("newyork"). Order: the stripped tag,
    its lowercase, then for every separator ("_", " ", "", "-") the words as written,
    lowercase, Title case and UPPER case. Duplicates are removed keeping the first.

    Args:
        tag: a raw vocabulary entry.

    Returns:
        Non-empty list of distinct candidate keys (empty only for a blank tag).
    """
    stripped = tag.strip()
    if not stripped:
        return []
    words = [w for w in _WORD_SEPARATORS.split(stripped) if w]
    candidates = [stripped, stripped.lower()]
    for separator in ("_", " ", "", "-"):
        joined = separator.join(words)
        candidates += [
            joined,
            joined.lower(),
            separator.join(w[:1].upper() + w[1:].lower() for w in words),
            joined.upper(),
        ]
    return list(dict.fromkeys(candidates))


def all_candidate_keys(vocabulary: Sequence[str]) -> set[str]:
    """Every key `lookup_keys` may ask for: what a restricted vector reader must keep."""
    return {key for tag in vocabulary for key in candidate_keys(tag)}


def lookup_keys(vocabulary: Sequence[str], vectors: KeyedVectors) -> list[str | None]:
    """The first candidate key of each tag that has a non-zero vector, else None."""
    keys: list[str | None] = []
    for tag in vocabulary:
        found = None
        for key in candidate_keys(tag):
            if key in vectors.key_to_index and np.any(vectors[key]):
                found = key
                break
        keys.append(found)
    return keys


# --- 2. Selection ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TagSelection:
    """Which raw tags survive, and why the others were dropped.

    Attributes:
        kept: raw column indices kept, ascending, (T_k,).
        dropped: reason -> ascending raw column indices (reasons: `DROP_REASONS`).
        keys: the matched vector key of every raw tag (None without vector), (T,).
        counts: training images per raw tag, (T,).
    """

    kept: np.ndarray
    dropped: dict[str, np.ndarray]
    keys: tuple[str | None, ...]
    counts: np.ndarray


def select_tags(
    keys: Sequence[str | None], tag_matrix: np.ndarray, *, min_count: int = 1
) -> TagSelection:
    """Keeps tags with a vector that occur on at least `min_count` training images.

    Each dropped tag is reported once, under the first reason that applies: "absent"
    (on no training image, when min_count >= 1), "no_vector", "rare".

    Args:
        keys: matched vector key per raw tag (None = no vector), length T.
        tag_matrix: N x T 0/1 training tag matrix.
        min_count: minimum number of training images carrying the tag. The default 1
            drops only tags never seen in training, which can supervise nothing.

    Returns:
        A `TagSelection`.
    """
    counts = np.asarray(tag_matrix, dtype=bool).sum(axis=0).astype(np.int64)
    if len(keys) != counts.shape[0]:
        raise ValueError(f"{len(keys)} tag keys for a tag matrix with {counts.shape[0]} columns.")
    absent = (counts == 0) & (counts < min_count)
    no_vector = ~absent & np.array([k is None for k in keys], dtype=bool)
    rare = ~absent & ~no_vector & (counts < min_count)
    kept = np.flatnonzero(~absent & ~no_vector & ~rare)
    return TagSelection(
        kept=kept,
        dropped={
            "absent": np.flatnonzero(absent),
            "no_vector": np.flatnonzero(no_vector),
            "rare": np.flatnonzero(rare),
        },
        keys=tuple(keys),
        counts=counts,
    )


# --- 3. Correlation graph -------------------------------------------------------------


def cooccurrence_counts(tag_matrix: np.ndarray) -> np.ndarray:
    """N_ab = number of images tagged with both a and b; N_aa = N_a. Returns int64 (T, T)."""
    y = np.asarray(tag_matrix, dtype=bool).astype(np.float64)
    # Exact: sums of 0/1 products stay integers far below 2**53.
    return np.rint(y.T @ y).astype(np.int64)


def conditional_probabilities(cooccurrence: np.ndarray) -> np.ndarray:
    """P[a, b] = P(b | a) = N_ab / N_a, zero diagonal, zero rows for unseen tags. (T, T)."""
    counts = np.diag(cooccurrence).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        probabilities = np.where(
            counts[:, None] > 0, cooccurrence / np.maximum(counts[:, None], 1), 0.0
        )
    np.fill_diagonal(probabilities, 0.0)
    return probabilities


def correlation_graph(
    tag_matrix: np.ndarray,
    *,
    threshold: float = 0.4,
    min_cooccurrence: int = 2,
    weighting: str = "binary",
) -> np.ndarray:
    """Directed tag correlation graph A (T, T) from training co-occurrence.

    Edge a->b iff P(b|a) >= threshold and N_ab >= min_cooccurrence. ML-GCN binarises at
    threshold 0.4 (its COCO value) to drop the long tail of noisy co-occurrences; the
    count floor stops a tag seen once from being "certainly" correlated with everything
    on that one image.

    Args:
        tag_matrix: N x T 0/1 matrix.
        threshold: tau on P(b|a), in [0, 1].
        min_cooccurrence: minimum N_ab for an edge.
        weighting: "binary" (A_ab = 1) or "probability" (A_ab = P(b|a)).

    Returns:
        float64 (T, T) with A_aa = 0.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"correlation threshold must be in [0, 1], got {threshold}.")
    if weighting not in CORRELATION_WEIGHTINGS:
        raise ValueError(
            f"correlation weighting must be one of {CORRELATION_WEIGHTINGS}, got {weighting!r}."
        )
    cooccurrence = cooccurrence_counts(tag_matrix)
    probabilities = conditional_probabilities(cooccurrence)
    edges = (probabilities >= threshold) & (cooccurrence >= min_cooccurrence) & (probabilities > 0)
    np.fill_diagonal(edges, False)
    if weighting == "binary":
        return edges.astype(np.float64)
    return np.where(edges, probabilities, 0.0)


# --- 4. Enhancement -------------------------------------------------------------------


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows are an error (they have no direction)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"Cannot normalise zero rows {np.flatnonzero(norms[:, 0] == 0)[:10]}.")
    return matrix / norms


def enhance_embeddings(
    embeddings: np.ndarray, adjacency: np.ndarray, *, weight: float = 0.5
) -> np.ndarray:
    """Mixes each tag's unit embedding with the mean of its correlated tags' (module doc).

    e'_a = normalise(u_a + weight * sum_b A_ab u_b / sum_b A_ab); e'_a = u_a without edges.

    Args:
        embeddings: (T, D) raw embeddings.
        adjacency: (T, T) non-negative correlation graph, zero diagonal.
        weight: alpha >= 0; 0 returns the unit embeddings. At 0.5 a tag keeps the
            larger share of its own direction.

    Returns:
        float64 (T, D) unit rows.
    """
    if weight < 0:
        raise ValueError(f"enhance weight must be >= 0, got {weight}.")
    units = normalise_rows(embeddings)
    adjacency = np.asarray(adjacency, dtype=np.float64)
    degree = adjacency.sum(axis=1, keepdims=True)
    neighbours = np.divide(adjacency @ units, degree, out=np.zeros_like(units), where=degree > 0)
    mixed = units + weight * neighbours
    # A tag whose neighbour mean points exactly opposite could cancel; keep it as it was.
    zero = np.linalg.norm(mixed, axis=1) == 0
    mixed[zero] = units[zero]
    return normalise_rows(mixed)


# --- 5. Merging -----------------------------------------------------------------------


def cosine_distances(embeddings: np.ndarray) -> np.ndarray:
    """1 - cos between rows, clipped to [0, 2], exact zeros on the diagonal. (T, T)."""
    units = normalise_rows(embeddings)
    distances = np.clip(1.0 - units @ units.T, 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    return distances


def dbscan_labels(distances: np.ndarray, *, eps: float, min_samples: int = 2) -> np.ndarray:
    """DBSCAN on a precomputed distance matrix; noise gets its own singleton cluster.

    Neighbours are points at distance <= eps, the point itself included (as in
    scikit-learn). Core points (>= min_samples neighbours) linked by core-core
    neighbourhood form clusters; a border point joins its nearest core neighbour's
    cluster (deterministic, where the textbook algorithm depends on visiting order).
    With min_samples=2 every non-noise point is a core point, so this is
    single-linkage clustering cut at eps.

    Args:
        distances: (T, T) symmetric distances.
        eps: neighbourhood radius.
        min_samples: neighbours (self included) that make a core point, >= 1.

    Returns:
        int64 (T,) cluster ids, not yet in any particular order.
    """
    if eps < 0 or min_samples < 1:
        raise ValueError(f"Need eps >= 0 and min_samples >= 1, got {eps} and {min_samples}.")
    neighbours = distances <= eps
    core = neighbours.sum(axis=1) >= min_samples
    core_links = neighbours & core[:, None] & core[None, :]
    _, labels = csgraph.connected_components(csr_matrix(core_links), directed=False)
    labels = labels.astype(np.int64)
    next_label = labels.max() + 1 if len(labels) else 0
    for point in np.flatnonzero(~core):
        core_neighbours = np.flatnonzero(neighbours[point] & core)
        if len(core_neighbours):
            labels[point] = labels[core_neighbours[np.argmin(distances[point, core_neighbours])]]
        else:
            labels[point] = next_label  # noise: a singleton
            next_label += 1
    return labels


def agglomerative_labels(
    distances: np.ndarray, *, threshold: float, linkage: str = "average"
) -> np.ndarray:
    """Hierarchical clustering cut where merge distances exceed `threshold`.

    Average linkage (the default) avoids the chaining of single linkage: a group is
    formed only when its members are close on average, not just pairwise in a chain.

    Args:
        distances: (T, T) symmetric distances.
        threshold: clusters are merged while their linkage distance is <= threshold.
        linkage: scipy linkage method ("average", "complete", "single", ...).

    Returns:
        int64 (T,) cluster ids.
    """
    if len(distances) < 2:
        return np.zeros(len(distances), dtype=np.int64)
    condensed = squareform(np.asarray(distances, dtype=np.float64), checks=False)
    tree = hierarchy.linkage(condensed, method=linkage)
    return hierarchy.fcluster(tree, t=threshold, criterion="distance").astype(np.int64)


def groups_from_labels(labels: np.ndarray) -> list[list[int]]:
    """Cluster labels -> member-position lists, ordered by each group's smallest member."""
    groups: dict[int, list[int]] = {}
    for position, label in enumerate(np.asarray(labels).tolist()):
        groups.setdefault(label, []).append(position)
    return sorted(groups.values(), key=lambda members: members[0])


def merge_groups(
    embeddings: np.ndarray,
    *,
    method: str = "dbscan",
    eps: float = 0.3,
    min_samples: int = 2,
    linkage: str = "average",
) -> list[list[int]]:
    """Groups rows of `embeddings` whose cosine distance is small (synonyms).

    Args:
        embeddings: (T, D) embeddings to cluster.
        method: "dbscan", "agglomerative" or "none" (every row its own group).
        eps: DBSCAN radius, or the agglomerative cut, in cosine distance. 0.3 means
            cosine similarity >= 0.7, where GoogleNews puts near-synonyms and
            inflections ("flower"/"flowers") but few merely related words.
        min_samples: DBSCAN core-point size (self included).
        linkage: agglomerative linkage method.

    Returns:
        Groups of row positions, each ascending, ordered by first member.
    """
    if method not in MERGE_METHODS:
        raise ValueError(f"merge method must be one of {MERGE_METHODS}, got {method!r}.")
    if method == "none" or len(embeddings) == 0:
        return [[i] for i in range(len(embeddings))]
    distances = cosine_distances(embeddings)
    if method == "dbscan":
        labels = dbscan_labels(distances, eps=eps, min_samples=min_samples)
    else:
        labels = agglomerative_labels(distances, threshold=eps, linkage=linkage)
    return groups_from_labels(labels)


def failed_merge(groups: Sequence[Sequence[int]], tag_matrix: np.ndarray) -> str | None:
    """Why a clustering collapsed the vocabulary (module doc, step 5), or None.

    Args:
        groups: merge groups of column positions of `tag_matrix`.
        tag_matrix: N x T_k 0/1 training tags of the kept tags.
    """
    tag_matrix = np.asarray(tag_matrix, dtype=bool)
    num_tags = tag_matrix.shape[1]
    tagged = max(int(tag_matrix.any(axis=1).sum()), 1)
    for members in groups:
        if len(members) < 2:
            continue
        if num_tags >= 4 and len(members) > MAX_GROUP_TAG_FRACTION * num_tags:
            return f"one group holds {len(members)} of the {num_tags} kept tags"
        covered = int(tag_matrix[:, members].any(axis=1).sum())
        largest = int(tag_matrix[:, members].sum(axis=0).max())
        if covered > MAX_GROUP_IMAGE_FRACTION * tagged and covered > MIN_COVERAGE_GAIN * largest:
            return (
                f"one group of {len(members)} tags covers {covered} of the {tagged} tagged "
                f"training images (its most frequent tag alone: {largest})"
            )
    return None


def merged_embeddings(embeddings: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    """Row g = normalise(mean of the (unit) rows in group g). float64 (T', D)."""
    units = normalise_rows(embeddings)
    return normalise_rows(np.stack([units[list(members)].mean(axis=0) for members in groups]))


# --- Pipeline -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TagProcessingResult:
    """Everything `process_tags` computed; `files.write_outputs` writes it.

    Attributes:
        vocabulary: the T raw tag strings.
        selection: kept/dropped raw tags and their vector keys.
        merge_map: merged id -> ascending raw column indices; ids 0..T'-1 in insertion
            order, which is the row order of `final_embeddings`.
        final_embeddings: float32 (T', D) unit rows (FinalTagEmbs.txt).
        merged_tag_matrix: uint8 (N, T') OR of each group's raw columns.
        adjacency: (T_k, T_k) correlation graph over the kept tags.
        parameters: the settings used, for the report and reproducibility.
    """

    vocabulary: tuple[str, ...]
    selection: TagSelection
    merge_map: dict[int, list[int]]
    final_embeddings: np.ndarray
    merged_tag_matrix: np.ndarray
    adjacency: np.ndarray
    parameters: dict

    @property
    def group_names(self) -> list[str]:
        """One readable name per merged tag: its member words joined by '|'."""
        return ["|".join(self.vocabulary[i] for i in group) for group in self.merge_map.values()]


def process_tags(
    vocabulary: Sequence[str],
    tag_matrix: np.ndarray,
    vectors: KeyedVectors,
    *,
    min_count: int = 1,
    correlation_threshold: float = 0.4,
    min_cooccurrence: int = 2,
    correlation_weighting: str = "binary",
    enhance_weight: float = 0.5,
    merge_method: str = "dbscan",
    merge_eps: float = 0.3,
    merge_min_samples: int = 2,
    merge_linkage: str = "average",
    merge_on: str = "raw",
    center: bool = False,
    progress: Callable[[str], None] | None = None,
) -> TagProcessingResult:
    """Raw vocabulary + training tags + word vectors -> merged tags and embeddings.

    Args:
        vocabulary: T raw tag strings, the columns of `tag_matrix`.
        tag_matrix: N x T 0/1 training tag matrix (training images only).
        vectors: word vectors (restricted to the candidate keys is enough).
        min_count: see `select_tags`.
        correlation_threshold, min_cooccurrence, correlation_weighting: see
            `correlation_graph`.
        enhance_weight: alpha of `enhance_embeddings`.
        merge_method, merge_eps, merge_min_samples, merge_linkage: see `merge_groups`.
        merge_on: cluster the "raw" word vectors (default: synonymy is a property of
            the words; the enhanced vectors of strongly co-occurring non-synonyms such
            as "circle" and "red" are pulled together and would merge) or the
            "enhanced" ones. The merged embedding always averages the enhanced ones.
        center: subtract the mean of the kept tags' vectors before everything else.
            Word2vec trained on a small tag corpus gives every word a large common
            component (all cosines ~0.4-0.8), which makes any fixed radius merge
            everything; centring removes it ("all-but-the-top", Mu & Viswanath, ICLR
            2018). Ignored with fewer than two kept tags.
        progress: optional callback receiving one-line progress messages.

    Returns:
        A `TagProcessingResult`.

    Raises:
        ValueError: shapes disagree, a parameter is out of range, or no tag survives.
    """
    say = progress or _silent
    vocabulary, tag_matrix = tuple(vocabulary), np.asarray(tag_matrix)
    _check_arguments(vocabulary, tag_matrix, merge_on=merge_on, min_count=min_count)
    parameters = {
        "min_count": min_count,
        "correlation_threshold": correlation_threshold,
        "min_cooccurrence": min_cooccurrence,
        "correlation_weighting": correlation_weighting,
        "enhance_weight": enhance_weight,
        "merge_method": merge_method,
        "merge_eps": merge_eps,
        "merge_min_samples": merge_min_samples,
        "merge_linkage": merge_linkage,
        "merge_on": merge_on,
        "center": center,
    }
    keys = lookup_keys(vocabulary, vectors)
    selection = _selected_tags(keys, tag_matrix, min_count, say)
    raw = _kept_vectors(vectors, keys, selection.kept, center=center)  # (T_k, D)
    kept_matrix = np.asarray(tag_matrix[:, selection.kept], dtype=bool)
    adjacency, enhanced = _enhanced_by_correlation(raw, kept_matrix, parameters, say)
    groups, fallback = _synonym_groups(raw, enhanced, kept_matrix, parameters, say)
    if fallback:
        parameters["merge_fallback"] = f"no merging: {fallback}"
    return TagProcessingResult(
        vocabulary=vocabulary,
        selection=selection,
        merge_map={g: [int(selection.kept[p]) for p in group] for g, group in enumerate(groups)},
        final_embeddings=merged_embeddings(enhanced, groups).astype(np.float32),
        merged_tag_matrix=_merged_tag_matrix(kept_matrix, groups),
        adjacency=adjacency,
        parameters=parameters,
    )


def _silent(message: str) -> None:
    pass


def _check_arguments(vocabulary, tag_matrix: np.ndarray, *, merge_on: str, min_count: int):
    if tag_matrix.ndim != 2 or tag_matrix.shape[1] != len(vocabulary):
        raise ValueError(
            f"The tag vocabulary has {len(vocabulary)} words but the tag matrix has shape "
            f"{tag_matrix.shape}; it needs one column per vocabulary word."
        )
    if merge_on not in MERGE_ON:
        raise ValueError(f"merge_on must be one of {MERGE_ON}, got {merge_on!r}.")
    if min_count < 0:
        raise ValueError(f"min_count must be >= 0, got {min_count}.")


def _selected_tags(keys, tag_matrix: np.ndarray, min_count: int, say) -> TagSelection:
    """`select_tags`, saying how many were kept and why the others were dropped;
    ValueError when none is left."""
    selection = select_tags(keys, tag_matrix, min_count=min_count)
    dropped = {reason: len(selection.dropped[reason]) for reason in DROP_REASONS}
    total = len(keys)
    say(
        f"{len(selection.kept)} of {total} tags kept "
        f"({dropped['absent']} absent from the training split, {dropped['no_vector']} "
        f"without vector, {dropped['rare']} on fewer than {min_count} training images)"
    )
    if len(selection.kept) == 0:
        raise ValueError(
            f"No tag left of {total}: {dropped['absent']} are on no training "
            f"image, {dropped['no_vector']} have no word vector and {dropped['rare']} occur "
            f"on fewer than min_count={min_count} training images."
        )
    return selection


def _kept_vectors(vectors, keys, kept, *, center: bool) -> np.ndarray:
    """(T_k, D) float64 vectors of the kept tags, centred when asked (and T_k > 1)."""
    raw = np.stack([vectors[keys[i]] for i in kept]).astype(np.float64)
    if center and len(kept) > 1:
        raw = raw - raw.mean(axis=0, keepdims=True)
    return raw


def _merged_tag_matrix(kept_matrix: np.ndarray, groups) -> np.ndarray:
    """N x T' 0/1: an image has a merged tag when it has any of its members."""
    return np.stack([kept_matrix[:, members].any(axis=1) for members in groups], axis=1).astype(
        np.uint8
    )


def _enhanced_by_correlation(raw: np.ndarray, kept_matrix: np.ndarray, parameters: dict, say):
    """(the kept tags' correlation graph, their vectors enhanced along it)."""
    adjacency = correlation_graph(
        kept_matrix,
        threshold=parameters["correlation_threshold"],
        min_cooccurrence=parameters["min_cooccurrence"],
        weighting=parameters["correlation_weighting"],
    )
    enhanced = enhance_embeddings(raw, adjacency, weight=parameters["enhance_weight"])
    say(f"correlation graph: {int(np.count_nonzero(adjacency))} directed edges")
    return adjacency, enhanced


def _synonym_groups(raw, enhanced, kept_matrix: np.ndarray, parameters: dict, say):
    """(groups of kept positions merged into one tag each, why merging was abandoned for
    one group per tag, or None); clusters the vectors `parameters["merge_on"]` names."""
    groups = merge_groups(
        raw if parameters["merge_on"] == "raw" else enhanced,
        method=parameters["merge_method"],
        eps=parameters["merge_eps"],
        min_samples=parameters["merge_min_samples"],
        linkage=parameters["merge_linkage"],
    )
    fallback = failed_merge(groups, kept_matrix)
    num_kept = kept_matrix.shape[1]
    if fallback:
        say(f"synonym merging failed ({fallback}); the {num_kept} kept tags stay unmerged")
        groups = [[i] for i in range(num_kept)]
    say(f"{num_kept} kept tags merged into {len(groups)}")
    return groups, fallback
