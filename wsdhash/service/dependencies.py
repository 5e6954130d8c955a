"""What the routers' handlers are given, as FastAPI dependencies: the application's
search engine, limits, worker pool, metrics, thumbnail cache and `/info` description,
each read from `app.state` (set once by app.create_app).

A handler names what it needs by type (`engine: EngineDep`); a test replaces any of
them without a SavedModel: `app.dependency_overrides[get_engine] = lambda: stub`.
The functions are coroutines so that FastAPI calls them on the event loop (a plain
function would cost a trip to its thread pool on every request).
"""

from typing import Annotated, Any

from fastapi import Depends, Request

from wsdhash.service.errors import Limits
from wsdhash.service.metrics import Metrics
from wsdhash.service.workers import WorkerPool


async def get_engine(request: Request):
    """The `SearchEngine` (engine.py) the application serves."""
    return request.app.state.engine


async def get_limits(request: Request) -> Limits:
    return request.app.state.limits


async def get_pool(request: Request) -> WorkerPool:
    return request.app.state.pool


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_thumbnails(request: Request):
    """The `ThumbnailCache` (routers/items.py)."""
    return request.app.state.thumbnails


async def get_description(request: Request) -> dict:
    """The `/info` answer, made once at start (routers/status.py: describe_service)."""
    return request.app.state.description


EngineDep = Annotated[Any, Depends(get_engine)]
LimitsDep = Annotated[Limits, Depends(get_limits)]
PoolDep = Annotated[WorkerPool, Depends(get_pool)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ThumbnailsDep = Annotated[Any, Depends(get_thumbnails)]
DescriptionDep = Annotated[dict, Depends(get_description)]
