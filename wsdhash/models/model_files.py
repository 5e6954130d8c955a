"""Feature models the user brings as files: `python -m wsdhash.extract --model=PATH`.

    feature_model = load_feature_model("encoder.keras")        # Keras 3 model file
    feature_model = load_feature_model("exported/encoder")     # TF2 SavedModel folder
    feature_model = load_feature_model("encoder.tflite")       # TensorFlow Lite
    features = feature_model(normalised_images)                # (B, F) float32

Each takes float32 images (B, S, S, 3) already normalised the way the model expects
(the `--normalization` the user names: a float model file does not say how it was
trained; a quantized TFLite input does, through its scale and zero point)
and returns (B, F) features: a (B, H, W, C) output is averaged over space, a
(B, T, C) output gives its first token.

* `.keras`: `keras.saving.load_model` in safe mode (no arbitrary code from the file).
* A SavedModel folder: its `serving_default` signature (or `signature`), its single
  input, and its single output, or the output named `output` when there are several.
* `.tflite` (`savable=True`): the same graph as TensorFlow ops, for export
  (wsdhash/models/tflite_graph.py).
* `.tflite`: the LiteRT interpreter (`ai_edge_litert`) when installed, else
  TensorFlow's `tf.lite.Interpreter`, run batch by batch; a quantized
  (uint8 / int8) input or output is (de)quantized with the model's own scale and zero
  point. The input's quantization (`FeatureModel.input_quantization`) also tells which
  normalisation the model expects (wsdhash/models/input_quantization.py).

The crop size S comes from the model's input shape when it is fixed, else from
`--crop_size`. `fingerprint(path)` (SHA-256 of the file, or of a SavedModel's graph and
variables) is what a features file records, so that resuming with another model file
is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from wsdhash.models.input_quantization import InputQuantization


class ModelFileError(ValueError):
    """A model file that cannot serve as a feature extractor; the message names it."""


@dataclasses.dataclass
class FeatureModel:
    """A loaded feature model.

    Attributes:
        call: normalised float32 images (B, S, S, 3) -> (B, F) float32; usable inside
            `tf.function`.
        crop_size: S when the model fixes it, else None.
        feature_dim: F.
        kind: "keras", "saved_model" or "tflite".
        input_quantization: the quantization of a uint8 / int8 input (TFLite), which
            says how the model expects its pixels; None for a float input.
        variables: the `tf.Variable`s `call` reads, for a `tf.Module` that saves it
            (empty for a `.tflite` model, whose weights are graph constants).
        savable: whether `call` can go into a SavedModel: False for the interpreter
            (`tf.numpy_function` runs Python), True for everything else.
    """

    call: Callable[[tf.Tensor], tf.Tensor]
    crop_size: int | None
    feature_dim: int
    kind: str
    input_quantization: InputQuantization | None = None
    variables: list = dataclasses.field(default_factory=list)
    savable: bool = True

    def __call__(self, images, training: bool = False) -> tf.Tensor:
        return self.call(images)


def _pooled(outputs: tf.Tensor, path: str) -> tf.Tensor:
    outputs = tf.cast(outputs, tf.float32)
    rank = outputs.shape.rank
    if rank == 4:
        return tf.reduce_mean(outputs, axis=[1, 2])
    if rank == 3:
        return outputs[:, 0, :]
    if rank == 2:
        return outputs
    raise ModelFileError(f"{path}: the model's output has shape {outputs.shape}; expected 2-4-D.")


def _side(shape, path: str) -> int | None:
    """S of an input shape (B, S, S, 3) or (B, None, None, 3)."""
    shape = list(shape)
    if len(shape) != 4 or (shape[-1] is not None and shape[-1] != 3):
        raise ModelFileError(
            f"{path}: the model's input has shape {tuple(shape)}; expected (B, S, S, 3) images."
        )
    height, width = shape[1], shape[2]
    if height is not None and width is not None and height != width:
        raise ModelFileError(f"{path}: non-square input {height}x{width} is not supported.")
    return int(height) if height is not None else None


def _feature_dim(call, crop: int | None, path: str) -> int:
    side = crop or 32
    return int(call(tf.zeros([1, side, side, 3], tf.float32)).shape[-1])


def _keras(path: str) -> FeatureModel:
    import keras

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 (Keras raises many kinds here)
        raise ModelFileError(f"{path}: cannot load the Keras model ({error}).") from None
    crop = _side(model.input_shape, path)

    def call(images):
        return _pooled(model(images, training=False), path)

    # Keras 3 variables wrap the tf.Variables a SavedModel can track (wsdhash/export/module.py).
    variables = [variable.value for variable in model.variables]
    return FeatureModel(call, crop, _feature_dim(call, crop, path), "keras", variables=variables)


def _saved_model(path: str, signature: str, output: str | None) -> FeatureModel:
    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:  # noqa: BLE001
        raise ModelFileError(f"{path}: cannot load the SavedModel ({error}).") from None
    if signature not in loaded.signatures:
        raise ModelFileError(
            f"{path}: no signature {signature!r} (it has {sorted(loaded.signatures)})."
        )
    function = loaded.signatures[signature]
    inputs = function.structured_input_signature[1]
    if len(inputs) != 1:
        raise ModelFileError(f"{path}: signature {signature!r} takes {sorted(inputs)}; need one.")
    ((input_name, spec),) = inputs.items()
    if not spec.dtype.is_floating:
        raise ModelFileError(
            f"{path}: signature {signature!r} takes {spec.dtype.name} {input_name!r}; a "
            "feature model takes float images (a wsdhash export takes encoded files: use "
            "its encode_images signature or the run's checkpoint instead)."
        )
    outputs = sorted(function.structured_outputs)
    if output is None:
        if len(outputs) != 1:
            raise ModelFileError(
                f"{path}: signature {signature!r} has outputs {outputs}; choose one with "
                "--model_output."
            )
        output = outputs[0]
    elif output not in outputs:
        raise ModelFileError(f"{path}: no output {output!r} (outputs: {outputs}).")
    crop = _side(spec.shape.as_list(), path)

    def call(images):
        result = function(**{input_name: tf.cast(images, spec.dtype)})
        return _pooled(result[output], path)

    model = FeatureModel(
        call,
        crop,
        _feature_dim(call, crop, path),
        "saved_model",
        variables=list(function.variables),
    )
    model.loaded = loaded  # keeps the variables alive
    return model


def _tflite(path: str) -> FeatureModel:
    try:  # LiteRT, TensorFlow Lite's successor, when installed; else TF's own copy
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = None
    try:
        if Interpreter is not None:
            interpreter = Interpreter(model_path=path)
        else:
            with warnings.catch_warnings():  # "deprecated ... use LiteRT"
                warnings.simplefilter("ignore", UserWarning)
                interpreter = tf.lite.Interpreter(model_path=path)
    except (ValueError, RuntimeError) as error:
        raise ModelFileError(f"{path}: cannot load the TFLite model ({error}).") from None
    (input_detail,) = interpreter.get_input_details()
    output_detail = interpreter.get_output_details()[0]
    crop = _side([None, *input_detail["shape"][1:]], path)

    def run(images: np.ndarray) -> np.ndarray:
        index = input_detail["index"]
        interpreter.resize_tensor_input(index, images.shape)
        interpreter.allocate_tensors()
        dtype = input_detail["dtype"]
        scale, zero = input_detail["quantization"]
        if np.issubdtype(dtype, np.integer) and scale:
            info = np.iinfo(dtype)
            images = np.clip(np.round(images / scale + zero), info.min, info.max)
        interpreter.set_tensor(index, images.astype(dtype))
        interpreter.invoke()
        detail = interpreter.get_output_details()[0]
        result = interpreter.get_tensor(detail["index"])
        scale, zero = detail["quantization"]
        if np.issubdtype(result.dtype, np.integer) and scale:
            result = (result.astype(np.float32) - zero) * scale
        return result.astype(np.float32)

    rank = len(output_detail["shape"])

    def call(images):
        result = tf.numpy_function(run, [tf.cast(images, tf.float32)], tf.float32, stateful=True)
        result.set_shape([None] * rank)
        return _pooled(result, path)

    scale, zero = input_detail["quantization"]
    dtype = np.dtype(input_detail["dtype"])
    quantization = None
    if dtype in (np.uint8, np.int8) and scale > 0:
        quantization = InputQuantization(float(scale), int(zero), dtype.name)
    return FeatureModel(
        call, crop, _feature_dim(call, crop, path), "tflite", quantization, savable=False
    )


def _tflite_graph(path: str) -> FeatureModel:
    from wsdhash.models.tflite_graph import TFLiteGraph, TFLiteGraphError

    try:
        graph = TFLiteGraph(path)
    except TFLiteGraphError as error:
        raise ModelFileError(str(error)) from None
    crop = _side([None, *graph.input_shape[1:]], path)

    def call(images):
        return _pooled(graph(images), path)

    return FeatureModel(call, crop, _feature_dim(call, crop, path), "tflite")


def load_feature_model(
    path: str,
    *,
    signature: str = "serving_default",
    output: str | None = None,
    savable: bool = False,
) -> FeatureModel:
    """Loads a `.keras` file, a SavedModel folder or a `.tflite` file (module doc).

    Args:
        savable: a model that can be saved inside a SavedModel: a `.tflite` model then
            runs as TensorFlow ops emulating the interpreter's arithmetic
            (wsdhash/models/tflite_graph.py) instead of in the interpreter itself.
    """
    if not os.path.exists(path):
        raise ModelFileError(f"--model={path} does not exist.")
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ModelFileError(f"{path}: a folder but not a SavedModel (no saved_model.pb).")
        return _saved_model(path, signature, output)
    extension = os.path.splitext(path)[1].lower()
    if extension == ".keras":
        return _keras(path)
    if extension == ".tflite":
        return _tflite_graph(path) if savable else _tflite(path)
    raise ModelFileError(
        f"{path}: not a .keras file, a SavedModel folder or a .tflite file (legacy .h5 "
        "models: load them in Keras and save as .keras)."
    )


def fingerprint(path: str) -> str:
    """SHA-256 of a model file, or of a SavedModel's graph and variable files."""
    digest = hashlib.sha256()
    if os.path.isdir(path):
        variables = os.path.join(path, "variables")
        names = sorted(os.listdir(variables)) if os.path.isdir(variables) else []
        files = [os.path.join(path, "saved_model.pb")]
        files += [os.path.join(variables, n) for n in names]
    else:
        files = [path]
    for name in files:
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
