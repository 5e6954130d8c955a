"""A TensorFlow Lite feature model as TensorFlow ops, so that it fits in a SavedModel.

    graph = TFLiteGraph("encoder.tflite")
    outputs = graph(images)   # float32 images as the interpreter takes them -> float32

A `.tflite` flatbuffer cannot run inside a TensorFlow graph (the interpreter is Python
and C++ outside it), so an export that composes one with a trained head rebuilds its
graph from TensorFlow ops. The model is read with TensorFlow's own flatbuffer schema
(`tensorflow.lite.tools.flatbuffer_utils`), which gives what `tf.lite.Interpreter`'s
tensor and op details leave out: strides, padding, dilations, fused activations and
depth multipliers, besides the weights and quantization parameters.

Supported ops: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, AVERAGE_POOL_2D,
MAX_POOL_2D, MEAN (over height and width), ADD, MUL, PAD, CONCATENATION, RESHAPE,
SQUEEZE, SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND (dilated convolutions), QUANTIZE,
DEQUANTIZE, RELU, RELU6, LOGISTIC, HARD_SWISH (MobileNet v3's blocks), in float32 or
quantized uint8 / int8 (per-tensor or per-channel) form; any other op is refused,
naming it.

Quantized arithmetic follows the interpreter as `python -m wsdhash.extract` runs it
(its default XNNPACK delegate for convolutions and fully connected layers):

* Convolutions and fully connected layers accumulate (q_x - z_x)(q_w - z_w) + bias
  exactly (float64 holds every int32 sum), then requantize as XNNPACK does: the int32
  sum converted to float32, times the float32 scale s_x s_w / s_y, rounded half to
  even, plus z_y, clamped to the fused activation's range.
* AVERAGE_POOL_2D (which the delegate leaves to TensorFlow Lite's own kernel): the sum
  of the window's elements, divided by their count rounding half away from zero.
* MUL: the product of the centred integers times the float32 scale s_a s_b / s_y.
* MEAN, ADD, CONCATENATION, QUANTIZE, LOGISTIC and HARD_SWISH go through float32
  (dequantize, compute, round half to even); the interpreter's kernels use
  fixed-point multipliers or lookup tables here and may differ by one quantization
  step.

Measured against the interpreter: tests/models/test_tflite_graph.py (a tiny int8 model
it converts itself, and the shared uint8 MobileNet v1 when present).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class TFLiteGraphError(ValueError):
    """A .tflite file that cannot be rebuilt from TensorFlow ops (names file and op)."""


# TensorFlow Lite's enums (schema.fbs), by value.
_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
_SAME, _VALID = 0, 1
_NONE, _RELU, _RELU_N1_TO_1, _RELU6 = 0, 1, 2, 3


def _builtin_names() -> dict[int, str]:
    from tensorflow.lite.python import schema_py_generated as schema

    return {
        value: name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }


def _round_half_even(x: tf.Tensor) -> tf.Tensor:
    return tf.round(x)  # tf.round rounds half to even, as lrintf and XNNPACK do


class _Tensor:
    """One flatbuffer tensor: shape, dtype, quantization, and its constant data."""

    def __init__(self, tensor, buffers):
        self.name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
        self.shape = [int(d) for d in tensor.shape] if tensor.shape is not None else []
        if tensor.type not in _TYPES:
            raise TFLiteGraphError(f"tensor {self.name!r} has an unsupported type {tensor.type}")
        self.dtype = np.dtype(_TYPES[tensor.type])
        quantization = tensor.quantization
        scale = getattr(quantization, "scale", None) if quantization is not None else None
        self.quantized = scale is not None and len(scale) > 0 and self.dtype.kind in "iu"
        if self.quantized:
            self.scale = np.asarray(scale, np.float32)
            self.zero_point = np.asarray(quantization.zeroPoint, np.int64)
            self.axis = int(quantization.quantizedDimension)
        data = buffers[tensor.buffer].data if tensor.buffer < len(buffers) else None
        self.data = None
        if data is not None and len(data):
            raw = np.asarray(data, np.uint8).tobytes()
            self.data = np.frombuffer(raw, self.dtype).reshape(self.shape)

    def limits(self) -> tuple[int, int]:
        info = np.iinfo(self.dtype)
        return int(info.min), int(info.max)


class TFLiteGraph:
    """The graph of a `.tflite` file's first subgraph as TensorFlow ops (module doc).

    Args:
        path: the `.tflite` file.

    Attributes:
        input_shape: the model's input shape (batch first).
        output_shape: the model's output shape.
    """

    def __init__(self, path: str):
        try:
            from tensorflow.lite.tools import flatbuffer_utils
        except ImportError as error:  # pragma: no cover (TensorFlow always ships it)
            raise TFLiteGraphError(f"{path}: cannot read TFLite files ({error})") from None
        try:
            model = flatbuffer_utils.read_model(path)
        except Exception as error:  # noqa: BLE001 (flatbuffers raises many kinds)
            raise TFLiteGraphError(f"{path}: not a readable TFLite model ({error})") from None
        self.path = path
        graph = model.subgraphs[0]
        if len(graph.inputs) != 1:
            raise TFLiteGraphError(f"{path}: the model has {len(graph.inputs)} inputs; need one")
        self.tensors = [_Tensor(t, model.buffers) for t in graph.tensors]
        names = _builtin_names()
        codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
        self.ops = []
        unsupported = set()
        for op in graph.operators:
            name = names.get(codes[op.opcodeIndex], f"custom op {op.opcodeIndex}")
            if name not in _OPS:
                unsupported.add(name)
            self.ops.append((name, list(op.inputs), list(op.outputs), op.builtinOptions))
        if unsupported:
            raise TFLiteGraphError(
                f"{path}: cannot rebuild ops {', '.join(sorted(unsupported))} as TensorFlow "
                f"ops (supported: {', '.join(sorted(_OPS))}); export with --input=features"
            )
        self.input, self.output = int(graph.inputs[0]), int(graph.outputs[0])
        self.input_shape = self.tensors[self.input].shape
        self.output_shape = self.tensors[self.output].shape

    # ------------------------------------------------------------------ running
    def __call__(self, images: tf.Tensor) -> tf.Tensor:
        """Float32 images (B, ...) -> the float32 output, (de)quantized as
        `model_files` does around the interpreter."""
        images = tf.cast(images, tf.float32)
        first = self.tensors[self.input]
        if first.quantized:
            low, high = first.limits()
            scale, zero = np.float32(first.scale[0]), np.float32(first.zero_point[0])
            images = tf.clip_by_value(_round_half_even(images / scale + zero), low, high)
            images = tf.cast(images, tf.float64)
        values = {self.input: images}
        for name, inputs, outputs, options in self.ops:
            values[outputs[0]] = _OPS[name](self, values, inputs, outputs[0], options)
        result = values[self.output]
        last = self.tensors[self.output]
        if last.quantized:
            scale, zero = np.float32(last.scale[0]), np.float32(last.zero_point[0])
            return (tf.cast(result, tf.float32) - zero) * scale
        return tf.cast(result, tf.float32)

    # ------------------------------------------------------------------ helpers
    def _value(self, values: dict, index: int) -> tf.Tensor:
        if index in values:
            return values[index]
        tensor = self.tensors[index]
        if tensor.data is None:
            raise TFLiteGraphError(f"{self.path}: tensor {tensor.name!r} has no value")
        if tensor.quantized:  # constants enter the graph as their integers
            return tf.constant(tensor.data.astype(np.float64))
        return tf.constant(tensor.data.astype(np.float32))

    def _centred(self, values: dict, index: int) -> tf.Tensor:
        """q - z of a quantized tensor (float64, exact)."""
        tensor = self.tensors[index]
        value = tf.cast(self._value(values, index), tf.float64)
        zero = tensor.zero_point
        if zero.size > 1:  # per channel
            shape = [1] * len(tensor.shape)
            shape[tensor.axis] = -1
            zero = zero.reshape(shape)
        return value - tf.constant(
            zero.astype(np.float64) if zero.size > 1 else float(zero[0]), tf.float64
        )

    def _weights(self, index: int) -> np.ndarray:
        """Constant weights: q - z (float64) when quantized, else float32."""
        tensor = self.tensors[index]
        if tensor.data is None:
            raise TFLiteGraphError(f"{self.path}: weights {tensor.name!r} are not constant")
        if not tensor.quantized:
            return tensor.data.astype(np.float32)
        zero = tensor.zero_point
        if zero.size > 1:
            shape = [1] * len(tensor.shape)
            shape[tensor.axis] = -1
            zero = zero.reshape(shape)
        return tensor.data.astype(np.float64) - zero.astype(np.float64)

    def _activation_range(self, output: int, activation: int) -> tuple[float, float]:
        """The fused activation's bounds, in the output's units."""
        tensor = self.tensors[output]
        bounds = {
            _NONE: (-np.inf, np.inf),
            _RELU: (0.0, np.inf),
            _RELU_N1_TO_1: (-1.0, 1.0),
            _RELU6: (0.0, 6.0),
        }[activation]
        if not tensor.quantized:
            return bounds
        low, high = tensor.limits()
        scale, zero = np.float32(tensor.scale[0]), int(tensor.zero_point[0])
        if np.isfinite(bounds[0]):
            low = max(low, zero + int(np.rint(np.float32(bounds[0]) / scale)))
        if np.isfinite(bounds[1]):
            high = min(high, zero + int(np.rint(np.float32(bounds[1]) / scale)))
        return float(low), float(high)

    def _requantize(self, accumulator, inputs: list[int], output: int, activation: int):
        """XNNPACK's requantization of an int32 accumulator (module doc)."""
        x, w, y = (self.tensors[i] for i in (inputs[0], inputs[1], output))
        scale = (x.scale[0] * w.scale) / y.scale[0]  # float32 throughout, per channel
        scaled = tf.cast(accumulator, tf.float32) * tf.constant(scale.astype(np.float32))
        low, high = self._activation_range(output, activation)
        result = tf.clip_by_value(_round_half_even(scaled) + float(y.zero_point[0]), low, high)
        return tf.cast(result, tf.float64)

    def _float_activation(self, value, output: int, activation: int):
        low, high = self._activation_range(output, activation)
        if np.isfinite(low) or np.isfinite(high):
            value = tf.clip_by_value(value, low, high)
        return value

    def _bias(self, values: dict, inputs: list[int], dtype) -> tf.Tensor | float:
        if len(inputs) < 3 or inputs[2] < 0:
            return 0.0
        return tf.cast(tf.constant(self.tensors[inputs[2]].data), dtype)

    def _quantized(self, index: int) -> bool:
        return self.tensors[index].quantized

    def _dequantized(self, values: dict, index: int) -> tf.Tensor:
        tensor = self.tensors[index]
        if not tensor.quantized:
            return tf.cast(self._value(values, index), tf.float32)
        centred = tf.cast(self._centred(values, index), tf.float32)
        return centred * float(tensor.scale[0])

    def _quantize_to(self, value: tf.Tensor, output: int, activation: int = _NONE):
        """A float32 value into the output's quantized integers (half to even)."""
        tensor = self.tensors[output]
        inverse = np.float32(1.0) / np.float32(tensor.scale[0])
        low, high = self._activation_range(output, activation)
        result = _round_half_even(value * inverse) + float(tensor.zero_point[0])
        return tf.cast(tf.clip_by_value(result, low, high), tf.float64)

    def _batch_shape(self, output: int) -> list[int]:
        return [-1, *self.tensors[output].shape[1:]]


# ---------------------------------------------------------------------------- ops
def _padding(options) -> str:
    return "SAME" if options.padding == _SAME else "VALID"


def _conv_2d(graph: TFLiteGraph, values, inputs, output, options):
    filters = np.transpose(graph._weights(inputs[1]), (1, 2, 3, 0))  # OHWI -> HWIO
    strides = [1, options.strideH, options.strideW, 1]
    dilations = [1, options.dilationHFactor, options.dilationWFactor, 1]
    if graph._quantized(inputs[0]):
        x = graph._centred(values, inputs[0])
        accumulator = tf.nn.conv2d(x, filters, strides, _padding(options), dilations=dilations)
        accumulator += graph._bias(values, inputs, tf.float64)
        return graph._requantize(accumulator, inputs, output, options.fusedActivationFunction)
    x = tf.cast(graph._value(values, inputs[0]), tf.float32)
    y = tf.nn.conv2d(x, filters, strides, _padding(options), dilations=dilations)
    y += graph._bias(values, inputs, tf.float32)
    return graph._float_activation(y, output, options.fusedActivationFunction)


def _depthwise_conv_2d(graph: TFLiteGraph, values, inputs, output, options):
    weights = graph._weights(inputs[1])  # (1, H, W, C * M)
    channels = graph.tensors[inputs[0]].shape[-1]
    height, width = weights.shape[1:3]
    filters = weights.reshape(height, width, channels, -1)
    strides = [1, options.strideH, options.strideW, 1]
    dilations = [options.dilationHFactor, options.dilationWFactor]
    if graph._quantized(inputs[0]):
        x = graph._centred(values, inputs[0])
        accumulator = tf.nn.depthwise_conv2d(
            x, filters, strides, _padding(options), dilations=dilations
        )
        accumulator += graph._bias(values, inputs, tf.float64)
        return graph._requantize(accumulator, inputs, output, options.fusedActivationFunction)
    x = tf.cast(graph._value(values, inputs[0]), tf.float32)
    y = tf.nn.depthwise_conv2d(x, filters, strides, _padding(options), dilations=dilations)
    y += graph._bias(values, inputs, tf.float32)
    return graph._float_activation(y, output, options.fusedActivationFunction)


def _fully_connected(graph: TFLiteGraph, values, inputs, output, options):
    weights = graph._weights(inputs[1])  # (O, I)
    activation = options.fusedActivationFunction
    if graph._quantized(inputs[0]):
        x = tf.reshape(graph._centred(values, inputs[0]), [-1, weights.shape[1]])
        accumulator = tf.matmul(x, weights.T) + graph._bias(values, inputs, tf.float64)
        result = graph._requantize(accumulator, inputs, output, activation)
    else:
        x = tf.reshape(tf.cast(graph._value(values, inputs[0]), tf.float32), [-1, weights.shape[1]])
        y = tf.matmul(x, weights.T) + graph._bias(values, inputs, tf.float32)
        result = graph._float_activation(y, output, activation)
    return tf.reshape(result, graph._batch_shape(output))


def _window_sums(x: tf.Tensor, options) -> tuple[tf.Tensor, tf.Tensor]:
    """Per window: the sum of its elements inside the image, and their count (padding
    excluded, as TensorFlow Lite counts them)."""
    kernel = [options.filterHeight, options.filterWidth]
    strides = [1, options.strideH, options.strideW, 1]
    channels = x.shape[-1]
    ones = tf.ones([*kernel, channels, 1], x.dtype)
    sums = tf.nn.depthwise_conv2d(x, ones, strides, _padding(options))
    counts = tf.nn.conv2d(
        tf.ones_like(x[:1, :, :, :1]), tf.ones([*kernel, 1, 1], x.dtype), strides, _padding(options)
    )
    return sums, counts


def _average_pool_2d(graph: TFLiteGraph, values, inputs, output, options):
    x = graph._value(values, inputs[0])
    activation = options.fusedActivationFunction
    if graph._quantized(inputs[0]):
        sums, counts = _window_sums(tf.cast(x, tf.float64), options)
        sums, counts = tf.cast(sums, tf.int64), tf.cast(counts, tf.int64)
        half = counts // 2
        rounded = tf.where(sums > 0, sums + half, sums - half)
        mean = tf.cast(tf.truncatediv(rounded, counts), tf.float64)
        low, high = graph._activation_range(output, activation)
        return tf.clip_by_value(mean, low, high)
    kernel = [options.filterHeight, options.filterWidth]
    strides = [options.strideH, options.strideW]
    y = tf.nn.avg_pool2d(tf.cast(x, tf.float32), kernel, strides, _padding(options))
    return graph._float_activation(y, output, activation)


def _max_pool_2d(graph: TFLiteGraph, values, inputs, output, options):
    x = graph._value(values, inputs[0])
    kernel = [options.filterHeight, options.filterWidth]
    strides = [options.strideH, options.strideW]
    dtype = x.dtype
    y = tf.cast(tf.nn.max_pool2d(tf.cast(x, tf.float32), kernel, strides, _padding(options)), dtype)
    return graph._float_activation(y, output, options.fusedActivationFunction)


def _mean(graph: TFLiteGraph, values, inputs, output, options):
    axes = sorted(
        int(a) % len(graph.tensors[inputs[0]].shape)
        for a in np.ravel(graph.tensors[inputs[1]].data)
    )
    if 0 in axes:
        raise TFLiteGraphError(f"{graph.path}: MEAN over the batch axis is not supported")
    keep = bool(getattr(options, "keepDims", False))
    mean = tf.reduce_mean(graph._dequantized(values, inputs[0]), axis=axes, keepdims=keep)
    if graph._quantized(output):
        return graph._quantize_to(mean, output)
    return mean


def _add(graph: TFLiteGraph, values, inputs, output, options):
    total = graph._dequantized(values, inputs[0]) + graph._dequantized(values, inputs[1])
    activation = options.fusedActivationFunction if options is not None else _NONE
    if graph._quantized(output):
        return graph._quantize_to(total, output, activation)
    return graph._float_activation(total, output, activation)


def _pad(graph: TFLiteGraph, values, inputs, output, options):
    paddings = graph.tensors[inputs[1]].data.astype(np.int64)
    x = graph._value(values, inputs[0])
    tensor = graph.tensors[inputs[0]]
    fill = float(tensor.zero_point[0]) if tensor.quantized else 0.0
    return tf.pad(x, paddings, constant_values=tf.cast(fill, x.dtype))


def _reshape(graph: TFLiteGraph, values, inputs, output, options):
    # The batch may differ from the converted model's (usually 1): keep it free.
    return tf.reshape(graph._value(values, inputs[0]), graph._batch_shape(output))


def _quantize(graph: TFLiteGraph, values, inputs, output, options):
    return graph._quantize_to(graph._dequantized(values, inputs[0]), output)


def _dequantize(graph: TFLiteGraph, values, inputs, output, options):
    return graph._dequantized(values, inputs[0])


def _relu(low: float, high: float):
    def op(graph: TFLiteGraph, values, inputs, output, options):
        value = tf.clip_by_value(graph._dequantized(values, inputs[0]), low, high)
        if graph._quantized(output):
            return graph._quantize_to(value, output)
        return value

    return op


def _mul(graph: TFLiteGraph, values, inputs, output, options):
    activation = options.fusedActivationFunction if options is not None else _NONE
    if graph._quantized(output):
        # XNNPACK's multiply: the product of the centred integers (exact in float64),
        # requantized with the float32 scale s_a s_b / s_y.
        a, b, y = (graph.tensors[i] for i in (*inputs[:2], output))
        product = graph._centred(values, inputs[0]) * graph._centred(values, inputs[1])
        scale = (a.scale[0] * b.scale[0]) / y.scale[0]
        scaled = tf.cast(product, tf.float32) * np.float32(scale)
        low, high = graph._activation_range(output, activation)
        result = _round_half_even(scaled) + float(y.zero_point[0])
        return tf.cast(tf.clip_by_value(result, low, high), tf.float64)
    product = graph._dequantized(values, inputs[0]) * graph._dequantized(values, inputs[1])
    return graph._float_activation(product, output, activation)


def _elementwise(function):
    """A unary op computed on dequantized values, the result quantized again."""

    def op(graph: TFLiteGraph, values, inputs, output, options):
        value = function(graph._dequantized(values, inputs[0]))
        if graph._quantized(output):
            return graph._quantize_to(value, output)
        return value

    return op


def _concatenation(graph: TFLiteGraph, values, inputs, output, options):
    axis = options.axis % len(graph.tensors[output].shape)
    activation = options.fusedActivationFunction
    if graph._quantized(output):
        parts = [graph._dequantized(values, i) for i in inputs]
        return graph._quantize_to(tf.concat(parts, axis), output, activation)
    parts = [tf.cast(graph._value(values, i), tf.float32) for i in inputs]
    return graph._float_activation(tf.concat(parts, axis), output, activation)


def _space_to_batch_nd(graph: TFLiteGraph, values, inputs, output, options):
    # How a dilated convolution converts; it moves elements only (exact). Padding
    # fills with the zero point, the quantized zero.
    block = graph.tensors[inputs[1]].data.astype(np.int64)
    paddings = graph.tensors[inputs[2]].data.astype(np.int64)
    x = graph._value(values, inputs[0])
    tensor = graph.tensors[inputs[0]]
    if tensor.quantized and int(tensor.zero_point[0]) != 0:
        zero = float(tensor.zero_point[0])
        shifted = tf.space_to_batch_nd(x - zero, block, paddings)
        return shifted + zero
    return tf.space_to_batch_nd(x, block, paddings)


def _batch_to_space_nd(graph: TFLiteGraph, values, inputs, output, options):
    block = graph.tensors[inputs[1]].data.astype(np.int64)
    crops = graph.tensors[inputs[2]].data.astype(np.int64)
    return tf.batch_to_space(graph._value(values, inputs[0]), block, crops)


_OPS = {
    "CONV_2D": _conv_2d,
    "DEPTHWISE_CONV_2D": _depthwise_conv_2d,
    "FULLY_CONNECTED": _fully_connected,
    "AVERAGE_POOL_2D": _average_pool_2d,
    "MAX_POOL_2D": _max_pool_2d,
    "MEAN": _mean,
    "ADD": _add,
    "PAD": _pad,
    "RESHAPE": _reshape,
    "SQUEEZE": _reshape,
    "QUANTIZE": _quantize,
    "DEQUANTIZE": _dequantize,
    "RELU": _relu(0.0, np.inf),
    "RELU6": _relu(0.0, 6.0),
    "MUL": _mul,
    "LOGISTIC": _elementwise(tf.sigmoid),
    "HARD_SWISH": _elementwise(lambda x: x * tf.nn.relu6(x + 3.0) / 6.0),
    "CONCATENATION": _concatenation,
    "SPACE_TO_BATCH_ND": _space_to_batch_nd,
    "BATCH_TO_SPACE_ND": _batch_to_space_nd,
}
