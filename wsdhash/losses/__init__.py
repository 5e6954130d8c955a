"""The methods' loss layers: one module per method's loss (17 methods, 17 modules).

Each family is a set of pure functions returning one value per example, (B,), and one
layer (a `losses.base.HashingLoss`: constructor contract and config) that owns the
family's state and is what the trainer calls. The
method registry (`wsdhash.methods.METHODS`) names each method's loss by its import path
(`Method.loss_path`, "module:Class"); there is no second registry of losses. The four
re-exported below are the seed methods' (OrthoHash, HyP2, batch-all triplet (DNNH), WSDHQ):

    layer = METHODS.get(name)(config).build_loss(C)   # the run's method builds it
    layer = OrthoHashLoss(bits=K, num_classes=C, seed=seed, **hyperparameters)
    terms = layer(codes, labels, ref_codes=None, ref_labels=None, anchor_offset=0)
    # terms["loss"] is (B,); the other keys are the separate terms, for logging.

`HashingLoss.call` (base.py) is the same for every layer: it checks the references once
and calls the layer's `terms(codes, labels, refs, **inputs)`, all a layer implements.

Under tf.distribute, pass the codes and labels gathered across replicas
(`ReplicaContext.all_gather`, which carries gradients) as the references and
anchor_offset = replica_id * local batch; the mean of terms["loss"] over the global batch
is then the published loss, and each replica's share is sum(local) / global batch.
"""

from __future__ import annotations

from wsdhash.losses.hyp2 import HyP2Loss
from wsdhash.losses.orthohash import OrthoHashLoss
from wsdhash.losses.triplet import TripletLoss
from wsdhash.losses.wsdhq import WSDHQLoss

__all__ = ["HyP2Loss", "OrthoHashLoss", "TripletLoss", "WSDHQLoss"]
