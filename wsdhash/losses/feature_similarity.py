"""What the unsupervised feature-similarity losses share (BiHalf, GreedyHash-unsupervised):
the backbone's features as inputs, and the half-batch pairs whose code and feature
cosine similarities they match.

Both authors' training loops (liyunqianggyn/Deep-Unsupervised-Image-Hashing
ImageHashing/*.py, ssppp/GreedyHash unsupervised_vgg.py) split the batch of N rows in
halves and compare row i with row i + N/2 only (N/2 pairs, not an N x N matrix):

    pair_i = ( cos(b_i, b_{i+N/2}) - cos(x_i, x_{i+N/2}) )^2,   i < N/2
    loss   = mean over the N/2 pairs                              (F.mse_loss)

with b the binary codes and x the backbone's features (VGG16 fc7 there). wsdhash's
losses return per-example terms: row r gets the value of the pair it belongs to, so the
mean over the N rows is the mean over the pairs (each pair counted twice over 2 x N/2
rows), and its gradient is the authors'. Under replicas the pairs are taken in the
global batch (the references, R = replicas x B rows, anchors at rows `anchor_offset..`),
so 2 replicas pair the same rows as 1 device. An odd R (the authors never have one:
their batches are even) leaves the last row unpaired, with a 0 term.

F.cosine_similarity(a, b) = a.b / sqrt(max(|a|^2 |b|^2, eps^2)), eps = 1e-8 (PyTorch),
reproduced by `cosine`.
"""

from __future__ import annotations

import tensorflow as tf

from wsdhash.losses import references

EPSILON = 1e-8  # torch.nn.functional.cosine_similarity's eps


def resolve_features(loss: str, ref_codes, features, ref_features):
    """(features (B, F), ref_features (R, F)) as float32; without references the anchors'
    features serve as both.

    Every call of these losses must carry the backbone's features: the trainer passes
    them (and every replica's as `ref_features`) for a method that sets
    `uses_backbone_features` (wsdhash/methods/base.py).

    Args:
        loss: the loss's name, for the error messages.
        ref_codes: the references' codes, or None.
        features: the anchors' features (B, F).
        ref_features: the references' features (R, F), given with ref_codes.

    Raises:
        ValueError: features missing, ref_features without ref_codes or the other way
            round.
    """
    if features is None:
        raise ValueError(
            f"{loss} compares codes with the backbone's features: pass `features` (and "
            "`ref_features` with the references); the method must set "
            "uses_backbone_features = True so that the trainer passes them."
        )
    features = tf.cast(tf.convert_to_tensor(features), tf.float32)
    if ref_codes is None:
        if ref_features is not None:
            raise ValueError("ref_features given without ref_codes and ref_labels.")
        return features, features
    if ref_features is None:
        raise ValueError("Pass ref_features (every replica's features) with ref_codes.")
    return features, tf.cast(tf.convert_to_tensor(ref_features), tf.float32)


def partner_rows(num_refs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """((R,) int32 partner of each reference row, (R,) float 1 where it has one).

    Row r < R//2 pairs with r + R//2 and row r in [R//2, 2 (R//2)) with r - R//2, as the
    authors' halves; with an odd R the last row has none (its partner is itself, masked).
    """
    half = num_refs // 2
    rows = tf.range(num_refs)
    partner = tf.where(rows < half, rows + half, rows - half)
    paired = rows < 2 * half
    partner = tf.where(paired, partner, rows)
    return partner, tf.cast(paired, tf.float32)


def centered_features(ref_features: tf.Tensor) -> tf.Tensor:
    """(R, F) features minus their mean over the R references (the global batch).

    Why: the authors' targets are cosines of VGG16 fc7 activations. Features after a
    ReLU and a global average pool (MobileNet's, ResNet's) are non-negative and dense,
    so every pair's cosine is high and close to every other's (0.57 +- 0.08 for
    MobileNet-v1 on CIFAR-10 photos, against codes' cosines in [-1, 1]): matching them
    asks all codes to agree on most bits, and the codes collapse towards one value
    (GreedyHash-unsupervised's median bit was +1 on 68-71% of the items, below LSH).
    Centred, the cosines spread around 0 (-0.01 +- 0.14 there) and rank neighbours by
    what distinguishes them. The mean is the global batch's, so one and two replicas
    agree. An option (`center_features`), off in the published settings.
    """
    return ref_features - tf.reduce_mean(ref_features, axis=0, keepdims=True)


def cosine(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """(N,) row-wise cosine similarity as torch.nn.functional.cosine_similarity."""
    dot = tf.reduce_sum(a * b, axis=1)
    norms = tf.reduce_sum(tf.square(a), axis=1) * tf.reduce_sum(tf.square(b), axis=1)
    return dot / tf.sqrt(tf.maximum(norms, EPSILON**2))


def pair_similarity_terms(
    ref_binary, ref_features, num_anchors, anchor_offset, center_features: bool = False
):
    """(B,) (cos(b_a, b_p) - cos(x_a, x_p))^2 for the anchors' rows a in the references
    and their partners p (`partner_rows`); 0 for an unpaired row.

    Args:
        ref_binary: (R, K) codes as the loss binarises them (gradients flow through).
        ref_features: (R, F) backbone features.
        num_anchors: B.
        anchor_offset: the anchors' first row in the references.
        center_features: subtract the references' mean feature before the cosines
            (`centered_features`).
    """
    if center_features:
        ref_features = centered_features(ref_features)
    rows = references.anchor_rows(num_anchors, anchor_offset)
    partner, paired = partner_rows(tf.shape(ref_binary)[0])
    mates = tf.gather(partner, rows)
    code_cosine = cosine(tf.gather(ref_binary, rows), tf.gather(ref_binary, mates))
    feature_cosine = cosine(tf.gather(ref_features, rows), tf.gather(ref_features, mates))
    return tf.square(code_cosine - feature_cosine) * tf.gather(paired, rows)
