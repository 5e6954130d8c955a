"""Checkpoints: the last K and the best, written so that a kill never corrupts or
mis-selects them.

`tf.train.CheckpointManager` writes a checkpoint's data files first and then replaces
the small `checkpoint` index file, so a run killed mid-write still points to its last
complete checkpoint. A copy of the best checkpoint (by validation mAP) is kept by a
second manager in `best/`.

The selection state (the best score so far and its step) is not a side file: it is
two variables inside every checkpoint (`selection/score`, `selection/step`), so a
checkpoint and the selection it knows of are one atomic unit. The trainer writes the
latest checkpoint of step N *before* validating N; when N becomes the best, its copy
in `best/` carries the new state (it records itself as the best), and the latest
checkpoint after it does too. On resume the state is rebuilt from the restored
checkpoint and `best/` (`_reconcile_best`):

1. a best copy of the restored step that records itself as the best: the run was
   stopped after validating that step and before its next checkpoint; it is adopted;
2. else the restored checkpoint's own record, whose copy `best/` still holds (the
   previous best is deleted only after the new copy is complete);
3. else (only after falling back past a damaged checkpoint) the newest copy in
   `best/`, with a warning;

and every other copy in `best/` is deleted. A checkpoint that does not restore (a
damaged or truncated file) is named in a warning and the previous one is tried.
`best/score.json` is a readable note of the selection; nothing reads it back except
to resume runs written before the selection state existed.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import time

import tensorflow as tf
from absl import logging

from wsdhash import atomic_files

_SELECTION_SCORE = "selection/score/.ATTRIBUTES/VARIABLE_VALUE"
_SELECTION_STEP = "selection/step/.ATTRIBUTES/VARIABLE_VALUE"
# What reading a damaged checkpoint raises (a truncated data file: IndexError).
_RESTORE_ERRORS = (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError)


class CheckpointRestoreError(RuntimeError):
    """None of a run's checkpoints restores; the message names them."""


class _Selection(tf.Module):
    """The best score so far and its step (-inf and -1 before any validation)."""

    def __init__(self):
        super().__init__(name="selection")
        self.score = tf.Variable(-math.inf, dtype=tf.float64, trainable=False, name="score")
        self.step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="step")


def _number(path: str) -> int:
    return int(path.rsplit("-", 1)[1])


def _files(path: str) -> list[str]:
    """A checkpoint's files (`<prefix>.index`, `<prefix>.data-*`)."""
    prefix = glob.escape(path)
    return sorted(glob.glob(prefix + ".index") + glob.glob(prefix + ".data-*"))


def _short_error(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


class CheckpointKeeper:
    """Saves and restores the training state and the checkpoint selection.

    Args:
        directory: the run's checkpoint folder.
        keep: how many of the latest checkpoints to keep.
        **trackables: what to save (model, optimisers, step counter, ...).
    """

    def __init__(self, directory: str, keep: int = 3, **trackables):
        if keep < 1:
            raise ValueError(f"--keep_checkpoints must be >= 1, got {keep}.")
        self.directory = directory
        self.selection = _Selection()
        self._trackables = trackables
        self.checkpoint = tf.train.Checkpoint(**trackables, selection=self.selection)
        self.latest = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=keep)
        self.best_directory = os.path.join(directory, "best")
        self.best = self._best_manager()

    def _best_manager(self) -> tf.train.CheckpointManager:
        # One kept: the manager deletes the previous copy only after writing the new one.
        return tf.train.CheckpointManager(self.checkpoint, self.best_directory, max_to_keep=1)

    # --- Restoring ---------------------------------------------------------------

    def _restore(self, path: str) -> None:
        """Restores `path`, reading every tensor first so that a damaged file fails
        here (and not later, when an optimiser slot is created) with its name."""
        reader = tf.train.load_checkpoint(path)
        names = reader.get_variable_to_shape_map()
        for name in names:
            reader.get_tensor(name)
        if _SELECTION_STEP in names:
            self.checkpoint.restore(path).assert_existing_objects_matched()
            return
        # Written before checkpoints carried the selection: it lives in score.json.
        tf.train.Checkpoint(**self._trackables).restore(path).assert_existing_objects_matched()
        self._set_selection(*(self._legacy_record() or (-math.inf, -1)))

    def _legacy_record(self) -> tuple[float, int] | None:
        path = os.path.join(self.best_directory, "score.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            record = json.load(f)
        return float(record["score"]), int(record["step"])

    def _own_record(self, path: str) -> tuple[float, int] | None:
        """The selection a checkpoint file recorded, or None when it cannot be read."""
        try:
            reader = tf.train.load_checkpoint(path)
            if reader.has_tensor(_SELECTION_STEP):
                return float(reader.get_tensor(_SELECTION_SCORE)), int(
                    reader.get_tensor(_SELECTION_STEP)
                )
        except _RESTORE_ERRORS:
            return None
        return self._legacy_record()

    def _set_selection(self, score: float, step: int) -> None:
        self.selection.score.assign(score)
        self.selection.step.assign(step)

    def restore_latest(self) -> str | None:
        """Restores the newest checkpoint that restores, if any, and the selection
        state; returns its path (None: nothing to resume from).

        A checkpoint that does not restore is named in a warning and the one before
        it is tried.

        Raises:
            CheckpointRestoreError: there are checkpoints and none restores.
        """
        failed = []
        for path in reversed(self.latest.checkpoints):
            try:
                self._restore(path)
            except _RESTORE_ERRORS as error:
                failed.append(f"{path} ({_short_error(error)})")
                logging.warning(
                    "Checkpoint %s does not restore (files %s): %s",
                    path,
                    ", ".join(_files(path)) or "missing",
                    _short_error(error),
                )
                continue
            if failed:
                logging.warning(
                    "Resuming from the previous checkpoint %s instead (%d newer one(s) "
                    "did not restore).",
                    path,
                    len(failed),
                )
            self._reconcile_best(_number(path))
            return path
        if failed:
            raise CheckpointRestoreError(
                f"No checkpoint in {self.directory} restores: {'; '.join(failed)}. Move "
                "the folder aside (or use another --workdir) to train from scratch."
            )
        self._reconcile_best(None)
        return None

    def _best_numbers(self) -> list[int]:
        found = glob.glob(os.path.join(glob.escape(self.best_directory), "ckpt-*.index"))
        numbers = []
        for path in found:
            match = re.fullmatch(r"ckpt-(\d+)\.index", os.path.basename(path))
            if match:
                numbers.append(int(match.group(1)))
        return sorted(numbers)

    def _best_path(self, number: int) -> str:
        return os.path.join(self.best_directory, f"ckpt-{number}")

    def _reconcile_best(self, restored: int | None) -> None:
        """Settles the selection state and `best/` after a restore (see the module
        docstring); `restored` is the restored step, None for a fresh start."""
        found = self._best_numbers()
        recorded = int(self.selection.step.numpy())
        own = self._own_record(self._best_path(restored)) if restored in found else None
        chosen = None
        if restored is None:
            if found:
                logging.warning(
                    "No checkpoint to resume from in %s: deleting the best copy %s of an "
                    "earlier run.",
                    self.directory,
                    self._best_path(found[-1]),
                )
            self._set_selection(-math.inf, -1)
        elif own is not None and own[1] == restored:
            # Validated (and the best) after its checkpoint was written, then stopped.
            chosen = restored
            self._set_selection(*own)
        elif recorded >= 0 and recorded in found:
            chosen = recorded
        elif found:
            record = self._own_record(self._best_path(found[-1]))
            if record is not None:
                chosen = found[-1]
                logging.warning(
                    "The restored checkpoint selects step %d, whose best copy is gone; "
                    "selecting %s (score %.6g) instead.",
                    recorded,
                    self._best_path(chosen),
                    record[0],
                )
                self._set_selection(record[0], chosen)
        if chosen is None and int(self.selection.step.numpy()) >= 0:
            logging.warning(
                "The selected checkpoint %s is missing; selection starts again.",
                self._best_path(int(self.selection.step.numpy())),
            )
            self._set_selection(-math.inf, -1)
        self._keep_only(chosen, found)

    def _keep_only(self, chosen: int | None, found: list[int]) -> None:
        """Deletes every best copy but `chosen` and points `best/checkpoint` at it."""
        if chosen is None and not found:
            return
        state = os.path.join(self.best_directory, "checkpoint")
        if chosen is None:
            for name in (state, os.path.join(self.best_directory, "score.json")):
                if os.path.exists(name):
                    os.remove(name)
        else:
            # The manager's state proto; with a timestamp after `last_preserved` the
            # copy stays deletable when a better one replaces it.
            name = f"ckpt-{chosen}"
            written = min(os.path.getmtime(self._best_path(chosen) + ".index"), time.time())
            atomic_files.write_text(
                state,
                f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n'
                f"all_model_checkpoint_timestamps: {written!r}\n"
                f"last_preserved_timestamp: {written - 1.0!r}\n",
            )
            self._write_note(chosen)
        for number in found:
            if number != chosen:
                for path in _files(self._best_path(number)):
                    os.remove(path)
        self.best = self._best_manager()

    def restore_best(self) -> str | None:
        """Restores the selected checkpoint; returns its path (None: nothing was
        selected, e.g. without validation queries; the current weights stay)."""
        step = self.best_step()
        if step is None:
            return None
        path = self._best_path(step)
        try:
            self._restore(path)
        except _RESTORE_ERRORS as error:
            raise CheckpointRestoreError(
                f"The selected checkpoint {path} does not restore: {_short_error(error)}"
            ) from error
        return path

    # --- Saving ------------------------------------------------------------------

    def save(self, step: int) -> str:
        """Writes the latest checkpoint of `step`, with the selection state so far."""
        return self.latest.save(checkpoint_number=step)

    def best_score(self) -> float | None:
        return float(self.selection.score.numpy()) if self.best_step() is not None else None

    def best_step(self) -> int | None:
        step = int(self.selection.step.numpy())
        return step if step >= 0 else None

    def offer_best(self, step: int, score: float, name: str) -> bool:
        """Copies the state of `step` to `best/` when `score` beats the best so far;
        returns whether it did. The copy records itself as the best, so a stop right
        after it keeps the selection; the latest checkpoint of `step` must already be
        written (the trainer saves before validating)."""
        best = self.best_score()
        if best is not None and score <= best:
            return False
        self._set_selection(score, step)
        self.best.save(checkpoint_number=step)
        self._write_note(step, name)
        return True

    def _write_note(self, step: int, name: str | None = None) -> None:
        path = os.path.join(self.best_directory, "score.json")
        if name is None and os.path.exists(path):
            with open(path) as f:
                name = json.load(f).get("metric")
        atomic_files.write_json(
            path, {"score": float(self.selection.score.numpy()), "metric": name, "step": step}
        )
