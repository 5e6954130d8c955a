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

Where things are: `create_app` here assembles the application; the routes are in
routers/ (an `APIRouter` per group: search.py, items.py, status.py, page.py), given
the engine, limits, worker pool and metrics as dependencies (dependencies.py); the
middleware that enforces body limits, load shedding and the 500 catch-all is guard.py;
the metrics are metrics.py. docs/contributing.md says how to add a route.
"""

from __future__ import annotations

import contextlib

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException

import wsdhash
from wsdhash.service import workers
from wsdhash.service.errors import Limits, ServiceError
from wsdhash.service.guard import RequestGuard
from wsdhash.service.metrics import Metrics
from wsdhash.service.routers import items, page, search, status
from wsdhash.service.routers.search import json_bytes

__all__ = ["add_error_handlers", "create_app", "json_bytes"]


async def service_error(request: Request, error: ServiceError):
    """A refusal (errors.py): its status, JSON body and headers, counted by limit."""
    request.app.state.metrics.count_refusal(error)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def http_error(request: Request, error: HTTPException):
    """Starlette's own refusals (an unknown route: 404, a wrong method: 405) as JSON."""
    return JSONResponse(
        {"error": str(error.detail)}, status_code=error.status_code, headers=error.headers
    )


async def validation_error(request: Request, error: RequestValidationError):
    """A parameter FastAPI could not read (`?size=big`): a 400 naming where it is."""
    problems = "; ".join(
        f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in error.errors()
    )
    return JSONResponse({"error": problems, "input": "request"}, status_code=400)


def add_error_handlers(app: FastAPI) -> None:
    """Every refusal as a JSON body (`service_error` counts into `app.state.metrics`)."""
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    app.state.pool.close()


def create_app(engine, limits: Limits | None = None, thumbnail_cache: int = 4096) -> FastAPI:
    """The application over a `SearchEngine` (engine.py)."""
    limits = limits or Limits()
    metrics = Metrics(CollectorRegistry())
    metrics.items.set(engine.index.num_items)
    pool = workers.WorkerPool(limits.workers, limits.max_queue, on_drop=metrics.count_drop)
    metrics.queued.set_function(lambda: pool.queued)
    page.read_page()  # a missing page fails here, at start

    app = FastAPI(
        title="wsdhash image search",
        version=wsdhash.__version__,
        docs_url="/docs",
        lifespan=_lifespan,
    )
    app.state.engine, app.state.limits, app.state.metrics = engine, limits, metrics
    app.state.pool = pool
    app.state.thumbnails = items.ThumbnailCache(thumbnail_cache)
    app.state.description = status.describe_service(engine, limits)
    app.add_middleware(RequestGuard, limits=limits, metrics=metrics, pool=pool)
    add_error_handlers(app)
    for group in (search, items, status, page):
        app.include_router(group.router)
    return app
