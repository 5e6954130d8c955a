"""POST /search: one request's images (multipart, raw bytes or TensorFlow Serving style
JSON), checked against the limits, then searched in one worker thread (workers.py).

Reading a request: `read_images` picks the form by Content-Type, `json_instances` and
`multipart_images` read their forms, `parse_k` and `check_batch` enforce `max_k` and
`max_batch`; `run_search` is the worker's job (model call, index search and the
answer's JSON, stopping between the stages once the request has given up).
"""

import base64
import binascii
import json
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from wsdhash.service import uploads, workers
from wsdhash.service.dependencies import EngineDep, LimitsDep, MetricsDep, PoolDep
from wsdhash.service.engine import status_error
from wsdhash.service.errors import (
    Limits,
    ServiceError,
    input_error,
    limit_error,
    overloaded_error,
)

router = APIRouter()

_EMPTY = (
    "empty body: send an image (multipart field 'image', or its bytes as "
    'image/jpeg or image/png) or JSON {"instances": [{"b64": ...}], "k": 10}.'
)


def parse_k(value, limits: Limits, default: int = 10) -> int:
    """`k` from the query, a form field or the JSON body: 1..max_k, else a 400."""
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
            "max_k",
            f"k={k} is more than max_k={limits.max_k}.",
            value=k,
            maximum=limits.max_k,
            status=400,
        )
    return k


def check_batch(count: int, limits: Limits) -> None:
    """The 413 for more than `max_batch` images in one request."""
    if count > limits.max_batch:
        raise limit_error(
            "max_batch",
            f"{count} images, more than max_batch={limits.max_batch}.",
            value=count,
            maximum=limits.max_batch,
        )


def _instance_b64(number: int, instance, limits: Limits) -> str:
    """The base64 text of `instances[number]`, its length checked, not decoded."""
    name = f"instances[{number}]"
    if isinstance(instance, dict) and "b64" not in instance and len(instance) == 1:
        instance = next(iter(instance.values()))  # {"images": {"b64": ...}}
    if not isinstance(instance, dict) or not isinstance(instance.get("b64"), str):
        raise input_error(name, 'each instance must be {"b64": BASE64 of a JPEG or PNG}.')
    longest = (limits.max_upload_bytes + 2) // 3 * 4  # base64 of max_upload_bytes
    if len(instance["b64"].rstrip("=")) > longest:
        raise limit_error(
            "max_upload_bytes",
            f"{name}: about {len(instance['b64']) * 3 // 4} bytes, more than "
            f"max_upload_bytes={limits.max_upload_bytes}.",
            value=len(instance["b64"]) * 3 // 4,
            maximum=limits.max_upload_bytes,
        )
    return instance["b64"]


def json_instances(body: bytes, limits: Limits):
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
    check_batch(len(request["instances"]), limits)
    encoded = [
        _instance_b64(n, instance, limits) for n, instance in enumerate(request["instances"])
    ]
    names = [f"instances[{number}]" for number in range(len(encoded))]
    images = []
    for name, value in zip(names, encoded, strict=True):
        try:
            images.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            raise input_error(name, "the b64 value is not valid base64.") from None
    return names, images, request.get("k")


async def _read_form(request: Request, limits: Limits):
    try:
        return await request.form(max_files=limits.max_batch, max_fields=64)
    except ServiceError:
        raise
    except (MultiPartException, HTTPException) as error:
        # Starlette re-raises its parser's MultiPartException as a 400 HTTPException
        # inside an app; either way "too many files" is the max_batch limit.
        text = str(getattr(error, "detail", None) or error)
        if "too many files" in text.lower():
            raise limit_error(
                "max_batch",
                f"more than max_batch={limits.max_batch} images.",
                maximum=limits.max_batch,
            ) from None
        raise input_error("request", f"a malformed multipart body ({text}).") from None
    except Exception as error:  # noqa: BLE001 (python-multipart's parse errors)
        raise input_error("request", f"a malformed multipart body ({error}).") from None


async def multipart_images(request: Request, limits: Limits):
    """(names, images, k) of a multipart/form-data request: every file field is an image."""
    form = await _read_form(request, limits)
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


async def read_images(request: Request, limits: Limits):
    """(names, images, k) of a search request in any of its forms (module doc)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await multipart_images(request, limits)
    body = await request.body()
    if not body:
        raise input_error("request", _EMPTY)
    if kind == "application/json":
        return json_instances(body, limits)
    if kind in ("", "application/octet-stream") or kind.startswith("image/"):
        return ["body"], [body], None
    raise input_error(
        "request",
        f"Content-Type {kind!r}: send multipart/form-data, application/json or the image's bytes.",
        status=415,
    )


def json_bytes(content) -> bytes:
    """`content` as JSONResponse renders it (the same bytes), for a body built ahead."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def run_search(job: workers.Job, engine, metrics, names, images, k: int) -> bytes:
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
    answer = {
        "predictions": engine.predictions(outputs, result),
        "k": k,
        "metric": engine.metric,
        "kind": engine.kind,
    }
    return json_bytes(answer)


# No docstrings on the handlers: FastAPI would publish them in /openapi.json.
@router.post("/search")
async def search(
    request: Request, engine: EngineDep, limits: LimitsDep, metrics: MetricsDep, pool: PoolDep
):
    names, images, k = await read_images(request, limits)
    k = parse_k(request.query_params.get("k", k), limits)
    if not images:
        raise input_error("request", "no image in the request.")
    check_batch(len(images), limits)
    for name, data in zip(names, images, strict=True):
        uploads.check_upload(data, name, limits)
    metrics.queries.inc(len(images))
    try:
        body = await pool.run(
            run_search, engine, metrics, names, images, k, timeout=limits.request_timeout_s
        )
    except workers.Overloaded as error:
        raise overloaded_error(
            "max_queue",
            f"{error.queued} searches wait for {limits.workers} workers",
            limits.max_queue,
            error.retry_after_s,
        ) from None
    except TimeoutError:
        raise limit_error(
            "request_timeout_s",
            f"the search took longer than request_timeout_s={limits.request_timeout_s}.",
            maximum=limits.request_timeout_s,
            status=408,
        ) from None
    # Already JSON (rendered in the worker thread): FastAPI sends it as it is.
    return Response(body, media_type="application/json")
