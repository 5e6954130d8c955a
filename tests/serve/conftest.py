"""The service tests' fixture: a tiny trained and exported model and an index of its
built-in dataset's images, built once per test run (shared by pytest-xdist workers
through a lock), and an engine over them loaded once per worker."""

import fcntl
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "training"))
from train_helpers import TINY  # noqa: E402  (the tests' tiny training settings)

TRAIN = [*TINY, "--steps=3", "--method=orthohash"]


def _run(*arguments):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-m", *arguments], check=False, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _shared_folder(tmp_path_factory) -> str:
    if os.environ.get("WSDHASH_SERVE_FIXTURE"):  # a folder kept between runs (development)
        return os.environ["WSDHASH_SERVE_FIXTURE"]
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, shared by its workers
    return str(base / "serve-fixture")


@pytest.fixture(scope="session")
def served_files(tmp_path_factory):
    """(data_dir, images folder, SavedModel, index) of a 16-bit OrthoHash model."""
    root = _shared_folder(tmp_path_factory)
    os.makedirs(root, exist_ok=True)
    data_dir, workdir = os.path.join(root, "builtin"), os.path.join(root, "run")
    model, index = os.path.join(root, "saved_model"), os.path.join(root, "index")
    images = os.path.join(data_dir, "images")
    with open(os.path.join(root, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker builds, the others wait
        if not os.path.exists(os.path.join(root, "done")):
            _run("wsdhash.train", f"--data_dir={data_dir}", f"--workdir={workdir}", *TRAIN)
            _run("wsdhash.export", f"--workdir={workdir}", f"--output={model}", "--overwrite")
            _run(
                "wsdhash.search",
                "build",
                f"--images={images}",
                f"--model={model}",
                f"--output={index}",
            )
            open(os.path.join(root, "done"), "w").close()
    return data_dir, images, model, index


@pytest.fixture(scope="session")
def engine(served_files):
    from wsdhash.service import engine as engine_lib

    _, images, model, index = served_files
    return engine_lib.load(model, index, images)
