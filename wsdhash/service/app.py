"""The FastAPI application: search, thumbnails, health, metrics, description, the page.

    POST /search                 an image: multipart (field `image`, several allowed),
                                 the raw bytes (Content-Type image/jpeg or image/png),
                                 or JSON {"instances": [{"b64": ...}, ...], "k": 10}
                                 (TensorFlow Serving's REST layout for binary inputs);
                                 `k` also as a query parameter or a form field.
                                 -> {"predictions": [{"ids", "positions", "paths",
                                 "distances", "labels"?, "code",
                                 "quantization_codes"?}, ...], "k", "metric", "kind"}
    GET  /items/{id}/thumbnail   a database image shrunk to ?size=128 (JPEG); `id` is
                                 an item's position or its exact id in the index
    GET  /items/{id}/image       the database image itself (the page searches with it)
    GET  /healthz                {"status": "ok", ...}
    GET  /metrics                Prometheus text format (prometheus_client)
    GET  /info                   model and index: method, bits, size, dates, checksums
    GET  /                       the search page (static/index.html, no build step)

All the images of one request run as one model call, in one of `workers` threads
behind a queue of `max_queue` (workers.py): a full queue is a 503 with Retry-After at
once, and a request past `request_timeout_s` (408) leaves no work behind beyond the
stage it is in. A body is limited by its kind while it streams in (one image's bytes
raw, `max_batch` images in JSON or multipart; JSON instances are counted before any is
decoded), and at most `max_uploads` bodies are read at once (503). Every refusal is a
4xx JSON body (errors.py), and anything unexpected a logged 500 JSON body without
details. An item id never names a file: ids are looked up in the index, and an item's
image is opened only inside the images root, checked at every open (engine.open_item:
a file or folder swapped for a symlink later is refused). Metrics label requests by
route template and known method ("other" for the rest), so their number stays bounded.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import importlib.resources
import json
import logging
import mimetypes
import os
import threading
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

import wsdhash
from wsdhash.service import uploads, workers
from wsdhash.service.engine import status_error
from wsdhash.service.errors import (
    Limits,
    ServiceError,
    input_error,
    limit_error,
    overloaded_error,
)

logger = logging.getLogger("wsdhash.serve")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
THUMBNAIL_SIZES = (16, 512)


class Metrics:
    """The service's Prometheus metrics, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.requests = Counter(
            "wsdhash_http_requests", "HTTP requests answered.", ["handler", "method", "status"],
            registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "wsdhash_http_request_duration_seconds", "Time to answer an HTTP request.",
            ["handler"], buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.model_seconds = Histogram(
            "wsdhash_model_seconds", "Time of one SavedModel call (one request's images).",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.index_seconds = Histogram(
            "wsdhash_index_seconds", "Time of one index search (one request's queries).",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.queries = Counter(
            "wsdhash_search_queries", "Query images searched.", registry=registry
        )
        self.rejected = Counter(
            "wsdhash_rejected_requests", "Requests refused, by limit or bad input.", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.items = Gauge("wsdhash_index_items", "Items in the index.", registry=registry)
        self.queued = Gauge(
            "wsdhash_search_queue", "Searches waiting for a worker.", registry=registry
        )
        self.dropped = Counter(
            "wsdhash_dropped_searches",
            "Searches given up before their end: expired or cancelled in the queue, or "
            "stopped between stages (their request had timed out).",
            ["reason"],
            registry=registry,
        )


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_LENGTH_DIGITS = 18  # a longer Content-Length is over every limit (and int() may refuse it)


def _content_kind(headers: dict) -> str:
    value = headers.get(b"content-type", b"").decode("latin-1")
    return value.split(";")[0].strip().lower()


class _Guard:
    """ASGI middleware: the request body limit for the body's kind (from Content-Length,
    then counted while it streams in: reading stops at the limit), the cap on bodies
    read at once, the request count and latency of every answer by route template and
    method (unknown methods counted as "other", so the labels stay few), and the
    catch-all that turns an unexpected exception into a logged 500 JSON answer."""

    def __init__(self, app, limits: Limits, metrics: Metrics, pool: workers.WorkerPool):
        self.app, self.limits, self.metrics, self.pool = app, limits, metrics, pool
        self.uploads = 0  # POST /search bodies being read
        self.searches = 0  # POST /search requests admitted and not answered yet

    def _too_large(self, kind: str, size=None) -> ServiceError:
        maximum = self.limits.body_limit(kind)
        if kind.startswith("image/") or kind in ("", "application/octet-stream"):
            what = f"one image's bytes (max_upload_bytes={self.limits.max_upload_bytes})"
        else:
            what = (
                f"max_batch={self.limits.max_batch} images of max_upload_bytes="
                f"{self.limits.max_upload_bytes}{', base64 included' if 'json' in kind else ''}"
            )
        return limit_error(
            "max_upload_bytes",
            f"request body {'of ' + str(size) + ' bytes ' if size else ''}over {maximum} bytes "
            f"({what}).",
            value=size,
            maximum=maximum,
        )

    async def _refuse(self, error: ServiceError, scope, receive, send) -> None:
        self.metrics.rejected.labels(error.fields.get("limit") or "input").inc()
        await JSONResponse(error.body(), error.status, headers=error.headers)(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [None]

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        uploading = admitted = False
        try:
            headers = dict(scope["headers"])
            kind = _content_kind(headers)
            upload = scope["method"] == "POST" and scope["path"] == "/search"
            limit = self.limits.body_limit(kind) if upload else self.limits.body_limit("other")
            length = headers.get(b"content-length")
            if length is not None:
                length = length.strip()
                if not length.isdigit():
                    error = input_error("request", f"Content-Length {length[:40]!r} is no number.")
                    await self._refuse(error, scope, receive, tracked_send)
                    return
                if len(length) > _LENGTH_DIGITS or int(length) > limit:
                    size = int(length) if len(length) <= _LENGTH_DIGITS else None
                    await self._refuse(self._too_large(kind, size), scope, receive, tracked_send)
                    return
            if upload:
                # Every search admitted takes a worker or a queue place from its arrival
                # to its answer: where the process itself is the bottleneck (its event
                # loop, on a busy machine), the excess is refused here at once rather
                # than waiting in front of the pool's queue.
                capacity = self.limits.workers + self.limits.max_queue
                if self.searches >= capacity:
                    error = overloaded_error(
                        "max_queue", f"{self.searches} searches in flight for "
                        f"{self.limits.workers} workers", self.limits.max_queue,
                        self.pool.retry_after_s(),
                    )  # fmt: skip
                    await self._refuse(error, scope, receive, tracked_send)
                    return
                self.searches += 1
                admitted = True
                if self.uploads >= self.limits.max_uploads:
                    error = overloaded_error(
                        "max_uploads", f"{self.uploads} request bodies are being read",
                        self.limits.max_uploads, 1,
                    )  # fmt: skip
                    await self._refuse(error, scope, receive, tracked_send)
                    return
                self.uploads += 1
                uploading = True
            received = 0

            async def limited_receive():
                nonlocal received, uploading
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise self._too_large(kind)
                    if uploading and not message.get("more_body", False):
                        uploading = False  # the whole body is in: the slot is free
                        self.uploads -= 1
                return message

            await self.app(scope, limited_receive, tracked_send)
        except Exception:  # the catch-all: logged, a plain 500 answer
            logger.exception("%s %s failed", scope["method"], scope.get("path"))
            if status[0] is None:
                body = {"error": "internal error: the service's log has the details."}
                await JSONResponse(body, 500)(scope, receive, tracked_send)
        finally:
            if uploading:
                self.uploads -= 1
            if admitted:
                self.searches -= 1
            route = scope.get("route")
            handler = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.metrics.latency.labels(handler).observe(time.perf_counter() - started)
            self.metrics.requests.labels(handler, method, str(status[0] or 500)).inc()


def _parse_k(value, limits: Limits, default: int = 10) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise limit_error("k", f"k must be an integer; got {value!r}.", status=400)
    try:
        k = int(value)
    except ValueError:
        raise limit_error("k", f"k must be an integer; got {value!r}.", status=400) from None
    if k < 1:
        raise limit_error("k", f"k must be at least 1; got {k}.", value=k, status=400)
    if k > limits.max_k:
        raise limit_error(
            "max_k", f"k={k} is more than max_k={limits.max_k}.", value=k,
            maximum=limits.max_k, status=400,
        )  # fmt: skip
    return k


def _check_batch(count: int, limits: Limits) -> None:
    if count > limits.max_batch:
        raise limit_error(
            "max_batch", f"{count} images, more than max_batch={limits.max_batch}.",
            value=count, maximum=limits.max_batch,
        )  # fmt: skip


def _json_instances(body: bytes, limits: Limits):
    """(names, images, k) of a TensorFlow Serving style JSON request: the instances are
    counted and each one's base64 length checked before any of them is decoded."""
    try:
        request = json.loads(body)
    except RecursionError:
        raise input_error("request", "JSON nested too deeply.") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise input_error("request", f"not valid JSON ({error}).") from None
    if not isinstance(request, dict) or not isinstance(request.get("instances"), list):
        raise input_error("request", 'JSON must be {"instances": [{"b64": BASE64}, ...], "k": 10}.')
    _check_batch(len(request["instances"]), limits)
    longest = (limits.max_upload_bytes + 2) // 3 * 4  # base64 of max_upload_bytes
    names, encoded = [], []
    for number, instance in enumerate(request["instances"]):
        name = f"instances[{number}]"
        if isinstance(instance, dict) and "b64" not in instance and len(instance) == 1:
            instance = next(iter(instance.values()))  # {"images": {"b64": ...}}
        if not isinstance(instance, dict) or not isinstance(instance.get("b64"), str):
            raise input_error(name, 'each instance must be {"b64": BASE64 of a JPEG or PNG}.')
        if len(instance["b64"].rstrip("=")) > longest:
            raise limit_error(
                "max_upload_bytes",
                f"{name}: about {len(instance['b64']) * 3 // 4} bytes, more than "
                f"max_upload_bytes={limits.max_upload_bytes}.",
                value=len(instance["b64"]) * 3 // 4, maximum=limits.max_upload_bytes,
            )  # fmt: skip
        names.append(name)
        encoded.append(instance["b64"])
    images = []
    for name, value in zip(names, encoded, strict=True):
        try:
            images.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            raise input_error(name, "the b64 value is not valid base64.") from None
    return names, images, request.get("k")


async def _multipart(request: Request, limits: Limits):
    try:
        form = await request.form(max_files=limits.max_batch, max_fields=64)
    except ServiceError:
        raise
    except MultiPartException as error:
        if "files" in str(error).lower():
            raise limit_error(
                "max_batch", f"more than max_batch={limits.max_batch} images.",
                maximum=limits.max_batch,
            ) from None  # fmt: skip
        raise input_error("request", f"a malformed multipart body ({error}).") from None
    except Exception as error:  # noqa: BLE001 (python-multipart's parse errors)
        raise input_error("request", f"a malformed multipart body ({error}).") from None
    try:
        names, images, k = [], [], form.get("k")
        for field, value in form.multi_items():
            if hasattr(value, "read"):
                name = f"image {value.filename or field!r}"
                if value.size is not None and value.size > limits.max_upload_bytes:
                    uploads.check_size(value.size, name, limits)
                names.append(name)
                images.append(await value.read())
    finally:
        await form.close()
    return names, images, k


def json_bytes(content) -> bytes:
    """`content` as JSONResponse renders it (the same bytes), for a body built ahead."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def _read_page() -> str:
    return (importlib.resources.files("wsdhash.service") / "static" / "index.html").read_text(
        encoding="utf-8"
    )


class _Thumbnails:
    """Thumbnails by the identity of the file they were made from (device, inode,
    modification time, size), so a replaced file gets a new one; the least recently
    used go first."""

    def __init__(self, size: int):
        self.size = size
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, file, size: int):
        info = os.fstat(file.fileno())
        key = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size, size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        made = uploads.thumbnail(file, size)
        with self._lock:
            self._cache[key] = made
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return made


def create_app(engine, limits: Limits | None = None, thumbnail_cache: int = 4096) -> FastAPI:
    """The application over a `SearchEngine` (engine.py)."""
    limits = limits or Limits()
    metrics = Metrics(CollectorRegistry())
    metrics.items.set(engine.index.num_items)
    pool = workers.WorkerPool(
        limits.workers,
        limits.max_queue,
        on_drop=lambda reason: metrics.dropped.labels(reason).inc(),
    )
    metrics.queued.set_function(lambda: pool.queued)
    description = {
        **engine.describe(),
        "limits": {
            "max_upload_bytes": limits.max_upload_bytes,
            "max_pixels": limits.max_pixels,
            "max_k": limits.max_k,
            "max_batch": limits.max_batch,
            "request_timeout_s": limits.request_timeout_s,
            "workers": limits.workers,
            "max_queue": limits.max_queue,
            "max_uploads": limits.max_uploads,
            "max_header_bytes": limits.max_header_bytes,
        },
        "version": wsdhash.__version__,
    }
    page = _read_page()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        pool.close()

    app = FastAPI(
        title="wsdhash image search", version=wsdhash.__version__, docs_url="/docs",
        lifespan=lifespan,
    )  # fmt: skip
    app.add_middleware(_Guard, limits=limits, metrics=metrics, pool=pool)
    app.state.engine, app.state.limits, app.state.metrics = engine, limits, metrics
    app.state.pool = pool

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, error: ServiceError):
        metrics.rejected.labels(error.fields.get("limit") or "input").inc()
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException):
        return JSONResponse(
            {"error": str(error.detail)}, status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in error.errors()
        )
        return JSONResponse({"error": problems, "input": "request"}, status_code=400)

    def _search(job, names, images, k):
        """Model, index and the answer's JSON in one worker thread; stops between the
        stages once its request has given up (workers.py)."""
        job.check()
        started = time.perf_counter()
        outputs = engine.encode(images)
        metrics.model_seconds.observe(time.perf_counter() - started)
        for name, valid, status in zip(names, outputs["valid"], outputs["status"], strict=True):
            if not valid:
                raise status_error(name, int(status))
        job.check()
        k = min(k, engine.index.num_items)
        started = time.perf_counter()
        result = engine.neighbours(outputs, k)
        metrics.index_seconds.observe(time.perf_counter() - started)
        job.check()
        return json_bytes(
            {
                "predictions": engine.predictions(outputs, result),
                "k": k,
                "metric": engine.metric,
                "kind": engine.kind,
            }
        )

    @app.post("/search")
    async def search(request: Request):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            names, images, k = await _multipart(request, limits)
        else:
            body = await request.body()
            if not body:
                raise input_error(
                    "request",
                    "empty body: send an image (multipart field 'image', or its bytes as "
                    'image/jpeg or image/png) or JSON {"instances": [{"b64": ...}], "k": 10}.',
                )
            if kind == "application/json":
                names, images, k = _json_instances(body, limits)
            elif kind in ("", "application/octet-stream") or kind.startswith("image/"):
                names, images, k = ["body"], [body], None
            else:
                raise input_error(
                    "request", f"Content-Type {kind!r}: send multipart/form-data, "
                    "application/json or the image's bytes.", status=415,
                )  # fmt: skip
            del body
        k = _parse_k(request.query_params.get("k", k), limits)
        if not images:
            raise input_error("request", "no image in the request.")
        _check_batch(len(images), limits)
        for name, data in zip(names, images, strict=True):
            uploads.check_upload(data, name, limits)
        metrics.queries.inc(len(images))
        try:
            body = await pool.run(_search, names, images, k, timeout=limits.request_timeout_s)
        except workers.Overloaded as error:
            raise overloaded_error(
                "max_queue", f"{error.queued} searches wait for {limits.workers} workers",
                limits.max_queue, error.retry_after_s,
            ) from None  # fmt: skip
        except TimeoutError:
            raise limit_error(
                "request_timeout_s",
                f"the search took longer than request_timeout_s={limits.request_timeout_s}.",
                maximum=limits.request_timeout_s, status=408,
            ) from None  # fmt: skip
        # Already JSON (rendered in the worker thread): FastAPI sends it as it is.
        return Response(body, media_type="application/json")

    def _open_item(item: str):
        """(position, the item's image opened for reading), checked inside the images
        root as it is opened (engine.open_item)."""
        position = engine.position(item)
        if position is None:
            raise ServiceError(404, f"no item {item[:200]!r} in the index.", input="id")
        opened = engine.open_item(position)
        if opened is None:
            raise ServiceError(
                404, f"item {position} has no image inside the images root "
                f"({engine.images_root or 'none: start with --images_root'}).", input="id",
            )  # fmt: skip
        return position, opened

    thumbnails = _Thumbnails(thumbnail_cache)

    @app.get("/items/{item:path}/thumbnail")
    def item_thumbnail(item: str, size: int = 128):
        low, high = THUMBNAIL_SIZES
        if not low <= size <= high:
            raise limit_error(
                "thumbnail_size", f"size must be {low}..{high}; got {size}.", value=size,
                maximum=high, status=400,
            )  # fmt: skip
        position, opened = _open_item(item)
        with opened:
            try:
                data, media = thumbnails.get(opened, size)
            except uploads.unreadable_errors() as error:
                raise ServiceError(
                    404, f"item {position}: its image cannot be read ({error}).", input="id"
                ) from None
        return Response(data, media_type=media, headers={"Cache-Control": "max-age=3600"})

    @app.get("/items/{item:path}/image")
    def item_image(item: str):
        position, opened = _open_item(item)
        with opened:
            try:
                data = opened.read()
            except OSError as error:
                raise ServiceError(
                    404, f"item {position}: its image cannot be read ({error}).", input="id"
                ) from None
        media = mimetypes.guess_type(opened.name)[0] or "application/octet-stream"
        return Response(data, media_type=media, headers={"Cache-Control": "max-age=3600"})

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "items": int(engine.index.num_items), "kind": engine.kind}

    @app.get("/info")
    def info():
        return description

    @app.get("/metrics")
    def prometheus_metrics():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    def index_page():
        return HTMLResponse(page)

    return app
