"""A quantized model's input quantization names the normalisation it expects: worked
ranges and names, pixels fed through the derived mapping equal the pixels fed to the
interpreter as they are, contradicting normalisations are refused naming both, and the
shared MobileNet-v1 model (when present) reads as minus_one_to_one."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tflite_models import write_quantized_tflite

from wsdhash.data.preprocessing import NORMALIZATIONS
from wsdhash.models import model_files
from wsdhash.models.input_quantization import (
    InputQuantization,
    check_normalization,
    pixel_normalization,
)

SHARED_MODEL = "/work/shared/realdata/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"


def test_ranges_and_names_worked_by_hand():
    mobilenet = InputQuantization(1 / 128, 128, "uint8")
    assert mobilenet.float_range == (-1.0, 127 / 128)  # (0 - 128) / 128, (255 - 128) / 128
    assert pixel_normalization(mobilenet)[0] == "minus_one_to_one"
    assert pixel_normalization(InputQuantization(1 / 128, 0, "int8"))[0] == "minus_one_to_one"
    assert pixel_normalization(InputQuantization(1.0, 0, "uint8"))[0] == "raw_pixels"
    assert pixel_normalization(InputQuantization(1 / 255, 0, "uint8"))[0] == "unit_range"
    # [-2, 3.1]: no registered normalisation; pixel p goes to -2 + 0.02 p, i.e. level p.
    odd = InputQuantization(0.02, 100, "uint8")
    name, normalize = pixel_normalization(odd)
    assert name == "input_quantization(scale=0.02,zero_point=100)"
    pixels = np.arange(256, dtype=np.float32)
    real = normalize(tf.constant(pixels)).numpy()
    np.testing.assert_allclose(real[[0, 255]], [-2.0, 3.1], atol=1e-6)
    np.testing.assert_array_equal(np.round(real / 0.02 + 100), pixels)


def test_contradicting_normalizations_are_refused_naming_both():
    mobilenet = InputQuantization(1 / 128, 128, "uint8")
    check_normalization("minus_one_to_one", mobilenet)
    with pytest.raises(ValueError) as error:
        check_normalization("raw_pixels", mobilenet, model="--model=m.tflite")
    assert str(error.value) == (
        "--normalization=raw_pixels contradicts --model=m.tflite: its uint8 input (scale "
        "0.0078125, zero point 128) holds values in [-1, 0.9922], but raw_pixels maps pixels "
        "0..255 to [0, 255] (254 of the 256 pixel values would saturate); leave "
        "--normalization out to use the model's own (minus_one_to_one)."
    )  # r / s + z = 128 p + 128 is more than one level above 255 from p = 2 on
    with pytest.raises(ValueError, match="unit_range maps pixels 0..255 to .0, 1. .pixels "):
        check_normalization("unit_range", mobilenet)
    # A model trained on ImageNet statistics and quantized over their range: the
    # per-channel normalisation differs from the linear map by a few levels only.
    low, high = -0.485 / 0.229, (1 - 0.406) / 0.225
    imagenet = InputQuantization((high - low) / 255, round(-low / ((high - low) / 255)), "uint8")
    check_normalization("torch_imagenet", imagenet)
    with pytest.raises(ValueError, match="raw_pixels contradicts"):
        check_normalization("raw_pixels", imagenet)


@pytest.mark.parametrize("input_type", [tf.uint8, tf.int8])
def test_derived_normalization_feeds_the_pixels_as_the_quantized_input(tmp_path, input_type):
    path = str(tmp_path / "tiny.tflite")
    write_quantized_tflite(path, input_type=input_type)
    feature_model = model_files.load_feature_model(path)
    quantization = feature_model.input_quantization
    assert quantization.dtype == input_type.name
    assert abs(quantization.scale - 2 / 255) < 1e-3  # representative images span [-1, 1]
    name, normalize = pixel_normalization(quantization)
    assert name == "minus_one_to_one"
    check_normalization(name, quantization)
    with pytest.raises(ValueError, match="raw_pixels contradicts"):
        check_normalization("raw_pixels", quantization)

    # Reference: the interpreter run on the pixels themselves as the quantized input
    # (uint8: q = p; int8: q = p - 128), its output dequantized.
    pixels = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3)).astype(np.float32)
    interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], pixels.shape)
    interpreter.allocate_tensors()
    (inputs,), (outputs,) = interpreter.get_input_details(), interpreter.get_output_details()
    offset = 0 if input_type == tf.uint8 else -128
    interpreter.set_tensor(inputs["index"], (pixels + offset).astype(input_type.name))
    interpreter.invoke()
    scale, zero = outputs["quantization"]
    expected = (interpreter.get_tensor(outputs["index"]).astype(np.float32) - zero) * scale
    # The derived mapping puts every pixel value within one level of p + offset (the
    # model's zero point is 127 here, minus_one_to_one's centre 127.5) ...
    levels = normalize(tf.range(256, dtype=tf.float32)).numpy() / quantization.scale
    levels = np.clip(np.round(levels + quantization.zero_point), *quantization.levels)
    assert np.abs(levels - (np.arange(256) + offset)).max() <= 1
    # ... so the features are those of the pixels fed as they are, within the few
    # output levels that one input level moves them; raw pixels (the bug) are far off.
    features = feature_model(normalize(tf.constant(pixels))).numpy()
    np.testing.assert_allclose(features, expected.reshape(3, -1), atol=3 * scale)
    assert len(np.unique(features, axis=0)) == 3
    raw = feature_model(NORMALIZATIONS.get("raw_pixels")(tf.constant(pixels))).numpy()
    assert np.abs(raw - expected.reshape(3, -1)).max() > 10 * scale


@pytest.mark.skipif(not os.path.exists(SHARED_MODEL), reason="shared MobileNet-v1 absent")
def test_shared_mobilenet_reads_as_minus_one_to_one():
    quantization = model_files.load_feature_model(SHARED_MODEL).input_quantization
    assert quantization == InputQuantization(0.0078125, 128, "uint8")
    assert pixel_normalization(quantization)[0] == "minus_one_to_one"
    for name in ("raw_pixels", "unit_range", "torch_imagenet", "caffe_bgr"):
        with pytest.raises(ValueError, match=f"--normalization={name} contradicts"):
            check_normalization(name, quantization)
    assert set(NORMALIZATIONS.names()) >= {"raw_pixels", "minus_one_to_one"}
