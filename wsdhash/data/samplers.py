"""Class-balanced batches of P classes x Q images for the batch-all triplet loss.

As in the DNNH re-implementation's `categoryRandomSampler`: an epoch has
floor(N / (P * Q)) batches; for each batch the class list is shuffled and the first P
classes are taken, Q random images are drawn from each, and the batch is shuffled.

Differences from the original, which are choices the original leaves undefined:
    * randomness comes from `numpy.random.default_rng((seed, epoch))`, so every epoch is
      reproducible on its own (resuming at epoch e gives the same batches);
    * a class with fewer than Q images is either sampled with replacement
      (`small_classes="replacement"`, the default: every batch keeps exactly P * Q
      indices) or never chosen (`small_classes="skip"`). The original takes all of its
      images, which makes that batch shorter and shifts every later batch boundary;
    * unlabelled samples (class id < 0, or an all-zero label row) are never drawn, and N
      counts the labelled samples only.

Usage with tf.data (one epoch of index batches):

    sampler = ClassBalancedSampler(class_ids, seed=0)
    indices = tf.data.Dataset.from_tensor_slices(sampler.epoch_batches(epoch))

Reference:
    Lai et al., "Simultaneous Feature Learning and Hash Coding with Deep Neural
    Networks", CVPR 2015; re-implementation github.com/zhongzhh8/Image-Retrieval.
"""

from __future__ import annotations

import numpy as np

SMALL_CLASS_POLICIES = ("replacement", "skip")


def class_ids_from_labels(labels: np.ndarray) -> np.ndarray:
    """Turns class ids (N,) or one-hot rows (N, C) into class ids, -1 for unlabelled.

    Args:
        labels: (N,) integer class ids, or (N, C) 0/1 rows with at most one positive.

    Returns:
        (N,) int64 class ids.

    Raises:
        ValueError: for multi-label rows (this sampler is for single-label data).
    """
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels.astype(np.int64)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (N,) class ids or (N, C) rows; got {labels.shape}.")
    positive = labels > 0
    counts = positive.sum(axis=1)
    if np.any(counts > 1):
        row = int(np.argmax(counts > 1))
        raise ValueError(
            f"Row {row} has {counts[row]} positive labels; the class-balanced sampler needs "
            "single-label data."
        )
    return np.where(counts == 1, positive.argmax(axis=1), -1).astype(np.int64)


class ClassBalancedSampler:
    """Seeded, deterministic index batches of P classes x Q images.

    Args:
        labels: (N,) class ids (negative = unlabelled) or (N, C) one-hot rows.
        classes_per_batch: P (10 in the re-implementation).
        images_per_class: Q (8 in the re-implementation; batch 80).
        seed: base seed; epoch e uses `default_rng((seed, e))`.
        small_classes: "replacement" or "skip" for classes with fewer than Q images.
    """

    def __init__(
        self,
        labels: np.ndarray,
        classes_per_batch: int = 10,
        images_per_class: int = 8,
        seed: int = 0,
        small_classes: str = "replacement",
    ):
        if small_classes not in SMALL_CLASS_POLICIES:
            known = ", ".join(SMALL_CLASS_POLICIES)
            raise ValueError(f"Unknown small_classes {small_classes!r}; known: {known}.")
        if classes_per_batch < 1 or images_per_class < 1:
            raise ValueError(
                f"classes_per_batch and images_per_class must be >= 1; got "
                f"{classes_per_batch} and {images_per_class}."
            )
        self.classes_per_batch = int(classes_per_batch)
        self.images_per_class = int(images_per_class)
        self.seed = int(seed)
        self.small_classes = small_classes

        class_ids = class_ids_from_labels(labels)
        labelled = np.flatnonzero(class_ids >= 0)
        self.num_samples = int(labelled.size)
        classes = np.unique(class_ids[labelled])
        # Sample indices of each class, in file order (np.flatnonzero is sorted).
        self._members = {int(c): np.flatnonzero(class_ids == c) for c in classes}
        if small_classes == "skip":
            self._members = {
                c: m for c, m in self._members.items() if m.size >= self.images_per_class
            }
        self._classes = np.array(sorted(self._members), dtype=np.int64)
        if self._classes.size < self.classes_per_batch:
            raise ValueError(
                f"Need at least {self.classes_per_batch} classes to draw from; found "
                f"{self._classes.size} (small_classes={small_classes!r}, "
                f"images_per_class={self.images_per_class})."
            )

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.images_per_class

    def __len__(self) -> int:
        """Batches per epoch: floor(N / (P * Q))."""
        return self.num_samples // self.batch_size

    def epoch_batches(self, epoch: int = 0) -> np.ndarray:
        """The batches of one epoch.

        Args:
            epoch: epoch number; the same (seed, epoch) always gives the same batches.

        Returns:
            (len(self), P * Q) int64 sample indices into `labels`.
        """
        rng = np.random.default_rng((self.seed, int(epoch)))
        batches = np.empty((len(self), self.batch_size), dtype=np.int64)
        for b in range(len(self)):
            chosen = rng.permutation(self._classes)[: self.classes_per_batch]
            parts = []
            for c in chosen:
                members = self._members[int(c)]
                replace = members.size < self.images_per_class
                parts.append(rng.choice(members, size=self.images_per_class, replace=replace))
            batches[b] = rng.permutation(np.concatenate(parts))
        return batches

    def __iter__(self):
        """Yields the batches of epoch 0, then epoch 1, ... without end."""
        epoch = 0
        while True:
            yield from self.epoch_batches(epoch)
            epoch += 1
