"""The method registry: name -> `Method` subclass (base.py explains the interface).

    method = METHODS.get("hyp2")(config)

Adding a method: a module defining a `Method` (or `BinaryHashMethod`) subclass with
its loss and options, and one line here.
"""

from wsdhash.methods.base import BinaryHashMethod, Method, Option
from wsdhash.methods.binary_methods import HyP2, OrthoHash, Triplet
from wsdhash.methods.csq import CSQ
from wsdhash.methods.dpsh import DPSH
from wsdhash.methods.dsh import DSH
from wsdhash.methods.greedyhash import GreedyHash
from wsdhash.methods.hashnet import HashNet
from wsdhash.methods.wsdhq import WSDHQ
from wsdhash.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")
METHODS.register("orthohash")(OrthoHash)
METHODS.register("hyp2")(HyP2)
METHODS.register("triplet")(Triplet)
METHODS.register("wsdhq")(WSDHQ)
METHODS.register("csq")(CSQ)
METHODS.register("greedyhash")(GreedyHash)
METHODS.register("dpsh")(DPSH)
METHODS.register("hashnet")(HashNet)
METHODS.register("dsh")(DSH)

__all__ = ["METHODS", "BinaryHashMethod", "Method", "Option"]
