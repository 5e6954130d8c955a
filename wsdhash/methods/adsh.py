"""ADSH (Jiang and Li, AAAI 2018) as a method: the database's codes V are learned
directly (wsdhash/losses/adsh.py), and the network learns to encode queries.

The method trains on the dataset's *database* split (`training_split`), minus the
validation queries carved from it. Training runs in outer iterations: iteration t
samples m database rows (the first m of a permutation seeded by (seed, t)), trains
`epochs` passes over them in shuffled batches (padded cyclically to whole batches), then
updates V by discrete cyclic coordinate descent from the network's outputs for those
rows (`ADSHLoss.update_database_codes`) and sets the next sample's soft-similarity
ratio. V and the ratio are loss weights, so a checkpoint holds them and a resumed run
continues exactly (the samples are recomputed from the seed).

Codes: queries are sign(network output); the codes file's database codes are V for the
items V was learned for, and the network's sign codes for any other database item (the
carved validation items; ADSH's out-of-sample rule). The exported model therefore
encodes queries (and new images), and an index of the database is built from the codes
file (`learned_database_codes`).

Departures from the authors' code: U (the sampled items' outputs for the V update) is
the network's evaluation-mode output after the iteration's epochs, not the last
training-mode output seen during them; validation queries are carved from the database
(the authors select nothing); sign(0) = +1 in V.
"""

from __future__ import annotations

import math

import numpy as np

from wsdhash.eval import binarize
from wsdhash.methods.base import METHODS, BinaryHashMethod, Option

# Options that shape the training schedule, not the loss.
_SCHEDULE = ("num_samples", "epochs_per_iteration")


@METHODS.register("adsh")
class ADSH(BinaryHashMethod):
    name = "adsh"
    loss_path = "wsdhash.losses.adsh:ADSHLoss"
    training_split = "database"
    learned_database_codes = True
    options = (
        Option(
            "adsh_gamma",
            "gamma",
            "float",
            200.0,
            "ADSH gamma, the weight of ||v_omega - u||^2 (the authors': 200).",
        ),
        Option(
            "adsh_soft_constraint",
            "soft_constraint",
            "enum",
            "sample",
            "ADSH S for dissimilar pairs: -r with r over the sample (the authors'), "
            "per batch (DeepHash-pytorch), or -1 (the paper).",
            choices=("sample", "batch", "none"),
        ),
        Option(
            "adsh_num_samples",
            "num_samples",
            "integer",
            2000,
            "ADSH m: database items sampled per outer iteration (the authors': 2000).",
            minimum=1,
        ),
        Option(
            "adsh_epochs_per_iteration",
            "epochs_per_iteration",
            "integer",
            3,
            "ADSH passes over each sample before V is updated (the authors': 3).",
            minimum=1,
            maximum=1000,
        ),
    )

    def prepare_splits(self, train, validation):
        self.train = train
        self.rows_of = {str(path): row for row, path in enumerate(train.paths)}
        options = self.config.method.options
        self.num_samples = min(int(options.get("num_samples", 2000)), len(train))
        epochs = int(options.get("epochs_per_iteration", 3))
        if self.num_samples < 1 or epochs < 1:
            raise ValueError(
                "--adsh_num_samples and --adsh_epochs_per_iteration must be >= 1; got "
                f"{self.num_samples} and {epochs}."
            )
        self.epochs = epochs
        self.steps_per_iteration = math.ceil(
            epochs * self.num_samples / self.config.sampler.batch_size
        )
        return train, validation

    def loss_arguments(self) -> dict:
        arguments = dict(self.config.method.options)
        for name in _SCHEDULE:
            arguments.pop(name, None)
        return {**arguments, "num_database_items": len(self.train)}

    def build_loss(self, num_targets: int):
        layer = super().build_loss(num_targets)
        layer.set_database_labels(getattr(self.train, self.config.method.supervision))
        layer.set_sample(self.sample(0))
        self.loss_layer = layer
        return layer

    def sample(self, iteration: int) -> np.ndarray:
        """The database rows sampled in outer iteration `iteration` (seeded)."""
        rng = np.random.default_rng([self.config.seed, iteration])
        return rng.permutation(len(self.train))[: self.num_samples]

    def index_stream(self, train):
        batch = self.config.sampler.batch_size

        def stream():
            iteration = 0
            while True:
                rows = self.sample(iteration)
                rng = np.random.default_rng([self.config.seed, iteration, 1])
                order = np.concatenate([rng.permutation(rows) for _ in range(self.epochs)])
                yield from np.resize(order, self.steps_per_iteration * batch).tolist()
                iteration += 1

        return stream

    def loss_inputs(self, batch: dict) -> dict:
        return {"example_index": batch["index"]}  # database rows of V

    def after_step(self, step, encode_train, loss) -> None:
        if step % self.steps_per_iteration:
            return
        iteration = step // self.steps_per_iteration - 1
        rows = self.sample(iteration)
        loss.update_database_codes(encode_train(rows), rows)
        loss.set_sample(self.sample(iteration + 1))

    def _database_codes(self, loss_codes, features, ids) -> np.ndarray:
        """(N, K) +-1: V where the item has a row of V, else sign(features)."""
        codes = binarize(features).astype(np.float32)
        for position, item in enumerate(ids):
            row = self.rows_of.get(str(item))
            if row is not None:
                codes[position] = binarize(loss_codes[row])
        return codes

    def database_codes(self, database_features, database_ids=None) -> np.ndarray:
        if database_ids is None:
            raise ValueError("ADSH evaluates against its learned codes: pass database_ids.")
        return self._database_codes(self.loss_codes(), database_features, database_ids)

    def loss_codes(self) -> np.ndarray:
        """V as the loss holds it now."""
        return self.loss_layer.database_codes.numpy()
