"""A .tflite model rebuilt from TensorFlow ops (wsdhash/models/tflite_graph.py) gives the
interpreter's outputs: a tiny int8 model converted here with a representative dataset,
its float original, and the shared uint8 MobileNet v1 when present; unsupported ops
are refused by name; the graph saves in and reloads from a SavedModel."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from wsdhash.models import model_files
from wsdhash.models.tflite_graph import TFLiteGraph, TFLiteGraphError

MOBILENET = "/work/shared/realdata/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"


def _network(side=20, softmax=False):
    """Every supported layer kind: convolutions, depthwise, a residual ADD, both pools,
    the global mean, a dense layer (FULLY_CONNECTED) and reshapes."""
    keras.utils.set_random_seed(0)
    images = keras.Input((side, side, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(images)
    y = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = keras.layers.Add()([x, keras.layers.Conv2D(8, 1)(y)])
    x = keras.layers.AveragePooling2D(3, strides=1, padding="same")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    pooled = keras.layers.GlobalAveragePooling2D()(x)
    features = keras.layers.Dense(12)(pooled)
    if softmax:
        features = keras.layers.Softmax()(features)
    return keras.Model(images, features)


def _network_v3(side=20):
    """MobileNet v3's other ops: a dilated convolution, hard swish, a squeeze-and-excite
    block (sigmoid, multiply) and a concatenation."""
    keras.utils.set_random_seed(0)
    images = keras.Input((side, side, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="hard_silu")(images)
    dilated = keras.layers.Conv2D(8, 3, padding="same", dilation_rate=2)(x)
    squeeze = keras.layers.GlobalAveragePooling2D(keepdims=True)(dilated)
    excite = keras.layers.Conv2D(8, 1, activation="sigmoid")(squeeze)
    x = keras.layers.Concatenate()([x, keras.layers.Multiply()([dilated, excite])])
    return keras.Model(images, keras.layers.GlobalAveragePooling2D()(x))


def _images(count=12, side=20, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (count, side, side, 3)).astype(np.float32)


def _convert(network, quantized):
    converter = tf.lite.TFLiteConverter.from_keras_model(network)
    if quantized:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in _images(32, seed=2))
    return converter.convert()


def _interpreter_features(path, images):
    """What `python -m wsdhash.extract --model=FILE.tflite` computes (the interpreter)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model_files.load_feature_model(str(path))
    return model(tf.constant(images)).numpy()


def _graph_features(path, images):
    graph = TFLiteGraph(str(path))
    return tf.function(graph.__call__)(tf.constant(images)).numpy()


def _sign_agreement(a, b, bits=64):
    head = np.random.default_rng(3).normal(size=(a.shape[1], bits))
    centre = a.mean(0)  # a head on centred features, as a trained one is
    return float(np.mean(np.sign((a - centre) @ head) == np.sign((b - centre) @ head)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tflite")
    network = _network()
    (root / "int8.tflite").write_bytes(_convert(network, quantized=True))
    (root / "float.tflite").write_bytes(_convert(network, quantized=False))
    (root / "v3.tflite").write_bytes(_convert(_network_v3(), quantized=True))
    return root


@pytest.mark.parametrize(
    "name, ops",
    [
        (
            "int8.tflite",
            {
                "QUANTIZE",
                "CONV_2D",
                "DEPTHWISE_CONV_2D",
                "ADD",
                "AVERAGE_POOL_2D",
                "MAX_POOL_2D",
                "MEAN",
                "FULLY_CONNECTED",
                "DEQUANTIZE",
            },
        ),
        (
            "v3.tflite",
            {
                "SPACE_TO_BATCH_ND",
                "BATCH_TO_SPACE_ND",
                "HARD_SWISH",
                "LOGISTIC",
                "MUL",
                "CONCATENATION",
            },
        ),
    ],
)
def test_int8_graph_gives_the_interpreters_integers(files, name, ops):
    images = _images()
    graph = TFLiteGraph(str(files / name))
    assert ops <= {op for op, *_ in graph.ops}
    expected = _interpreter_features(files / name, images)
    ours = _graph_features(files / name, images)
    # The float output is a DEQUANTIZE of the last int8 tensor: its scale is one step.
    [last] = [inputs[0] for name, inputs, outputs, _ in graph.ops if outputs[0] == graph.output]
    step = float(graph.tensors[last].scale[0])
    difference = np.abs(ours - expected)
    print(
        f"{name}: max |difference| {difference.max():.3g} = "
        f"{difference.max() / step:.2f} steps, {np.mean(difference > 0):.3f} of values differ"
    )
    # At most one step where MEAN and ADD (float here, fixed point in the interpreter)
    # round the other way; the sign codes of a random head agree.
    assert difference.max() <= 1.01 * step
    assert _sign_agreement(expected, ours) >= 0.99


def test_float_graph_equals_the_interpreter(files):
    images = _images()
    expected = _interpreter_features(files / "float.tflite", images)
    np.testing.assert_allclose(
        _graph_features(files / "float.tflite", images), expected, rtol=1e-4, atol=1e-4
    )


def test_unsupported_ops_are_refused_by_name(tmp_path):
    path = tmp_path / "softmax.tflite"
    path.write_bytes(_convert(_network(softmax=True), quantized=False))
    with pytest.raises(TFLiteGraphError, match=r"cannot rebuild ops SOFTMAX as TensorFlow ops"):
        TFLiteGraph(str(path))
    with pytest.raises(model_files.ModelFileError, match="SOFTMAX"):
        model_files.load_feature_model(str(path), savable=True)


def test_the_graph_saves_and_reloads_in_a_saved_model(files, tmp_path):
    model = model_files.load_feature_model(str(files / "int8.tflite"), savable=True)
    assert model.savable and model.kind == "tflite" and model.feature_dim == 12

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 20, 20, 3], tf.float32)])
        def serve(self, images):
            return {"features": model(images)}

    tf.saved_model.save(Module(), str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    images = _images(5)
    np.testing.assert_array_equal(
        loaded.serve(tf.constant(images))["features"].numpy(), model(images).numpy()
    )


@pytest.mark.skipif(not os.path.exists(MOBILENET), reason="no shared MobileNet TFLite")
def test_shared_uint8_mobilenet_matches_the_interpreter():
    """The real uint8 MobileNet v1 (27 convolutions, XNNPACK in the interpreter): the
    graph's integers equal the interpreter's (measured: max difference 0 on these
    images; allowed: one quantization step)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 224, 224, 3)).astype(np.float32)
    smooth = np.broadcast_to(
        np.linspace(0, 255, 224, dtype=np.float32)[None, :, None, None], (1, 224, 224, 3)
    )
    images = np.concatenate([pixels, smooth]) / 127.5 - 1.0  # minus_one_to_one
    expected = _interpreter_features(MOBILENET, images)
    ours = _graph_features(MOBILENET, images).reshape(expected.shape)
    step = 0.023528477177023888  # the output tensor's scale
    assert np.abs(ours - expected).max() <= step * 1.01
    assert _sign_agreement(expected, ours) >= 0.99
