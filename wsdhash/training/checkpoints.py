"""Checkpoints: the last K and the best, written so that a kill never corrupts them.

`tf.train.CheckpointManager` writes a checkpoint's data files first and then replaces
the small `checkpoint` index file, so a run killed mid-write still points to its last
complete checkpoint. The best checkpoint (by validation mAP) is kept by a second
manager in `best/` with its score in `best/score.json` (written atomically).
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from wsdhash import atomic_files


class CheckpointKeeper:
    """Saves and restores the training state.

    Args:
        directory: the run's checkpoint folder.
        keep: how many of the latest checkpoints to keep.
        **trackables: what to save (model, optimisers, step counter, ...).
    """

    def __init__(self, directory: str, keep: int = 3, **trackables):
        self.directory = directory
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self.latest = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=keep)
        self.best_directory = os.path.join(directory, "best")
        self.best = tf.train.CheckpointManager(self.checkpoint, self.best_directory, max_to_keep=1)

    def restore_latest(self) -> str | None:
        """Restores the latest checkpoint, if any; returns its path."""
        path = self.latest.latest_checkpoint
        if path:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        return path

    def restore_best(self) -> str | None:
        path = self.best.latest_checkpoint
        if path:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        return path

    def save(self, step: int) -> str:
        return self.latest.save(checkpoint_number=step)

    def best_score(self) -> float | None:
        path = os.path.join(self.best_directory, "score.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)["score"]

    def offer_best(self, step: int, score: float, name: str) -> bool:
        """Saves as best when `score` beats the best so far; returns whether it did."""
        best = self.best_score()
        if best is not None and score <= best:
            return False
        self.best.save(checkpoint_number=step)
        atomic_files.write_json(
            os.path.join(self.best_directory, "score.json"),
            {"score": score, "metric": name, "step": step},
        )
        return True
