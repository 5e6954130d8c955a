"""The Beam tests' fixtures: a tiny built-in dataset and two exports of untrained,
seeded models (binary codes, with a pixel limit that the dataset's images pass and a
48 x 48 image does not; WSDHQ's AQD codes with random codebooks), written once per
test session by the same
`saved_model.export_saved_model` that `python -m wsdhash.export` calls. Training would add
minutes and nothing these tests check: they compare the pipeline's codes with what
the same export gives through `search build --images`'s code path."""

import fcntl
import os

import numpy as np
import pytest

CROP, SIDE = 28, 32
FEATURE_DIM = 24  # WSDHQ's embedding D
SMALL_MAX_PIXELS = 40 * 40  # the built-in 32 x 32 images pass, a 48 x 48 one does not


def _binary_model(seed):
    from wsdhash.models.assembly import build_model
    from wsdhash.training.config import DataConfig, ModelConfig, TrainConfig

    data = DataConfig(crop_size=CROP, image_size=SIDE)
    config = TrainConfig(data=data, model=ModelConfig(bits=16), seed=seed)
    model, _, _ = build_model(config, config.model.bits)
    # Non-trivial batch-norm statistics, so that codes depend on every weight.
    for variable in model.non_trainable_variables:
        variable.assign(np.random.default_rng(seed).uniform(0.5, 1.5, variable.shape))
    return model


def _wsdhq_parts(seed):
    from wsdhash.methods.wsdhq_quantizer import TrainingQuantizer
    from wsdhash.models.assembly import build_model
    from wsdhash.training.config import DataConfig, ModelConfig, TrainConfig

    data = DataConfig(crop_size=CROP, image_size=SIDE)
    config = TrainConfig(data=data, model=ModelConfig(bits=16, head="tanh"), seed=seed)
    model, _, _ = build_model(config, FEATURE_DIM)
    rng = np.random.default_rng(seed)
    quantizer = TrainingQuantizer(16, rng.normal(size=(10, FEATURE_DIM)), 1, seed)
    quantizer.set_codebooks(rng.normal(0, 0.3, (2, 256, FEATURE_DIM)).astype(np.float32))
    return model, quantizer.graph_encoder()


def _shared_folder(tmp_path_factory) -> str:
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, shared by its workers
    return str(base / "beam-fixture")


def _write(root: str) -> None:
    from wsdhash.data.builtin import generate_builtin
    from wsdhash.data.pipeline import PipelineConfig
    from wsdhash.export import saved_model

    generate_builtin(
        os.path.join(root, "builtin"),
        image_size=SIDE,
        num_train=8,
        num_query=10,
        num_database=30,
        num_workers=0,
    )
    config = PipelineConfig(image_size=SIDE, crop_size=CROP, normalization=None)
    saved_model.export_saved_model(
        _binary_model(3),
        config,
        os.path.join(root, "binary"),
        overwrite=True,
        max_pixels=SMALL_MAX_PIXELS,
    )
    model, encoder = _wsdhq_parts(5)
    saved_model.export_saved_model(
        model, config, os.path.join(root, "wsdhq"), overwrite=True, quantization_encoder=encoder
    )


@pytest.fixture(scope="session")
def beam_files(tmp_path_factory):
    """{"data_dir", "images", "binary", "wsdhq"}: paths, written once per
    test run (pytest-xdist workers share them through a lock)."""
    root = _shared_folder(tmp_path_factory)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker writes, the others wait
        if not os.path.exists(os.path.join(root, "done")):
            _write(root)
            open(os.path.join(root, "done"), "w").close()
    data_dir = os.path.join(root, "builtin")
    return {
        "data_dir": data_dir,
        "images": os.path.join(data_dir, "images"),
        **{name: os.path.join(root, name) for name in ("binary", "wsdhq")},
    }
