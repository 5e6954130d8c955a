"""Which trained network made a set of codes: a fingerprint of a model's weights.

`weights_fingerprint(model)` is a SHA-256 over the model's weights in their order (each
one's dtype, shape and bytes). The trainer stores it in the codes file it writes from
the selected checkpoint (`CodesFile.model_fingerprint`), an export stores it beside the
SavedModel (`EXPORT_INFO_FILE`), and `python -m wsdhash.search build` carries it into the index
manifest, so that the service can tell an index made from another run's or another
checkpoint's codes from its model's own (wsdhash/service/engine.py), also where it cannot
re-encode database images (no images root, or database codes the method learned).
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

# Beside a SavedModel's graph: TensorFlow's loaders and TensorFlow Serving ignore
# `assets.extra/`, the place SavedModel keeps for files of the model's users.
EXPORT_INFO_FILE = os.path.join("assets.extra", "wsdhash.json")


def weights_fingerprint(model) -> str:
    """SHA-256 (hex) over `model.weights` in order: dtype, shape and bytes of each."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(np.asarray(weight.numpy()))
        digest.update(f"{value.dtype.str}{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def export_fingerprint(model_dir: str) -> str | None:
    """The fingerprint an export recorded (`EXPORT_INFO_FILE`), or None (an export made
    before it was recorded, or not by wsdhash)."""
    try:
        with open(os.path.join(model_dir, EXPORT_INFO_FILE), encoding="utf-8") as f:
            value = json.load(f).get("model_fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
