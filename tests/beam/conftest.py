"""The Beam tests' fixtures: a tiny built-in dataset and three exports of untrained,
seeded models (binary codes; WSDHQ's AQD codes with random codebooks; the binary
model again with a small pixel limit), written once per test session by the same
`serving.export_saved_model` that `python -m wsdhash.export` calls. Training would add
minutes and nothing these tests check: they compare the pipeline's codes with what
the same export gives through `search build --images`'s code path."""

import os

import numpy as np
import pytest

CROP, SIDE = 28, 32
FEATURE_DIM = 24  # WSDHQ's embedding D
SMALL_MAX_PIXELS = 40 * 40  # the built-in 32 x 32 images pass, a 48 x 48 one does not


def _binary_model(seed):
    from wsdhash.models.assembly import build_model
    from wsdhash.training.config import TrainConfig

    config = TrainConfig(bits=16, crop_size=CROP, image_size=SIDE, seed=seed)
    model, _, _ = build_model(config, config.bits)
    # Non-trivial batch-norm statistics, so that codes depend on every weight.
    for variable in model.non_trainable_variables:
        variable.assign(np.random.default_rng(seed).uniform(0.5, 1.5, variable.shape))
    return model


def _wsdhq_parts(seed):
    from wsdhash.methods.wsdhq_quantizer import TrainingQuantizer
    from wsdhash.models.assembly import build_model
    from wsdhash.training.config import TrainConfig

    config = TrainConfig(bits=16, crop_size=CROP, image_size=SIDE, seed=seed, head="tanh")
    model, _, _ = build_model(config, FEATURE_DIM)
    rng = np.random.default_rng(seed)
    quantizer = TrainingQuantizer(16, rng.normal(size=(10, FEATURE_DIM)), 1, seed)
    quantizer.set_codebooks(rng.normal(0, 0.3, (2, 256, FEATURE_DIM)).astype(np.float32))
    return model, quantizer.graph_encoder()


@pytest.fixture(scope="session")
def beam_files(tmp_path_factory):
    """{"data_dir", "images", "binary", "wsdhq", "small_limit"}: paths."""
    from wsdhash import serving
    from wsdhash.data.builtin import generate_builtin
    from wsdhash.data.pipeline import PipelineConfig

    root = tmp_path_factory.mktemp("beam")
    data_dir = root / "builtin"
    generate_builtin(data_dir, image_size=SIDE, num_train=8, num_query=10, num_database=30,
                     num_workers=0)  # fmt: skip
    config = PipelineConfig(image_size=SIDE, crop_size=CROP, normalization=None)
    binary = _binary_model(3)
    serving.export_saved_model(binary, config, str(root / "binary"))
    serving.export_saved_model(
        binary, config, str(root / "small_limit"), max_pixels=SMALL_MAX_PIXELS
    )
    model, encoder = _wsdhq_parts(5)
    serving.export_saved_model(model, config, str(root / "wsdhq"), quantization_encoder=encoder)
    return {
        "root": str(root),
        "data_dir": str(data_dir),
        "images": os.path.join(str(data_dir), "images"),
        "binary": str(root / "binary"),
        "wsdhq": str(root / "wsdhq"),
        "small_limit": str(root / "small_limit"),
    }
