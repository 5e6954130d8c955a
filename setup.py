"""Installs wsdhash. Python >= 3.10, TensorFlow 2 with Keras 3."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent

setup(
    name="wsdhash",
    version="0.1.0",
    description=(
        "Deep hashing and weakly supervised hyperspherical quantization for image "
        "retrieval (WSDHQ, HyP2, OrthoHash, triplet hashing) in TensorFlow 2 / Keras 3."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["wsdhash", "wsdhash.*"]),
    package_data={
        "wsdhash.losses": ["hyp2_zeta.csv"],
        "wsdhash.service": ["static/*.html"],
        "wsdhash.recipes": ["*/*.flags"],
    },
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16,<3",  # 2.16 is the first release that ships Keras 3.
        "keras>=3.0",
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # tensorflow-datasets imports it to load data.
        "numpy>=1.26",  # np.bitwise_count (numpy 2) is used when present.
        "h5py>=3.8",
        "gensim>=4.3",
        "opencv-python-headless>=4.8",
        "absl-py>=1.4",
        "tensorboard",  # tf.summary needs it for training curves; TF 2.21 no longer pulls it in.
        "scipy",  # Stanford Dogs' official lists are MATLAB .mat files (scipy.io.loadmat).
        "tqdm",  # progress bars of dataset preparation.
        # Search indexes: FAISS's binary flat/IVF/HNSW/multi-hash indexes are the reference
        # implementations; re-writing them would be slower and less tested.
        "faiss-cpu>=1.8",
        "matplotlib>=3.7",  # report figures (Agg backend, no display needed).
        "scikit-learn>=1.5",  # t-SNE of codes in the report (TSNE's max_iter argument).
        # The image-search service (python -m wsdhash.serve): FastAPI on uvicorn rather
        # than a hand-written HTTP server; python-multipart parses its image uploads and
        # prometheus-client writes /metrics in the Prometheus text format.
        "fastapi>=0.110",
        "uvicorn>=0.29",
        "python-multipart>=0.0.9",
        "prometheus-client>=0.20",
        # uvicorn's C HTTP parser and libuv event loop: the service's batch-1 overhead went
        # from 1.62x to 1.55x the direct path (bench/serve_load.py); serve falls back to
        # h11 / asyncio where they are missing.
        "httptools>=0.6",
        "uvloop>=0.19; sys_platform != 'win32'",
        # python -m wsdhash.tune: Optuna's TPE sampler and SQLite study storage (an
        # interrupted search resumes); KerasTuner is built around Model.fit, which
        # wsdhash's own tf.distribute training loop does not use.
        "optuna>=3.4",
        "anyio>=4.1",  # abandon_on_cancel: a search past --request_timeout_s answers 408 at once.
    ],
    extras_require={
        # keras-hub presets as backbones (--backbone=keras_hub:PRESET); it installs beside
        # TensorFlow 2.21 (with the matching tensorflow-text).
        "hub": ["keras-hub>=0.20"],
        # Apache Beam alone (its [tensorflow] extra pins an older TensorFlow): the
        # distributed encode and TFRecord jobs (python -m wsdhash.pipeline).
        "beam": ["apache-beam>=2.60"],
        # httpx: FastAPI's in-process TestClient; selenium: the service's real-browser
        # test (Debian's chromium and chromium-driver, which .ci/run installs).
        "test": [
            "pytest>=7",
            "pytest-xdist>=3",
            "keras-hub>=0.20",
            "httpx>=0.27",
            "selenium>=4.20",
            "apache-beam>=2.60",
            # The lint gate in .ci/run; pinned: a release's new defaults would move it.
            "ruff==0.17.6",
        ],
    },
    entry_points={
        "console_scripts": [
            "wsdhash-evaluate=wsdhash.commands.evaluate:run",
            "wsdhash-demo=wsdhash.commands.demo:run",
            "wsdhash-prepare=wsdhash.commands.prepare:run",
            "wsdhash-search=wsdhash.commands.search:run",
            "wsdhash-report=wsdhash.commands.report:run",
            "wsdhash-extract=wsdhash.commands.extract:run",
            "wsdhash-baselines=wsdhash.commands.baselines:run",
            "wsdhash-export=wsdhash.commands.export:run",
            "wsdhash-train=wsdhash.commands.train:run",
            "wsdhash-tune=wsdhash.commands.tune:run",
            "wsdhash-serve=wsdhash.commands.serve:run",
            "wsdhash-pipeline=wsdhash.commands.pipeline:run",
            "wsdhash-tags=wsdhash.commands.tags:run",
        ],
    },
)
