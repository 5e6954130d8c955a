"""The image-search service: an exported model and its index behind HTTP, with a page.

    python -m wsdhash.serve --model=EXPORTED --index=INDEX [--images_root=FOLDER]
        [--host=127.0.0.1] [--port=8080] [--max_k=100] [--max_batch=16] ...

EXPORTED is `python -m wsdhash.export`'s SavedModel, INDEX `python -m wsdhash.search
build --images=FOLDER --model=EXPORTED --output=INDEX`'s folder; FOLDER (default: the
one the index was built from) holds the database images the thumbnails show. Open
http://HOST:PORT/ for the page; the endpoints are listed in wsdhash/service/app.py.

Serving settings: `--http` and `--loop` pick uvicorn's HTTP parser and event loop
(auto: httptools and uvloop when installed, else h11 and asyncio's loop; on 2 shared
cores httptools on uvloop took the batch-1 overhead of bench/serve_load.py from 1.62x
to 1.55x the direct path, medians of 9 interleaved runs each). `--intra_op_threads`
and `--inter_op_threads` size TensorFlow's thread pools before any op runs (0:
TensorFlow's choice, the default: one intra-op thread was not measurably faster at
batch 1). The start-up output names the settings in force.

The service refuses to start, with one line, when the model and the index do not fit
(wsdhash/service/engine.py: code width, quantizer, codebooks, and a few database images
re-encoded). One process serves (uvicorn); its requests share one loaded model.

Under load it sheds rather than drowns: `--workers` searches run at once, `--max_queue`
more wait, and one more is answered 503 with `Retry-After` at once; a request that
times out (`--request_timeout_s`, counted from the moment it is queued) is taken out
of the queue, or stops before its next stage (wsdhash/service/workers.py). Request
bodies are limited while they stream in (`--max_upload_bytes` for an image's raw
bytes, `--max_batch` of them in JSON or multipart), at most `--max_uploads` are read at
once, and a request's line and headers may hold `--max_header_bytes` with either
parser (wsdhash/service/protocols.py).
"""

from __future__ import annotations

import importlib.util
import os

from absl import flags

from wsdhash import cli, flag_bounds
from wsdhash.service.errors import BOUNDS as LIMIT_BOUNDS

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Exported SavedModel (python -m wsdhash.export).")
flags.DEFINE_string("index", None, "Index folder (python -m wsdhash.search build).")
flags.DEFINE_string(
    "images_root", None, "Folder of the database images (default: the index's source folder)."
)
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
flags.DEFINE_integer("port", 8080, "Port to listen on.")
flags.DEFINE_integer("max_upload_bytes", 20 * 2**20, "Largest image upload, in bytes.")
flags.DEFINE_integer("max_pixels", 50_000_000, "Largest image, width x height (from its header).")
flags.DEFINE_integer("max_k", 100, "Most neighbours a query may ask for.")
flags.DEFINE_integer("max_batch", 16, "Most images per request (one model call).")
flags.DEFINE_float(
    "request_timeout_s", 30.0, "Longest search (queue, model and index), in seconds."
)
flags.DEFINE_integer(
    "workers",
    2,
    "Searches that run at once (threads, each one model call; TensorFlow's own thread "
    "pools run inside each).",
)
flags.DEFINE_integer(
    "max_queue", 16, "Searches that may wait for a worker; one more is answered 503."
)
flags.DEFINE_integer("max_uploads", 16, "Request bodies read at once; one more is answered 503.")
flags.DEFINE_integer(
    "max_header_bytes",
    65536,
    "Largest request line and headers, in bytes (431 past it), for both HTTP parsers.",
)
flag_bounds.declare_ranges(LIMIT_BOUNDS)
flags.DEFINE_integer(
    "check_images", 8, "Database images re-encoded at start-up to check the pair (0: none)."
)
flags.DEFINE_integer(
    "intra_op_threads",
    0,
    "Threads one TensorFlow op may use (0: TensorFlow's choice, one per core).",
)
flags.DEFINE_integer(
    "inter_op_threads",
    0,
    "TensorFlow ops run at once (0: TensorFlow's choice).",
)
flags.DEFINE_enum(
    "http",
    "auto",
    ["auto", "httptools", "h11"],
    "uvicorn's HTTP parser (auto: httptools when installed, else h11).",
)
flags.DEFINE_enum(
    "loop",
    "auto",
    ["auto", "uvloop", "asyncio"],
    "The event loop (auto: uvloop when installed, else asyncio's own).",
)


def limits_from_flags():
    from wsdhash.service.errors import Limits

    try:
        return Limits(
            max_upload_bytes=FLAGS.max_upload_bytes,
            max_pixels=FLAGS.max_pixels,
            max_k=FLAGS.max_k,
            max_batch=FLAGS.max_batch,
            request_timeout_s=FLAGS.request_timeout_s,
            workers=FLAGS.workers,
            max_queue=FLAGS.max_queue,
            max_uploads=FLAGS.max_uploads,
            max_header_bytes=FLAGS.max_header_bytes,
        )
    except (ValueError, TypeError) as error:
        raise cli.UsageError(str(error)) from None


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def server_choices(http: str, loop: str) -> tuple[str, str]:
    """uvicorn's HTTP parser and event loop for the flags' values: `auto` picks
    httptools and uvloop when they are installed, h11 and asyncio otherwise; a named
    one that is not installed is a usage error."""
    chosen = []
    for flag, value, fast, fallback in (
        ("http", http, "httptools", "h11"),
        ("loop", loop, "uvloop", "asyncio"),
    ):
        if value == "auto":
            value = fast if _installed(fast) else fallback
        elif value == fast and not _installed(fast):
            raise cli.UsageError(f"--{flag}={fast}: {fast} is not installed (pip install {fast}).")
        chosen.append(value)
    return chosen[0], chosen[1]


def configure_tensorflow(intra_op_threads: int, inter_op_threads: int) -> tuple[int, int]:
    """Sets TensorFlow's thread pools (0: its own choice); call before any op runs.

    Returns the settings TensorFlow reports (0 where it chooses)."""
    for flag, value in (
        ("intra_op_threads", intra_op_threads),
        ("inter_op_threads", inter_op_threads),
    ):
        if value < 0:
            raise cli.UsageError(f"--{flag} must be 0 (TensorFlow's choice) or more; got {value}.")
    import tensorflow as tf

    if intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
    if inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
    return (
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    )


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"Unexpected arguments: {argv[1:]}")
    for name in ("model", "index"):
        if not FLAGS[name].value:
            raise cli.UsageError(f"--{name} is required (see --help).")
    if not 0 <= FLAGS.port <= 65535:
        raise cli.UsageError(f"--port must be 0..65535; got {FLAGS.port}.")
    limits = limits_from_flags()
    http, loop = server_choices(FLAGS.http, FLAGS.loop)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    threads = configure_tensorflow(FLAGS.intra_op_threads, FLAGS.inter_op_threads)
    from wsdhash.index.index_file import IndexFileError
    from wsdhash.service import engine as engine_lib

    try:
        engine = engine_lib.load(FLAGS.model, FLAGS.index, FLAGS.images_root, FLAGS.check_images)
    except engine_lib.MismatchError as error:
        raise cli.UsageError(f"the model and the index do not fit: {error}") from None
    except (FileNotFoundError, IndexFileError) as error:
        raise cli.UsageError(str(error)) from None
    import uvicorn

    from wsdhash.service.app import create_app
    from wsdhash.service.protocols import uvicorn_config

    app = create_app(engine, limits)
    where = f"http://{FLAGS.host}:{FLAGS.port}/"
    print(
        f"wsdhash.serve: {engine.kind} index of {engine.index.num_items} images, "
        f"{engine.bits}-bit model, images from {engine.images_root or '(none)'}; "
        f"page and API at {where}",
        flush=True,
    )
    intra, inter = (str(value) if value else "auto" for value in threads)
    print(
        f"wsdhash.serve: uvicorn with {http} on {loop}; TensorFlow threads: "
        f"intra-op {intra}, inter-op {inter}",
        flush=True,
    )
    print(
        f"wsdhash.serve: {limits.workers} search workers, a queue of {limits.max_queue}, "
        f"{limits.max_uploads} uploads at once, headers up to {limits.max_header_bytes} bytes",
        flush=True,
    )
    config = uvicorn_config(
        app,
        http,
        limits.max_header_bytes,
        host=FLAGS.host,
        port=FLAGS.port,
        loop=loop,
        log_level="warning",
        access_log=False,
    )
    uvicorn.Server(config).run()


def run():
    cli.run(main, "wsdhash.serve")


if __name__ == "__main__":
    run()
