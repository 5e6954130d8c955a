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

All the images of one request run as one model call. Every refusal is a 4xx JSON body
(errors.py); an item id never names a file: ids are looked up in the index, and an
item's image is served only when it resolves inside the images root (symlinks
included).
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.resources
import json
import logging
import mimetypes
import time

import anyio
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

import wsdhash
from wsdhash.service import uploads
from wsdhash.service.engine import status_error
from wsdhash.service.errors import Limits, ServiceError, input_error, limit_error

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


class _Guard:
    """ASGI middleware: the request body limit (also while it streams in) and the
    request count and latency of every answer, by route template."""

    def __init__(self, app, limits: Limits, metrics: Metrics):
        self.app, self.limits, self.metrics = app, limits, metrics

    def _too_large(self, size=None) -> ServiceError:
        maximum = self.limits.max_body_bytes
        return limit_error(
            "max_upload_bytes",
            f"request body {'of ' + str(size) + ' bytes ' if size else ''}over {maximum} bytes "
            f"(max_batch={self.limits.max_batch} images of max_upload_bytes="
            f"{self.limits.max_upload_bytes}, base64 included).",
            value=size,
            maximum=maximum,
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
                error = self._too_large(int(length))
                self.metrics.rejected.labels(error.fields["limit"]).inc()
                await JSONResponse(error.body(), error.status)(scope, receive, tracked_send)
                return
            received = 0

            async def limited_receive():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.limits.max_body_bytes:
                        raise self._too_large()
                return message

            await self.app(scope, limited_receive, tracked_send)
        finally:
            route = scope.get("route")
            handler = getattr(route, "path", None) or "unmatched"
            self.metrics.latency.labels(handler).observe(time.perf_counter() - started)
            self.metrics.requests.labels(handler, scope["method"], str(status[0])).inc()


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


def _json_instances(body: bytes):
    """(names, images, k) of a TensorFlow Serving style JSON request."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise input_error("request", f"not valid JSON ({error}).") from None
    if not isinstance(request, dict) or not isinstance(request.get("instances"), list):
        raise input_error("request", 'JSON must be {"instances": [{"b64": BASE64}, ...], "k": 10}.')
    names, images = [], []
    for number, instance in enumerate(request["instances"]):
        name = f"instances[{number}]"
        if isinstance(instance, dict) and "b64" not in instance and len(instance) == 1:
            instance = next(iter(instance.values()))  # {"images": {"b64": ...}}
        if not isinstance(instance, dict) or not isinstance(instance.get("b64"), str):
            raise input_error(name, 'each instance must be {"b64": BASE64 of a JPEG or PNG}.')
        try:
            images.append(base64.b64decode(instance["b64"], validate=True))
        except (binascii.Error, ValueError):
            raise input_error(name, "the b64 value is not valid base64.") from None
        names.append(name)
    return names, images, request.get("k")


async def _multipart(request: Request):
    try:
        form = await request.form()
    except ServiceError:
        raise
    except Exception as error:  # noqa: BLE001 (python-multipart's parse errors)
        raise input_error("request", f"a malformed multipart body ({error}).") from None
    names, images, k = [], [], form.get("k")
    for field, value in form.multi_items():
        if hasattr(value, "read"):
            names.append(f"image {value.filename or field!r}")
            images.append(await value.read())
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


def create_app(engine, limits: Limits | None = None, thumbnail_cache: int = 4096) -> FastAPI:
    """The application over a `SearchEngine` (engine.py)."""
    limits = limits or Limits()
    metrics = Metrics(CollectorRegistry())
    metrics.items.set(engine.index.num_items)
    description = {
        **engine.describe(),
        "limits": {
            "max_upload_bytes": limits.max_upload_bytes,
            "max_pixels": limits.max_pixels,
            "max_k": limits.max_k,
            "max_batch": limits.max_batch,
            "request_timeout_s": limits.request_timeout_s,
        },
        "version": wsdhash.__version__,
    }
    page = _read_page()
    app = FastAPI(title="wsdhash image search", version=wsdhash.__version__, docs_url="/docs")
    app.add_middleware(_Guard, limits=limits, metrics=metrics)
    app.state.engine, app.state.limits, app.state.metrics = engine, limits, metrics

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, error: ServiceError):
        metrics.rejected.labels(error.fields.get("limit") or "input").inc()
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in error.errors()
        )
        return JSONResponse({"error": problems, "input": "request"}, status_code=400)

    def _search(names, images, k):
        """Model, index and the answer's JSON in one worker-thread hop."""
        started = time.perf_counter()
        outputs = engine.encode(images)
        metrics.model_seconds.observe(time.perf_counter() - started)
        for name, valid, status in zip(names, outputs["valid"], outputs["status"], strict=True):
            if not valid:
                raise status_error(name, int(status))
        k = min(k, engine.index.num_items)
        started = time.perf_counter()
        result = engine.neighbours(outputs, k)
        metrics.index_seconds.observe(time.perf_counter() - started)
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
            names, images, k = await _multipart(request)
        else:
            body = await request.body()
            if not body:
                raise input_error(
                    "request",
                    "empty body: send an image (multipart field 'image', or its bytes as "
                    'image/jpeg or image/png) or JSON {"instances": [{"b64": ...}], "k": 10}.',
                )
            if kind == "application/json":
                names, images, k = _json_instances(body)
            elif kind in ("", "application/octet-stream") or kind.startswith("image/"):
                names, images, k = ["body"], [body], None
            else:
                raise input_error(
                    "request", f"Content-Type {kind!r}: send multipart/form-data, "
                    "application/json or the image's bytes.", status=415,
                )  # fmt: skip
        k = _parse_k(request.query_params.get("k", k), limits)
        if not images:
            raise input_error("request", "no image in the request.")
        if len(images) > limits.max_batch:
            raise limit_error(
                "max_batch", f"{len(images)} images, more than max_batch={limits.max_batch}.",
                value=len(images), maximum=limits.max_batch,
            )  # fmt: skip
        for name, data in zip(names, images, strict=True):
            uploads.check_upload(data, name, limits)
        metrics.queries.inc(len(images))
        try:
            with anyio.fail_after(limits.request_timeout_s):
                body = await anyio.to_thread.run_sync(
                    _search, names, images, k, abandon_on_cancel=True
                )
        except TimeoutError:
            raise limit_error(
                "request_timeout_s",
                f"the search took longer than request_timeout_s={limits.request_timeout_s}.",
                maximum=limits.request_timeout_s, status=408,
            ) from None  # fmt: skip
        # Already JSON (rendered in the worker thread): FastAPI sends it as it is.
        return Response(body, media_type="application/json")

    def _item_file(item: str) -> tuple[int, str]:
        position = engine.position(item)
        if position is None:
            raise ServiceError(404, f"no item {item!r} in the index.", input="id")
        path = engine.item_file(position)
        if path is None:
            raise ServiceError(
                404, f"item {position} has no image inside the images root "
                f"({engine.images_root or 'none: start with --images_root'}).", input="id",
            )  # fmt: skip
        return position, path

    @functools.lru_cache(maxsize=thumbnail_cache)
    def _thumbnail(position: int, path: str, size: int):
        return uploads.thumbnail(path, size)

    @app.get("/items/{item:path}/thumbnail")
    def item_thumbnail(item: str, size: int = 128):
        low, high = THUMBNAIL_SIZES
        if not low <= size <= high:
            raise limit_error(
                "thumbnail_size", f"size must be {low}..{high}; got {size}.", value=size,
                maximum=high, status=400,
            )  # fmt: skip
        position, path = _item_file(item)
        try:
            data, media = _thumbnail(position, path, size)
        except OSError as error:
            raise ServiceError(404, f"item {position}: its image cannot be read ({error}).")
        return Response(data, media_type=media, headers={"Cache-Control": "max-age=3600"})

    @app.get("/items/{item:path}/image")
    def item_image(item: str):
        _, path = _item_file(item)
        with open(path, "rb") as f:
            data = f.read()
        media = mimetypes.guess_type(path)[0] or "application/octet-stream"
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
