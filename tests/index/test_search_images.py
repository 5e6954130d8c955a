"""`wsdhash.search` over images with a stand-in SavedModel: items the model marks
invalid (or whose batch it cannot encode) are skipped with one warning line naming
them and never indexed; an invalid query image is a one-line error naming it."""

import numpy as np
import pytest
import tensorflow as tf

from wsdhash import cli
from wsdhash.index import images as search


class _StandIn:
    """A SavedModel's `signatures["serving_default"]`: a file is valid unless its bytes
    start with b"bad"; with `fail_batches`, a batch holding one fails as a whole (what
    an export without per-item validity does with a truncated JPEG)."""

    def __init__(self, fail_batches=False):
        self.fail_batches = fail_batches
        self.signatures = {"serving_default": self.serve}

    def serve(self, images):
        data = [bytes(b) for b in images.numpy()]
        valid = np.array([not d.startswith(b"bad") for d in data])
        if self.fail_batches and not valid.all():
            raise tf.errors.InvalidArgumentError(None, None, "jpeg: premature end of data")
        codes = np.array([[d[-1], 0] for d in data], np.uint8) * valid[:, None]
        return {
            "valid": tf.constant(valid),
            "status": tf.constant(np.where(valid, 0, 2)),  # image_header.STATUS_UNDECODABLE
            "packed_codes": tf.constant(codes),
        }


@pytest.fixture
def images(tmp_path):
    paths = []
    for i, content in enumerate([b"ok1", b"bad-truncated", b"ok2", b"ok3", b"bad"]):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(content)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("fail_batches", [False, True])
def test_invalid_images_are_skipped_named_and_never_indexed(images, capsys, fail_batches):
    codes, ids = search.images_for_index(
        images, "packed_codes", _StandIn(fail_batches), batch_size=2
    )
    assert list(ids) == [images[0], images[2], images[3]]
    np.testing.assert_array_equal(codes, [[ord("1"), 0], [ord("2"), 0], [ord("3"), 0]])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("wsdhash.search: warning: skipped 2 of 5 images, not indexed: ")
    assert images[1] in line and images[4] in line and images[0] not in line
    if not fail_batches:
        assert "corrupt or truncated image" in line


def test_an_invalid_query_image_is_a_one_line_error_naming_it(images):
    rows = search.images_for_query([images[0], images[3]], "packed_codes", _StandIn())
    assert rows.shape == (2, 2)
    with pytest.raises(cli.UsageError, match=f"--images: invalid query image: {images[1]} "):
        search.images_for_query([images[0], images[1]], "packed_codes", _StandIn())
    with pytest.raises(cli.UsageError, match=f"invalid query image: {images[4]} .*cannot dec"):
        search.images_for_query([images[4]], "packed_codes", _StandIn(fail_batches=True))
    with pytest.raises(cli.UsageError, match="none of the 2 images is valid"):
        search.images_for_index([images[1], images[4]], "packed_codes", _StandIn())


def test_a_model_that_takes_features_is_a_one_line_error_saying_how_to_export():
    class FeaturesIn:
        def __init__(self):
            spec = tf.TensorSpec([None, 8], tf.float32, name="features")
            self.structured_input_signature = ((), {"features": spec})

        def __call__(self, **inputs):  # never reached
            raise AssertionError("called with features")

    model = _StandIn()
    model.signatures = {"serving_default": FeaturesIn()}
    with pytest.raises(cli.UsageError) as raised:
        search.encode_images(["cat.jpg"], "packed_codes", model)
    message = str(raised.value)
    assert "\n" not in message and "takes features, not images" in message
    assert "python -m wsdhash.export --workdir=RUN --output=DIR --feature_model=FILE" in message
