"""Runs exported SavedModels with plain TensorFlow, wsdhash made unimportable (what a
serving host has): the export half of `contracts.run_method_test`.

    python tests/serving_check_run.py --serve   # requests on stdin (tests/worker_process.py)

Request: {"saved_model": DIR, "images": [paths], "output": NPZ}; the helper encodes the
images' bytes through the "serving_default" signature and saves every output, plus
"quantized" (whether the model carries a quantization encoder), to NPZ.
"""

import sys

sys.modules["wsdhash"] = None  # plain TensorFlow must suffice


def encode(request: dict) -> dict:
    import numpy as np
    import tensorflow as tf

    loaded = tf.saved_model.load(request["saved_model"])
    data = tf.constant([open(path, "rb").read() for path in request["images"]])
    result = loaded.signatures["serving_default"](images=data)
    quantized = getattr(loaded, "quantization_encoder", None) is not None
    np.savez(request["output"], quantized=quantized, **{k: v.numpy() for k, v in result.items()})
    return {}


if __name__ == "__main__":
    from worker_process import serve_requests

    serve_requests(encode)
