"""WSDHQ as a method: merged user tags, the tag-embedding output space, the quantizer
between steps, AQD evaluation, quantization codes and their in-graph encoder.

The quantizer's state lives in the loss layer's variables (codebooks, the training
codes, `quantization_active`), which the run's checkpoint saves under the name
`loss`; the export restores them by that name (`serving_encoder`). Until the first
quantizer update the continuous features are ranked by inner product (validation of
early steps); the final evaluation always fits the quantizer first.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from absl import logging

from wsdhash.eval import CodesFile, CodesSplit, EvalProtocol
from wsdhash.eval.metrics import RetrievalMetrics, evaluate_retrieval
from wsdhash.eval.scorers import FeatureScorer
from wsdhash.flag_bounds import BIG
from wsdhash.methods import wsdhq_quantizer
from wsdhash.methods.base import METHODS, Method, Option
from wsdhash.quantization import QUANTIZERS
from wsdhash.settings import MUST_MATCH

# The checkpoint key of the loss's stored training codes (the run's checkpoint tracks
# the loss layer as `loss`); its rows are the number of training examples.
_TRAIN_CODES_KEY = "loss/train_codes/.ATTRIBUTES/VARIABLE_VALUE"


def _quantization_form(value, flags):
    return wsdhq_quantizer.default_quantization_form(flags.quantizer) if value == "auto" else value


def quantizer_period(update_every: int, num_train: int, batch_size: int) -> int:
    """The steps between quantizer updates: `update_every` (`--quantizer_update_every`),
    or with 0 two epochs, at least `wsdhq_quantizer.MIN_DEFAULT_PERIOD` steps; logged."""
    if update_every:
        logging.info("WSDHQ quantizer: updated every %d steps.", update_every)
        return update_every
    two_epochs = wsdhq_quantizer.TrainingQuantizer.two_epochs(num_train, batch_size)
    period = wsdhq_quantizer.TrainingQuantizer.default_period(num_train, batch_size)
    logging.info(
        "WSDHQ quantizer: updated every %d steps (two epochs of %d training items at batch "
        "%d are %d steps; the default period is at least %d steps).",
        period,
        num_train,
        batch_size,
        two_epochs,
        wsdhq_quantizer.MIN_DEFAULT_PERIOD,
    )
    return period


@METHODS.register("wsdhq")
class WSDHQ(Method):
    name = "wsdhq"
    loss_path = "wsdhash.losses.wsdhq:WSDHQLoss"
    options = (
        Option("wsdhq_gamma", "gamma", "float", 1.0, "WSDHQ adaptive-margin exponent gamma."),
        Option(
            "wsdhq_margin",
            "margin",
            "enum",
            "adaptive",
            "WSDHQ margin.",
            choices=("adaptive", "fixed"),
        ),
        Option(
            "wsdhq_hardest_negatives",
            "hardest_negatives",
            "bool",
            False,
            "WSDHQ: only the hardest negatives.",
        ),
        Option(
            "wsdhq_variant",
            "variant",
            "enum",
            "wsdhq",
            "Margin loss or WDHT baseline.",
            choices=("wsdhq", "wdht"),
        ),
        Option("wsdhq_quantization_weight", "quantization_weight", "float", 1e-4, "WSDHQ lambda."),
        Option(
            "wsdhq_quantization_form",
            "quantization_form",
            "enum",
            "auto",
            "Quantization loss on raw tanh features (the code), normalised ones (the paper) "
            "or normalised sub-vectors (product quantizer); auto: faithful for additive, "
            "product for product.",
            choices=("auto", "faithful", "hypersphere", "product"),
            convert=_quantization_form,
        ),
        # The quantizer: WSDHQ's own settings, not loss arguments (their flags and
        # run_info.json keys predate the options: `recorded_as`).
        Option(
            "quantizer",
            "quantizer",
            "enum",
            "additive",
            "WSDHQ quantizer: additive (the original's ICM) or product (PQ on the hypersphere).",
            choices=tuple(QUANTIZERS.names()),
            loss_argument=False,
            resume=MUST_MATCH,
            recorded_as="quantizer",
        ),
        Option(
            "quantizer_update_every",
            "quantizer_update_every",
            "integer",
            0,
            "WSDHQ quantizer period in steps (0: 2 epochs, at least 100).",
            maximum=BIG,
            loss_argument=False,
            recorded_as="quantizer_update_every",
        ),
    )

    def __init__(self, config):
        super().__init__(config)
        if config.method.supervision != "tags":
            raise ValueError("WSDHQ trains from user tags: use --supervision=tags.")
        self.tag_embeddings, self.merge_map = wsdhq_quantizer.load_tag_model(config.method.tag_dir)
        self.quantizer = None
        self.num_train = None

    @property
    def form(self) -> str:
        return self.config.method.options.get("quantization_form", "faithful")

    @property
    def quantizer_kind(self) -> str:
        """The quantizer's registered name (`--quantizer`)."""
        return self.option_value("quantizer")

    def prepare_splits(self, train, validation):
        # The trainer has already replaced the raw tags by the merged tags of
        # --tag_dir (as for any method trained with --supervision=tags --tag_dir), so
        # column g of the targets is row g of the tag embeddings.
        if train.tags.shape[1] != len(self.tag_embeddings):
            raise ValueError(
                f"--tag_dir={self.config.method.tag_dir}: {len(self.tag_embeddings)} tag "
                f"embeddings but {train.tags.shape[1]} training tag columns."
            )
        config = self.config
        self.num_train = len(train)
        self.quantizer = wsdhq_quantizer.TrainingQuantizer(
            config.model.bits,
            self.tag_embeddings,
            quantizer_period(
                self.option_value("quantizer_update_every"),
                len(train),
                config.sampler.batch_size,
            ),
            config.seed,
            kind=self.quantizer_kind,
            form=self.form,
            num_train=len(train),
        )
        return train, validation

    def output_dim(self) -> int:
        """D: the model's output lives in the tag-embedding space; the code is 8 bits per
        codebook of the quantizer."""
        return self.tag_embeddings.shape[1]

    def loss_arguments(self) -> dict:
        return {
            **super().loss_arguments(),
            "tag_embeddings": self.tag_embeddings,
            "num_train_examples": self.num_train,
        }

    def loss_inputs(self, batch: dict) -> dict:
        return {"example_index": batch["index"]}  # rows of the stored training codes

    def after_restore(self, loss) -> None:
        self.quantizer.restore(loss)

    def after_step(self, step: int, encode_train, loss) -> None:
        if step % self.quantizer.update_every == 0:
            self.quantizer.update(encode_train(), loss)

    def before_final(self, encode_train, loss) -> None:
        self.quantizer.restore(loss)
        self.quantizer.ensure_ready(encode_train(), loss)

    def evaluate(
        self,
        query_features: np.ndarray,
        query_labels: np.ndarray,
        database_features: np.ndarray,
        database_labels: np.ndarray,
        protocol: EvalProtocol,
        database_ids=None,
    ) -> RetrievalMetrics:
        labels = (query_labels, database_labels)
        if not self.quantizer.ready:  # early validation: continuous features, no tie bounds
            scorer = FeatureScorer(query_features, database_features)
            return evaluate_retrieval(
                scorer, labels, dataclasses.replace(protocol, tie_bounds=False)
            )
        result, _ = self.quantizer.evaluate(query_features, database_features, labels, protocol)
        return result

    def codes_file(self, query, query_features, database, database_features) -> CodesFile:
        # The M codeword indices are the code bytes (8 bits each).
        query_indices = self.quantizer.encode(query_features)
        database_indices = self.quantizer.encode(database_features)
        return CodesFile(
            bits=self.config.model.bits,
            codebooks=self.quantizer.codebooks.astype(np.float32),
            query=CodesSplit(
                query_indices,
                query.labels,
                ids=query.paths,
                features=query_features,
                indices=query_indices,
            ),
            database=CodesSplit(
                database_indices,
                database.labels,
                ids=database.paths,
                features=database_features,
                indices=database_indices,
            ),
            scorer="aqd",
        )

    def serving_encoder(self, checkpoint: str, workdir: str):
        """The quantizer of `checkpoint` as graph ops. Its codebooks are restored by name
        from the checkpoint's loss state when its quantizer had run, else taken from
        the run's codes.h5 (the trainer fits the quantizer at the end when no
        checkpoint had one)."""
        import tensorflow as tf

        quantizer = wsdhq_quantizer.TrainingQuantizer(
            self.config.model.bits,
            self.tag_embeddings,
            1,
            self.config.seed,
            kind=self.quantizer_kind,
            form=self.form,
        )
        shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
        loss = self.loss_class(
            bits=self.config.model.bits,
            num_classes=len(self.tag_embeddings),
            seed=self.config.seed,
            **{
                **super().loss_arguments(),
                "tag_embeddings": self.tag_embeddings,
                "num_train_examples": shapes.get(_TRAIN_CODES_KEY, [1])[0],
            },
        )
        tf.train.Checkpoint(loss=loss).restore(checkpoint).expect_partial()
        if float(loss.quantization_active.numpy()) > 0:
            quantizer.set_codebooks(loss.codebooks.numpy())
        else:
            from wsdhash.eval import read_codes_file

            codes_path = os.path.join(workdir, "codes.h5")
            if not os.path.exists(codes_path):
                raise FileNotFoundError(
                    f"{workdir}: the checkpoint has no quantizer state yet and there is no "
                    "codes.h5 with codebooks; finish (or resume) the training run first."
                )
            quantizer.set_codebooks(read_codes_file(codes_path).codebooks)
        return quantizer.graph_encoder()
