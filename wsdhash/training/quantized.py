"""WSDHQ's side of training: merged tags, the quantizer schedule, AQD evaluation.

WSDHQ trains from merged user tags (tag processing's `TagIdMergeMap.json`) with fixed
tag embeddings (`FinalTagEmbs.txt`), and every `update_every` steps (two epochs by
default, as the original) re-encodes the training set with ICM and updates the
codebooks in closed form; the quantization loss then pulls each training feature
towards its stored reconstruction. Evaluation ranks the database by asymmetric
quantizer distance (AQD): continuous query features against quantized database items.

Departure from the original: the features used for a quantizer update are computed
afresh (evaluation mode, centre crop) for the whole training set, rather than the
stale training-mode features the original records batch by batch. Each update costs
one encoding pass over the training set.
"""

from __future__ import annotations

import dataclasses
import math
import os

from absl import logging
import numpy as np

from wsdhash.data.list_files import SplitData
from wsdhash.eval import metrics as metrics_lib
from wsdhash.quantization.additive import AdditiveQuantizer
from wsdhash.quantization.aqd import aqd_evaluate
from wsdhash.tagging.files import load_merge_map, merged_labels, read_final_embeddings

EMBEDDINGS_FILE = "FinalTagEmbs.txt"
MERGE_MAP_FILE = "TagIdMergeMap.json"


def load_tag_model(tag_dir: str) -> tuple[np.ndarray, dict[int, list[int]]]:
    """(tag embeddings (T, D), merge map) from a `python -m wsdhash.tags` output folder."""
    if not tag_dir:
        raise ValueError(
            "WSDHQ needs --tag_dir: the output folder of `python -m wsdhash.tags` "
            f"({EMBEDDINGS_FILE} and {MERGE_MAP_FILE})."
        )
    embeddings = read_final_embeddings(os.path.join(tag_dir, EMBEDDINGS_FILE))
    merge_map = load_merge_map(os.path.join(tag_dir, MERGE_MAP_FILE))
    if len(merge_map) != len(embeddings):
        raise ValueError(
            f"{tag_dir}: {len(merge_map)} merged tags in {MERGE_MAP_FILE} but "
            f"{len(embeddings)} rows in {EMBEDDINGS_FILE}."
        )
    return embeddings, merge_map


def with_merged_tags(split: SplitData | None, merge_map) -> SplitData | None:
    """The split with its raw tag columns replaced by the merged tags (OR of members)."""
    if split is None:
        return None
    return dataclasses.replace(split, tags=merged_labels(split.tags, merge_map), tag_names=())


class TrainingQuantizer:
    """Owns the additive quantizer during training and hands its state to the loss.

    Args:
        bits: 8 * M.
        tag_embeddings: (T, D) fixed tag embeddings weighting the ICM distortion.
        update_every: steps between quantizer updates.
        seed: seeds k-means and the ICM orders.
    """

    def __init__(self, bits: int, tag_embeddings: np.ndarray, update_every: int, seed: int):
        if bits % 8:
            raise ValueError(
                f"WSDHQ codes are 8 bits per codebook; bits={bits} is not a multiple of 8."
            )
        self.tag_embeddings = tag_embeddings
        self.update_every = update_every
        self.quantizer = AdditiveQuantizer(bits // 8, 256, seed=seed)
        self.quantizer.set_tag_embeddings(tag_embeddings)

    @staticmethod
    def default_period(num_train: int, batch_size: int) -> int:
        """Two epochs, as WSDHQ's `code_update_epoch_period=2`."""
        return 2 * math.ceil(num_train / batch_size)

    @property
    def ready(self) -> bool:
        return self.quantizer.codebooks is not None

    def restore(self, loss_layer) -> None:
        """After a resume: take the codebooks back from the loss layer's checkpoint."""
        if float(loss_layer.quantization_active.numpy()) > 0:
            codebooks = np.asarray(loss_layer.codebooks.numpy(), np.float32)
            self.quantizer.codebooks = codebooks.reshape(self.quantizer.num_codebooks, 256, -1)

    def update(self, features: np.ndarray, loss_layer) -> None:
        """One quantizer round on the training features, then hand it to the loss."""
        first = not self.ready
        if first:
            self.quantizer.initialize_codebooks(features)
        codes = self.quantizer.encode(features)
        self.quantizer.update_codebooks(features, codes)
        loss_layer.set_quantizer(self.quantizer.codebooks, codes)
        distortion = float(np.mean(self.quantizer.distortion(features, codes)))
        logging.info(
            "quantizer %s: %d training codes, mean tag-weighted distortion %.4f",
            "initialised" if first else "updated", len(codes), distortion,
        )  # fmt: skip

    def ensure_ready(self, features: np.ndarray, loss_layer) -> None:
        if not self.ready:
            self.update(features, loss_layer)

    def encode(self, features: np.ndarray) -> np.ndarray:
        return self.quantizer.encode(features)

    def evaluate(
        self,
        query_features: np.ndarray,
        query_labels: np.ndarray,
        database_features: np.ndarray,
        database_labels: np.ndarray,
        topk: int | None,
        empty: str,
    ) -> tuple[metrics_lib.RetrievalMetrics, np.ndarray]:
        """AQD metrics, and the database's codeword indices (N, M)."""
        indices = self.quantizer.encode(database_features)
        result = aqd_evaluate(
            query_features,
            indices,
            self.quantizer.codebooks,
            query_labels,
            database_labels,
            topk=topk,
            empty=empty,
            precision_at=metrics_lib.DEFAULT_PRECISION_AT,
        )
        return result, indices
