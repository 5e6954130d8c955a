"""Loading and saving backbone weights as named arrays or Keras weight files.

Three file formats are understood:

* `.npz`: named arrays, `{name: array}`. The names are the Keras variable paths of the
  model (`"conv1/kernel"`, `"bn1/moving_mean"`, ...), as written by `save_named_arrays`,
  or the keys of a foreign checkpoint that the backbone knows how to convert (for
  example a torchvision `state_dict`, see `wsdhash.models.alexnet` and
  `wsdhash.models.resnet18`). Plain arrays only, so no pickle is involved.
* `.npy` holding a pickled dict, as in DeepHash's `alexnet.npy`:
  `{layer: [W (HWIO), b]}` (or `{layer: {"weights": W, "biases": b}}`, or
  `{name: array}`). A pickle can run arbitrary code when it is read, so these files are
  read only when the caller passes `allow_pickle=True` explicitly.
* `.weights.h5` written by `keras.Model.save_weights` (and legacy `.h5` files such as
  the ones `keras.applications` downloads).

Every load checks names and shapes first and reports all mismatches in one error.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable, Mapping

import h5py
import keras
import numpy as np

logger = logging.getLogger(__name__)

# A backbone-specific translation of a foreign checkpoint (torchvision, DeepHash) into
# the model's variable names: returns the translated arrays and the names it dropped on
# purpose (a classifier the hash head replaces, BN step counters), which are reported.
Converter = Callable[[dict[str, np.ndarray]], tuple[dict[str, np.ndarray], list[str]]]


class WeightsMismatchError(ValueError):
    """A weights file does not fit the model: missing or unexpected names, wrong shapes."""


class PickleNotAllowedError(ValueError):
    """A `.npy` weights file is a pickle and `allow_pickle=True` was not passed."""


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What a load did.

    Attributes:
        source: the file the weights came from.
        loaded: model variable names that were assigned.
        ignored: names in the file dropped on purpose (e.g. torchvision's `fc.weight`).
    """

    source: str
    loaded: tuple[str, ...]
    ignored: tuple[str, ...]


# -----------------------------------------------------------------------------
# Layout conversions from PyTorch
# -----------------------------------------------------------------------------


def conv_kernel_from_torch(weight: np.ndarray) -> np.ndarray:
    """PyTorch conv weight (O, I/groups, H, W) -> Keras kernel (H, W, I/groups, O)."""
    if weight.ndim != 4:
        raise ValueError(f"Expected a 4-D OIHW conv weight, got shape {weight.shape}.")
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


def dense_kernel_from_torch(weight: np.ndarray) -> np.ndarray:
    """PyTorch linear weight (out, in) -> Keras kernel (in, out)."""
    if weight.ndim != 2:
        raise ValueError(f"Expected a 2-D (out, in) linear weight, got shape {weight.shape}.")
    return np.ascontiguousarray(weight.T)


def dense_kernel_after_torch_flatten(
    weight: np.ndarray, feature_map_shape: tuple[int, int, int]
) -> np.ndarray:
    """Linear weight applied to a flattened NCHW map -> Keras kernel for a flattened NHWC map.

    PyTorch flattens (C, H, W) channel-major, so input index `c*H*W + h*W + w`; Keras
    flattens (H, W, C), so input index `h*W*C + w*C + c`. The rows of the kernel must be
    permuted accordingly, or the first fully connected layer sees scrambled features.

    Args:
        weight: (out, C*H*W) PyTorch linear weight.
        feature_map_shape: (H, W, C) of the map that is flattened.

    Returns:
        (H*W*C, out) Keras kernel.
    """
    height, width, channels = feature_map_shape
    out_features, in_features = weight.shape
    if in_features != height * width * channels:
        raise ValueError(
            f"Linear weight of shape {weight.shape} does not take a flattened "
            f"{feature_map_shape} map ({height * width * channels} inputs)."
        )
    kernel = weight.reshape(out_features, channels, height, width).transpose(2, 3, 1, 0)
    return np.ascontiguousarray(kernel.reshape(height * width * channels, out_features))


# -----------------------------------------------------------------------------
# Model variables by name
# -----------------------------------------------------------------------------


def model_variables_by_name(model: keras.Model) -> dict[str, keras.Variable]:
    """All variables of `model` (trainable or not) keyed by their Keras path.

    Raises:
        ValueError: two variables share a path, so names cannot identify them.
    """
    variables: dict[str, keras.Variable] = {}
    for variable in model.weights:
        if variable.path in variables:
            raise ValueError(
                f"Model {model.name!r} has two variables at path {variable.path!r}; "
                "give its layers unique names."
            )
        variables[variable.path] = variable
    return variables


def save_named_arrays(model: keras.Model, path: str | os.PathLike) -> None:
    """Writes every variable of `model` to an `.npz` file keyed by variable path."""
    arrays = {name: np.asarray(v.numpy()) for name, v in model_variables_by_name(model).items()}
    np.savez(path, **arrays)


def assign_named_arrays(
    model: keras.Model,
    arrays: Mapping[str, np.ndarray],
    *,
    source: str,
    ignored: tuple[str, ...] | list[str] = (),
) -> LoadReport:
    """Assigns `arrays` to the variables of `model` with the same names.

    Nothing is assigned unless every name and shape fits: a half-loaded backbone trains
    without complaint and gives quietly wrong results.

    Args:
        model: the model to fill.
        arrays: {variable path: array}.
        source: where the arrays came from, for messages.
        ignored: names dropped on purpose before this call, echoed in the report.

    Returns:
        What was loaded and what was ignored.

    Raises:
        WeightsMismatchError: listing every missing name, unexpected name and shape
            mismatch at once.
    """
    variables = model_variables_by_name(model)
    missing = sorted(set(variables) - set(arrays))
    unexpected = sorted(set(arrays) - set(variables))
    mismatched = [
        f"{name}: model {tuple(variables[name].shape)} vs file {tuple(np.shape(arrays[name]))}"
        for name in sorted(set(variables) & set(arrays))
        if tuple(variables[name].shape) != tuple(np.shape(arrays[name]))
    ]
    if missing or unexpected or mismatched:
        raise WeightsMismatchError(
            _mismatch_message(model.name, source, missing, unexpected, mismatched)
        )
    for name, variable in variables.items():
        variable.assign(np.asarray(arrays[name], dtype=variable.dtype))
    return LoadReport(source=source, loaded=tuple(sorted(variables)), ignored=tuple(ignored))


def _mismatch_message(
    model_name: str,
    source: str,
    missing: list[str],
    unexpected: list[str],
    mismatched: list[str],
) -> str:
    lines = [f"Cannot load weights from {source!r} into model {model_name!r}:"]
    if missing:
        lines.append(f"  {len(missing)} missing (in the model, not in the file):")
        lines += [f"    {name}" for name in missing]
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected (in the file, not in the model):")
        lines += [f"    {name}" for name in unexpected]
    if mismatched:
        lines.append(f"  {len(mismatched)} shape mismatches:")
        lines += [f"    {entry}" for entry in mismatched]
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# Reading files
# -----------------------------------------------------------------------------


def read_named_arrays(
    path: str | os.PathLike, *, allow_pickle: bool = False
) -> dict[str, np.ndarray]:
    """Reads `{name: array}` from an `.npz` file or a pickled-dict `.npy` file.

    A DeepHash-style entry `layer: [W, b]` (or `layer: {"weights": W, "biases": b}`)
    becomes `layer/kernel` and `layer/bias`, the Keras names of a Conv2D/Dense layer.

    Args:
        path: `.npz` or `.npy` file.
        allow_pickle: must be True to read a `.npy` dict, which is a pickle.

    Raises:
        PickleNotAllowedError: a `.npy` pickle without `allow_pickle=True`.
        ValueError: the file holds something other than named arrays.
    """
    path = os.fspath(path)
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=allow_pickle) as data:
            return {name: data[name] for name in data.files}
    if not path.endswith(".npy"):
        raise ValueError(f"Named-array weights must be .npz or .npy, got {path!r}.")
    if not allow_pickle:
        try:
            np.load(path, allow_pickle=False)
        except ValueError:
            raise PickleNotAllowedError(
                f"{path!r} is a pickled .npy dict (DeepHash's alexnet.npy format). Loading "
                "a pickle can execute arbitrary code, so it needs an explicit "
                "allow_pickle=True (e.g. build_backbone(..., allow_pickle=True)); only do "
                "this for files you trust. Alternatively convert it once to an .npz of "
                "plain arrays."
            ) from None
        raise ValueError(f"{path!r} holds a single array, not a dict of named arrays.")
    # encoding="latin1": DeepHash's alexnet.npy was pickled by Python 2.
    content = np.load(path, allow_pickle=True, encoding="latin1")
    if content.dtype != object or content.shape != ():
        raise ValueError(f"{path!r} holds an array of shape {content.shape}, not a dict.")
    content = content.item()
    if not isinstance(content, dict):
        raise TypeError(f"{path!r} holds a {type(content).__name__}, not a dict.")
    return _flatten_layer_dict(content, path)


def _flatten_layer_dict(content: dict, path: str) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for layer, value in content.items():
        if isinstance(value, np.ndarray) and value.dtype != object:
            arrays[str(layer)] = value
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            arrays[f"{layer}/kernel"], arrays[f"{layer}/bias"] = map(np.asarray, value)
        elif isinstance(value, dict) and set(value) == {"weights", "biases"}:
            arrays[f"{layer}/kernel"] = np.asarray(value["weights"])
            arrays[f"{layer}/bias"] = np.asarray(value["biases"])
        else:
            raise ValueError(
                f"{path!r}: entry {layer!r} is neither an array, [W, b], nor "
                "{'weights': W, 'biases': b}."
            )
    return arrays


def _h5_datasets(path: str) -> dict[str, tuple[int, ...]]:
    found: dict[str, tuple[int, ...]] = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                found.__setitem__(name, obj.shape) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return found


def load_keras_weights_file(model: keras.Model, path: str) -> LoadReport:
    """Loads a `.weights.h5` file after checking its layout against the model's.

    Keras matches such files by layer structure; the expected layout is obtained by
    writing the model's own weights to a temporary file, so that every missing,
    unexpected or wrongly shaped entry can be listed before anything is assigned.
    """
    with tempfile.TemporaryDirectory() as tmp:
        reference = os.path.join(tmp, "expected.weights.h5")
        model.save_weights(reference)
        expected = _h5_datasets(reference)
    found = _h5_datasets(path)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{name}: model {expected[name]} vs file {found[name]}"
        for name in sorted(set(expected) & set(found))
        if expected[name] != found[name]
    ]
    if missing or unexpected or mismatched:
        raise WeightsMismatchError(
            _mismatch_message(model.name, path, missing, unexpected, mismatched)
        )
    model.load_weights(path)
    return LoadReport(source=path, loaded=tuple(sorted(expected)), ignored=())


def load_weights_file(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    allow_pickle: bool = False,
    converter: Converter | None = None,
) -> LoadReport:
    """Loads weights from any supported file into `model`.

    Args:
        model: the model to fill.
        path: `.npz`, `.npy` (pickled dict), `.weights.h5` or legacy `.h5`.
        allow_pickle: required for `.npy` dicts.
        converter: translates a foreign checkpoint's names and layouts (e.g. a
            torchvision `state_dict`) into the model's; applied to named arrays only.

    Returns:
        A `LoadReport`; ignored names are also logged.

    Raises:
        FileNotFoundError, PickleNotAllowedError, WeightsMismatchError, ValueError,
        TypeError (a `.npy` that does not hold a dict of arrays).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights file not found: {path!r}.")
    if path.endswith(".weights.h5"):
        report = load_keras_weights_file(model, path)
    elif path.endswith(".h5"):
        # Legacy whole-model/weights HDF5 (e.g. keras.applications downloads): Keras
        # matches by layer name and reports mismatches itself.
        try:
            model.load_weights(path)
        except Exception as error:
            raise WeightsMismatchError(
                f"Cannot load legacy HDF5 weights {path!r} into model {model.name!r}: {error}"
            ) from error
        report = LoadReport(source=path, loaded=(), ignored=())
    elif path.endswith((".npz", ".npy")):
        arrays = read_named_arrays(path, allow_pickle=allow_pickle)
        ignored: list[str] = []
        if converter is not None:
            arrays, ignored = converter(arrays)
        report = assign_named_arrays(model, arrays, source=path, ignored=ignored)
    else:
        raise ValueError(
            f"Unknown weights file type {path!r}; expected .npz, .npy, .weights.h5 or .h5."
        )
    if report.ignored:
        logger.warning(
            "Loading %s into %s ignored %d entries: %s",
            path,
            model.name,
            len(report.ignored),
            ", ".join(report.ignored),
        )
    return report
