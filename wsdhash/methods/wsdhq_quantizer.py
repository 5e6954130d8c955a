"""WSDHQ's side of training: merged tags, the quantizer schedule, AQD evaluation.

WSDHQ trains from merged user tags (tag processing's `TagIdMergeMap.json`) with fixed
tag embeddings (`FinalTagEmbs.txt`), and every `update_every` steps (two epochs by
default, as the original, but at least `MIN_DEFAULT_PERIOD` steps) re-encodes the
training set with ICM and updates the codebooks in closed form; the quantization loss
then pulls each training feature towards its stored reconstruction. Evaluation ranks the database by asymmetric
quantizer distance (AQD): continuous query features against quantized database items.

Departure from the original: the features used for a quantizer update are computed
afresh (evaluation mode, centre crop) for the whole training set, rather than the
stale training-mode features the original records batch by batch. Each update costs
one encoding pass over the training set.
"""

from __future__ import annotations

import math
import os

import numpy as np
from absl import logging

from wsdhash.eval import metrics as metrics_lib
from wsdhash.eval.aqd_metrics import aqd_evaluate
from wsdhash.eval.protocol import EvalProtocol
from wsdhash.quantization import QUANTIZERS
from wsdhash.tagging.files import load_merge_map, read_final_embeddings

EMBEDDINGS_FILE = "FinalTagEmbs.txt"
NUM_CODEWORDS = 256  # Per codebook: one uint8 code byte, 8 bits.
MERGE_MAP_FILE = "TagIdMergeMap.json"
# The fewest steps between quantizer updates of the default (two-epoch) schedule. On a
# small training split two epochs are a handful of steps (250 images at batch 64: 8),
# and each update re-encodes the whole training split and moves the loss's targets, so
# the run would spend its time in updates and the network could not follow targets
# that change every few steps. The published runs are not affected: two epochs are 146
# steps on WSDHQ's Flickr split at batch 256, and more on NUS-WIDE.
MIN_DEFAULT_PERIOD = 100


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


def default_quantization_form(kind: str) -> str:
    """The loss form that matches a quantizer kind (the first of its `loss_forms`): the
    original's raw features for the additive quantizer, normalised sub-vectors for the
    product quantizer."""
    return QUANTIZERS.get(kind).loss_forms[0]


def quantizer_features(features: np.ndarray, form: str) -> np.ndarray:
    """The features the quantizer fits and encodes for a loss form (wsdhq.py doc):
    raw for "faithful" and "product" (the product quantizer normalises each sub-vector
    itself), unit rows for "hypersphere"."""
    if form != "hypersphere":
        return features
    # In float64, as the in-graph encoder normalises (graph_encoder.py), so that both
    # round the unit rows to the quantizer's dtype alike.
    features = np.asarray(features, np.float64)
    norms = np.sqrt(np.maximum(np.sum(np.square(features), axis=1, keepdims=True), 1e-12))
    return features / norms


class TrainingQuantizer:
    """Owns the quantizer during training and hands its state to the loss.

    Args:
        bits: 8 * M.
        tag_embeddings: (T, D) fixed tag embeddings weighting the additive ICM distortion.
        update_every: steps between quantizer updates.
        seed: seeds k-means and the ICM orders.
        kind: a `QUANTIZERS` name: "additive" (WSDHQ's code: full-D codewords, ICM,
            closed-form update) or "product" (product quantization on the hypersphere,
            FAISS-compatible).
        form: the loss's quantization form; it fixes the space the quantizer works in
            and must be one of the quantizer's `loss_forms` ("product" pairs with the
            product quantizer and only with it).
        num_train: training items; k-means needs at least 256 of them (one per codeword).
    """

    def __init__(
        self,
        bits: int,
        tag_embeddings: np.ndarray,
        update_every: int,
        seed: int,
        *,
        kind: str = "additive",
        form: str = "faithful",
        num_train: int | None = None,
    ):
        if bits % 8:
            raise ValueError(
                f"WSDHQ codes are 8 bits per codebook; bits={bits} is not a multiple of 8."
            )
        if kind not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {tuple(QUANTIZERS.names())}; got {kind!r}.")
        quantizer_class = QUANTIZERS.get(kind)
        if form not in quantizer_class.loss_forms:
            raise ValueError(
                f"The {kind} quantizer cannot pair with quantization form {form!r}: the "
                "product quantizer needs form 'product' (normalised sub-vectors) and that "
                "form needs the product quantizer."
            )
        num_codebooks = bits // 8
        if num_train is not None and num_train < NUM_CODEWORDS:
            raise ValueError(
                f"The quantizer's k-means needs at least {NUM_CODEWORDS} training images (one "
                f"per codeword); the training split has {num_train}."
            )
        self.tag_embeddings = tag_embeddings
        self.update_every = update_every
        self.kind = kind
        self.form = form
        self.quantizer = quantizer_class.for_training(
            num_codebooks, NUM_CODEWORDS, seed=seed, tag_embeddings=tag_embeddings
        )

    @staticmethod
    def default_period(num_train: int, batch_size: int) -> int:
        """Steps between quantizer updates when none is given: two epochs, as WSDHQ's
        `code_update_epoch_period=2`, but never fewer than `MIN_DEFAULT_PERIOD` steps.

        Args:
            num_train: training items.
            batch_size: the global batch size.
        """
        return max(TrainingQuantizer.two_epochs(num_train, batch_size), MIN_DEFAULT_PERIOD)

    @staticmethod
    def two_epochs(num_train: int, batch_size: int) -> int:
        """WSDHQ's `code_update_epoch_period=2` in steps (the last partial batch counted)."""
        return 2 * math.ceil(num_train / batch_size)

    @property
    def ready(self) -> bool:
        return self.quantizer.codebooks is not None

    @property
    def codebooks(self) -> np.ndarray:
        """(M, 256, D) codebooks whose codewords ADD UP to the reconstruction (the product
        quantizer's block-sparse form), as the loss, AQD and the codes file take them."""
        return self.quantizer.additive_codebooks()

    def set_codebooks(self, codebooks: np.ndarray) -> None:
        """Takes codebooks in the additive (M, 256, D) or flat (M * 256, D) form of
        `codebooks` (the loss layer's, a checkpoint's or a codes file's)."""
        books = np.asarray(codebooks, np.float32)
        books = books.reshape(self.quantizer.num_codebooks, NUM_CODEWORDS, -1)
        self.quantizer.set_additive_codebooks(books)

    def restore(self, loss_layer) -> None:
        """After a resume: take the codebooks back from the loss layer's checkpoint."""
        if float(loss_layer.quantization_active.numpy()) > 0:
            self.set_codebooks(loss_layer.codebooks.numpy())

    def graph_encoder(self):
        """The quantizer as TensorFlow ops (features -> codes), for SavedModels."""
        return self.quantizer.graph_encoder(unit_features=self.form == "hypersphere")

    def update(self, features: np.ndarray, loss_layer) -> None:
        """One quantizer round on the training features, then hand it to the loss."""
        features = quantizer_features(features, self.form)
        first = not self.ready
        if first:
            self.quantizer.initialize_codebooks(features)
        codes = self.quantizer.encode(features)
        self.quantizer.update_codebooks(features, codes)
        loss_layer.set_quantizer(self.codebooks, codes)
        quality = self.quantizer.describe_fit(features, codes)
        logging.info(
            "%s quantizer %s: %d training codes, %s",
            self.kind,
            "initialised" if first else "updated",
            len(codes),
            quality,
        )

    def ensure_ready(self, features: np.ndarray, loss_layer) -> None:
        if not self.ready:
            self.update(features, loss_layer)

    def encode(self, features: np.ndarray) -> np.ndarray:
        return self.quantizer.encode(quantizer_features(features, self.form))

    def evaluate(
        self,
        query_features: np.ndarray,
        database_features: np.ndarray,
        labels: tuple[np.ndarray, np.ndarray],
        protocol: EvalProtocol,
    ) -> tuple[metrics_lib.RetrievalMetrics, np.ndarray]:
        """AQD metrics under `protocol` (query and database labels in `labels`), and the
        database's codeword indices (N, M). Queries stay raw: AQD ranks by <q, x_hat>,
        which no positive rescaling of q changes."""
        indices = self.encode(database_features)
        result = aqd_evaluate(query_features, indices, self.codebooks, labels, protocol)
        return result, indices
