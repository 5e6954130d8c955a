"""The method registry: name -> `Method` subclass (base.py explains the interface).

    method = METHODS.get("hyp2")(config)

Adding a method: a module defining a `Method` (or `BinaryHashMethod`) subclass with
its loss and options, and one line here.
"""

from wsdhash.methods.adsh import ADSH
from wsdhash.methods.base import BinaryHashMethod, Method, Option
from wsdhash.methods.bihalf import BiHalf
from wsdhash.methods.binary_methods import HyP2, OrthoHash, Triplet
from wsdhash.methods.csq import CSQ
from wsdhash.methods.dch import DCH
from wsdhash.methods.dfh import DFH
from wsdhash.methods.dpn import DPN
from wsdhash.methods.dpsh import DPSH
from wsdhash.methods.dsh import DSH
from wsdhash.methods.dtsh import DTSH
from wsdhash.methods.greedyhash import GreedyHash
from wsdhash.methods.greedyhash_unsupervised import GreedyHashUnsupervised
from wsdhash.methods.hashnet import HashNet
from wsdhash.methods.idhn import IDHN
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
METHODS.register("bihalf")(BiHalf)
METHODS.register("greedyhash_unsupervised")(GreedyHashUnsupervised)
METHODS.register("dch")(DCH)
METHODS.register("dtsh")(DTSH)
METHODS.register("dpn")(DPN)
METHODS.register("dfh")(DFH)
METHODS.register("idhn")(IDHN)
METHODS.register("adsh")(ADSH)

__all__ = ["METHODS", "BinaryHashMethod", "Method", "Option"]
