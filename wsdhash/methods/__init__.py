"""The method registry: name -> `Method` subclass (base.py explains the interface).

    method = METHODS.get("hyp2")(config)

Each method registers itself where it is defined (`@METHODS.register("name")` on its
class); this package imports every method module, in registration order, so importing
it gives the complete registry. Adding a method: a module defining a `Method` (or
`BinaryHashMethod`) subclass with its loss and options, registered there, and its
import below.
"""

from wsdhash.methods.base import METHODS, BinaryHashMethod, Method, Option

# Every method module, so that each has registered itself, in registration order.
# isort: off
from wsdhash.methods import binary_methods  # noqa: F401  orthohash, hyp2, triplet
from wsdhash.methods import wsdhq  # noqa: F401
from wsdhash.methods import csq  # noqa: F401
from wsdhash.methods import greedyhash  # noqa: F401
from wsdhash.methods import dpsh  # noqa: F401
from wsdhash.methods import hashnet  # noqa: F401
from wsdhash.methods import dsh  # noqa: F401
from wsdhash.methods import bihalf  # noqa: F401
from wsdhash.methods import greedyhash_unsupervised  # noqa: F401
from wsdhash.methods import dch  # noqa: F401
from wsdhash.methods import dtsh  # noqa: F401
from wsdhash.methods import dpn  # noqa: F401
from wsdhash.methods import dfh  # noqa: F401
from wsdhash.methods import idhn  # noqa: F401
from wsdhash.methods import adsh  # noqa: F401
# isort: on

__all__ = ["METHODS", "BinaryHashMethod", "Method", "Option"]
