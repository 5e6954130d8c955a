"""GET /healthz (liveness and the index size), /info (model, index, limits and version,
described once at start by `describe_service`) and /metrics (Prometheus text format)."""

import dataclasses

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import wsdhash
from wsdhash.service.dependencies import DescriptionDep, EngineDep, MetricsDep
from wsdhash.service.errors import Limits

router = APIRouter()


def describe_service(engine, limits: Limits) -> dict:
    """The `/info` answer: the engine's description (engine.describe: model and index
    with dates and checksums, the start check), every limit, the library's version."""
    return {
        **engine.describe(),
        "limits": dataclasses.asdict(limits),
        "version": wsdhash.__version__,
    }


# No docstrings on the handlers: FastAPI would publish them in /openapi.json.
@router.get("/healthz")
def healthz(engine: EngineDep):
    return {"status": "ok", "items": int(engine.index.num_items), "kind": engine.kind}


@router.get("/info")
def info(description: DescriptionDep):
    return description


@router.get("/metrics")
def prometheus_metrics(metrics: MetricsDep):
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
