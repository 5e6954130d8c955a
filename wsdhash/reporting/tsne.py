"""t-SNE of database codes, coloured by label (scikit-learn's TSNE, seeded)."""

from __future__ import annotations

import numpy as np

from wsdhash.eval import CodesFile
from wsdhash.eval.scorers import scorer_kind


def code_vectors(contents: CodesFile) -> np.ndarray:
    """Database vectors to embed, as the file's scorer sees them (scorers.ScorerKind):
    the +-1 bits of binary codes; for quantization codes the continuous features when
    stored, else the codeword reconstructions."""
    return scorer_kind(contents).vectors(contents)


def tsne_points(contents: CodesFile, num_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(P, 2) t-SNE of a seeded sample of database items and each one's colour: the
    index of its first label (multi-label items take their lowest label index)."""
    from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top

    vectors = code_vectors(contents)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(vectors), min(num_points, len(vectors)), replace=False))
    labels = contents.database.labels[sample]
    colours = np.where(labels.any(axis=1), labels.argmax(axis=1), -1)
    perplexity = float(min(30, max(2, (len(sample) - 1) // 3)))
    points = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=500
    ).fit_transform(vectors[sample])
    return points, colours
