"""Serving under real clients and bad input: the exported SavedModel runs under
TensorFlow 1's session loader (TensorFlow Serving's path) and `saved_model_cli run`;
every item of a batch decodes on its own (truncated JPEG/PNG, header + garbage, a
decompression bomb); invalid items give zero outputs; EXIF orientation is applied as
OpenCV applies it in training."""

import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib

import cv2
import numpy as np
import pytest
import tensorflow as tf

from wsdhash.data import image_header, preprocessing
from wsdhash.data.image_header import PNG_MAGIC
from wsdhash.export import module as export_module
from wsdhash.export.saved_model import export_saved_model
from wsdhash.models.assembly import build_model
from wsdhash.training.config import DataConfig, ModelConfig, TrainConfig

CROP = 28
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def _pattern(height=32, width=32, seed=0):
    """An RGB image with large flat blocks (so two JPEG decoders agree within a few
    grey levels) and no symmetry (so every EXIF orientation gives other pixels)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = np.kron(blocks, np.ones((height // 4, width // 4, 1), np.uint8))
    image[: height // 4, : width // 2] = (255, 0, 0)  # a wide red bar, top left
    return image


def _jpeg(image, quality=95):
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    assert ok
    return data.tobytes()


def _png(image):
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


def with_exif_orientation(jpeg: bytes, orientation: int, byte_order: str = "MM") -> bytes:
    """The JPEG with an APP1 EXIF segment holding one IFD0 entry: the orientation."""
    e = ">" if byte_order == "MM" else "<"
    tiff = (
        byte_order.encode()
        + struct.pack(e + "HI", 42, 8)
        + struct.pack(e + "H", 2)
        + struct.pack(e + "HHII", 0x010F, 2, 4, 0)  # a "Make" entry before orientation
        + struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0)
        + struct.pack(e + "I", 0)
    )
    body = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def png_claiming_size(width: int, height: int) -> bytes:
    """A small PNG whose IHDR (with a correct CRC) claims width x height pixels."""
    data = bytearray(_png(_pattern(8, 8)))
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


@pytest.fixture(scope="module")
def module_and_model():
    data = DataConfig(crop_size=CROP, image_size=32)
    config = TrainConfig(data=data, model=ModelConfig(bits=16), seed=3)
    model, _, _ = build_model(config, config.model.bits)
    # Non-trivial batch-norm statistics, so a variable left uninitialised would show.
    for variable in model.non_trainable_variables:
        variable.assign(np.random.default_rng(1).uniform(0.5, 1.5, variable.shape))
    return export_module.HashingServingModule(model, 32, CROP), model


def _run(module, items):
    result = module.serving_default(tf.constant(items))
    return {key: value.numpy() for key, value in result.items()}


def test_each_item_decodes_on_its_own(module_and_model):
    module, _ = module_and_model
    jpeg, png = _jpeg(_pattern(seed=1)), _png(_pattern(seed=2))
    bad = {
        "half a JPEG": jpeg[: len(jpeg) // 2],
        "JPEG header + garbage": jpeg[:200] + b"\x17" * 500,
        "JPEG without its end": jpeg[:-40],
        "truncated PNG": png[: len(png) // 2],
        "PNG magic only": png[:8],
        "empty": b"",
    }
    items = [jpeg, *bad.values(), png, b"not an image at all"]
    served = _run(module, items)
    expected_status = (
        [image_header.STATUS_OK]
        + [image_header.STATUS_UNDECODABLE] * (len(bad) - 1)
        + [
            image_header.STATUS_NOT_AN_IMAGE,
            image_header.STATUS_OK,
            image_header.STATUS_NOT_AN_IMAGE,
        ]
    )
    assert served["status"].tolist() == expected_status
    assert served["valid"].tolist() == [s == image_header.STATUS_OK for s in expected_status]
    # The good items' outputs equal those of a batch holding only them.
    alone = _run(module, [jpeg, png])
    for key in ("embedding", "codes", "packed_codes"):
        np.testing.assert_array_equal(served[key][[0, len(items) - 2]], alone[key])
    assert set(np.unique(alone["codes"])) <= {-1, 1}


def test_invalid_items_give_zero_outputs(module_and_model):
    module, _ = module_and_model
    served = _run(module, [b"garbage", _png(_pattern())[:30], _jpeg(_pattern())])
    for key in ("embedding", "codes", "packed_codes"):
        assert not served[key][:2].any(), key  # not all-ones codes
    assert served["codes"][2].any() and served["valid"].tolist() == [False, False, True]


def test_pixel_limit_is_checked_before_decoding(module_and_model):
    _, model = module_and_model
    # A 20000 x 20000 header: decoding would take seconds and gigabytes; the header
    # check rejects it at once (the body is an 8 x 8 image, so decoding it would fail
    # with STATUS_UNDECODABLE instead).
    big = png_claiming_size(20000, 20000)
    module = export_module.HashingServingModule(model, 32, CROP)
    assert _run(module, [big])["status"].tolist() == [image_header.STATUS_TOO_LARGE]
    # The limit is width x height, inclusive, for both formats.
    image = _pattern(40, 48)  # 1,920 pixels
    limited = export_module.HashingServingModule(model, 32, CROP, max_pixels=1920)
    tighter = export_module.HashingServingModule(model, 32, CROP, max_pixels=1919)
    items = [_jpeg(image), _png(image)]
    assert _run(limited, items)["status"].tolist() == [image_header.STATUS_OK] * 2
    assert _run(tighter, items)["status"].tolist() == [image_header.STATUS_TOO_LARGE] * 2
    with pytest.raises(ValueError, match="max_pixels"):
        export_module.HashingServingModule(model, 32, CROP, max_pixels=0)


@pytest.mark.parametrize("byte_order", ["MM", "II"])
def test_exif_orientation_matches_the_training_decoder(byte_order):
    image = _pattern(32, 32, seed=4)
    plain = _jpeg(image)
    reference = tf.io.decode_jpeg(plain, channels=3).numpy()
    for orientation in range(1, 9):
        data = with_exif_orientation(plain, orientation, byte_order)
        assert int(image_header.exif_orientation(tf.constant(data))) == orientation
        # Training: OpenCV turns the image upright by its EXIF tag.
        trained = preprocessing.decode_and_resize(data, "x.jpg", 32).astype(int)
        served = (
            image_header.apply_orientation(
                tf.io.decode_jpeg(data, channels=3),
                image_header.exif_orientation(tf.constant(data)),
            )
            .numpy()
            .astype(int)
        )
        # Two JPEG decoders agree within a few grey levels on flat blocks; any other
        # orientation is far off.
        errors = {
            o: np.abs(
                image_header.apply_orientation(tf.constant(reference), tf.constant(o)).numpy()
                - trained
            ).mean()
            for o in range(1, 9)
        }
        assert min(errors, key=errors.get) == orientation, (orientation, errors)
        assert np.abs(served - trained).mean() < 3, orientation
    assert int(image_header.exif_orientation(tf.constant(plain))) == 1
    assert int(image_header.exif_orientation(tf.constant(b"Exif\x00\x00garbage"))) == 1


def test_exif_rotated_photo_is_encoded_as_in_training(module_and_model):
    module, model = module_and_model
    image = _pattern(32, 32, seed=5)
    rotated = with_exif_orientation(_jpeg(image), 6)
    served = _run(module, [rotated])
    pixels = preprocessing.decode_and_resize(rotated, "x.jpg", 32)
    top = (32 - CROP) // 2
    crop = pixels[top : top + CROP, top : top + CROP][None]
    expected = model(crop, training=False).numpy()
    assert served["valid"].tolist() == [True]
    np.testing.assert_allclose(served["embedding"], expected, atol=0.05 * np.abs(expected).max())


@pytest.fixture(scope="module")
def saved_model(module_and_model, tmp_path_factory):
    _, model = module_and_model
    output = tmp_path_factory.mktemp("export") / "model"
    pipeline_config = type("P", (), {"image_size": 32, "crop_size": CROP})
    export_saved_model(model, pipeline_config, str(output))
    return output


def test_session_loader_runs_both_signatures_without_wsdhash(
    saved_model, module_and_model, tmp_path
):
    module, _ = module_and_model
    items = [_jpeg(_pattern(seed=6)), b"garbage", _png(_pattern(seed=7))]
    pixels = np.random.default_rng(0).uniform(0, 255, (2, CROP, CROP, 3)).astype(np.float32)
    np.save(tmp_path / "pixels.npy", pixels)
    (tmp_path / "items.txt").write_text("\n".join(item.hex() for item in items))
    script = textwrap.dedent(f"""
        import sys
        sys.modules["wsdhash"] = None  # plain TensorFlow must suffice
        import numpy as np, tensorflow as tf
        items = [bytes.fromhex(h) for h in open({str(tmp_path / "items.txt")!r}).read().split()]
        pixels = np.load({str(tmp_path / "pixels.npy")!r})
        results = {{}}
        with tf.Graph().as_default(), tf.compat.v1.Session() as session:
            graph = tf.compat.v1.saved_model.load(session, ["serve"], {str(saved_model)!r})
            runs = (("serving_default", "serving_default", items),
                    ("one_item", "serving_default", items[:1]),  # the sequential branch
                    ("encode_images", "encode_images", pixels))
            for result, name, feed in runs:
                signature = graph.signature_def[name]
                (key,) = signature.inputs
                fetches = {{k: v.name for k, v in signature.outputs.items()}}
                out = session.run(fetches, {{signature.inputs[key].name: feed}})
                results.update({{f"{{result}}/{{k}}": v for k, v in out.items()}})
        np.savez({str(tmp_path / "session.npz")!r}, **results)
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, env=ENV
    )
    assert result.returncode == 0, result.stderr[-3000:]
    session = np.load(tmp_path / "session.npz")
    eager = _run(module, items)
    for key, value in eager.items():
        np.testing.assert_allclose(session[f"serving_default/{key}"], value, atol=1e-5)
        np.testing.assert_allclose(session[f"one_item/{key}"], value[:1], atol=1e-5)
    direct = module.encode_images(tf.constant(pixels))
    for key, value in direct.items():
        np.testing.assert_allclose(session[f"encode_images/{key}"], value.numpy(), atol=1e-5)


def test_saved_model_cli_run(saved_model, module_and_model, tmp_path):
    module, _ = module_and_model
    cli = shutil.which("saved_model_cli") or os.path.join(
        os.path.dirname(sys.executable), "saved_model_cli"
    )
    items = [_jpeg(_pattern(seed=8)), _png(_pattern(seed=9))[:50]]
    np.save(tmp_path / "images.npy", np.array(items, dtype=bytes))
    result = subprocess.run(
        [
            cli,
            "run",
            "--dir",
            str(saved_model),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"images={tmp_path / 'images.npy'}",
            "--outdir",
            str(tmp_path / "out"),
        ],
        check=False,
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    eager = _run(module, items)
    for key in ("embedding", "codes", "packed_codes", "valid", "status"):
        np.testing.assert_allclose(np.load(tmp_path / "out" / f"{key}.npy"), eager[key], atol=1e-5)
    assert eager["valid"].tolist() == [True, False]


def _reference_encode_bytes(module, images):
    """The image signature as it was collected before (tf.data `reduce` into
    TensorArrays, ~1 s per call at batch 1): the reference its replacement must equal
    bit for bit."""
    crop = module.crop_size

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def encode(images):
        count = tf.shape(images)[0]
        decoded = (
            tf.data.Dataset.from_tensor_slices((tf.range(count), images))
            .map(module._decode_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
            .ignore_errors()
        )
        state = (
            tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[]),
            tf.TensorArray(tf.float32, size=0, dynamic_size=True, element_shape=[crop, crop, 3]),
            tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[]),
        )

        def collect(state, element):
            position = state[0].size()
            return tuple(array.write(position, value) for array, value in zip(state, element))

        indices, pixels, statuses = decoded.reduce(state, collect)
        where = indices.stack()[:, None]
        pixels = tf.scatter_nd(where, pixels.stack(), [count, crop, crop, 3])
        status = tf.tensor_scatter_nd_update(
            tf.fill([count], image_header.STATUS_UNDECODABLE), where, statuses.stack()
        )
        return module._outputs(pixels, status)

    return {key: value.numpy() for key, value in encode(tf.constant(images)).items()}


def _varied_images():
    """Valid files of every kind the signature meets: the built-in dataset's scenes as
    the demo writes them (64 x 64 PNG) and as JPEG, photo-like JPEGs (4:2:0, 4:4:4,
    progressive, EXIF-rotated, not square), grey, RGBA and 16-bit PNGs."""
    from wsdhash.data.builtin.rendering import render_scene

    scenes = [
        render_scene(np.random.default_rng(seed), [seed % 16, (seed * 5) % 16], 64)
        for seed in range(4)
    ]
    rng = np.random.default_rng(11)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8), (5, 5), 0)
    grey = cv2.imencode(".png", photo[:, :, 0])[1].tobytes()
    rgba = cv2.imencode(".png", np.dstack([photo, photo[:, :, :1]]))[1].tobytes()
    deep = cv2.imencode(".png", photo.astype(np.uint16) * 257)[1].tobytes()
    progressive = cv2.imencode(
        ".jpg", photo, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_QUALITY, 80]
    )[1].tobytes()
    full_chroma = cv2.imencode(
        ".jpg", photo, [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    )[1].tobytes()
    return (
        [_png(scene) for scene in scenes]
        + [_jpeg(scene, quality=90) for scene in scenes[:2]]
        + [_jpeg(photo, quality=75), progressive, full_chroma, grey, rgba, deep]
        + [
            with_exif_orientation(_jpeg(photo), o, bo)
            for o, bo in ((3, "MM"), (6, "II"), (8, "MM"))
        ]
    )


def test_outputs_equal_the_reduce_based_reference(module_and_model):
    module, _ = module_and_model
    images = _varied_images()
    jpeg = _jpeg(_pattern(seed=12))
    broken = [jpeg[: len(jpeg) // 2], jpeg[:200] + b"\x17" * 300, b"GIF89a", _png(_pattern())[:40]]
    batches = [images, images[::-1] + broken, broken[1::2] + images[:3]]
    for items in batches:
        served, expected = _run(module, items), _reference_encode_bytes(module, items)
        assert served.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_array_equal(served[key], value, err_msg=key)
    assert _run(module, images)["valid"].all()
    # Batch 1 takes the sequential pipeline; the reference decodes every item on its own
    # too, so its rows for the whole list are each item's answer alone.
    items = images + broken
    expected = _reference_encode_bytes(module, items)
    for row, item in enumerate(items):
        served = _run(module, [item])
        for key, value in expected.items():
            np.testing.assert_array_equal(served[key], value[row : row + 1], err_msg=key)


def test_batches_where_every_item_is_invalid(module_and_model):
    module, _ = module_and_model
    png = _png(_pattern())
    for items in ([png[:40]], [png[:40], b"x", png[:100]]):
        served = _run(module, items)
        assert served["status"].tolist()[0] == image_header.STATUS_UNDECODABLE
        assert not served["valid"].any() and not served["embedding"].any()


def _graph_ops(function) -> set[str]:
    graph = function.get_concrete_function().graph.as_graph_def()
    ops = {node.op for node in graph.node}
    for library_function in graph.library.function:
        ops.update(node.op for node in library_function.node_def)
    return ops


def test_the_image_signature_gathers_without_a_per_call_reduce(module_and_model):
    """The per-item error isolation must not come back as a `Dataset.reduce`, whose
    set-up cost 0.7-1 s per call (`bench/serve_load.py` measures the speed); the
    decoded items are gathered by one batch instead."""
    module, _ = module_and_model
    ops = _graph_ops(module.serving_default)
    assert "ReduceDataset" not in ops and "DatasetToSingleElement" in ops


def _claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0/1/2) rewritten to claim width x height."""
    data, position = bytearray(jpeg), 2
    while data[position + 1] not in (0xC0, 0xC1, 0xC2):
        position += 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
    data[position + 5 : position + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_headers_that_lie_are_undecodable_not_valid_or_too_large(module_and_model):
    """A 64 x 64 JPEG's data under a 7000 x 7000 header (libjpeg fills the rest with grey
    and reports success) and PNG magic followed by a JPEG (its "IHDR" is JPEG bytes,
    read as a huge size) are corrupt; an honest flat JPEG of many pixels and few bytes
    (one bit per block and component at the least) is not."""
    module, _ = module_and_model
    jpeg = _jpeg(_pattern(64, 64, seed=13))
    flat = cv2.imencode(".jpg", np.full((1600, 1200, 3), 77, np.uint8))[1].tobytes()
    flat_grey = cv2.imencode(".jpg", np.full((1600, 1200), 200, np.uint8))[1].tobytes()
    items = [_claiming(jpeg, 7000, 7000), PNG_MAGIC + jpeg, flat, flat_grey, jpeg]
    assert _run(module, items)["status"].tolist() == [
        image_header.STATUS_UNDECODABLE,
        image_header.STATUS_UNDECODABLE,
        image_header.STATUS_OK,
        image_header.STATUS_OK,
        image_header.STATUS_OK,
    ]
    # The bound: fewer bytes than an eighth of the 8 x 8 blocks.
    too_small = image_header.jpeg_too_small
    assert bool(too_small(tf.constant(64, tf.int64), tf.constant(64, tf.int64), 8)) is False
    assert bool(too_small(tf.constant(64, tf.int64), tf.constant(72, tf.int64), 8)) is True
