"""Each router of the service on its own, without TensorFlow or a SavedModel: a bare
FastAPI application with one router, the service's error handlers, and a stub engine,
limits, metrics and worker pool given through `app.dependency_overrides`
(docs/contributing.md, "Adding a service route"). The answers are compared with what
the stub's own definitions imply."""

import base64
import dataclasses
import io
import os
import types

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

import wsdhash
from wsdhash.service import dependencies, uploads, workers
from wsdhash.service.app import add_error_handlers
from wsdhash.service.errors import Limits
from wsdhash.service.metrics import Metrics
from wsdhash.service.routers import items, page, search, status


def _png(size=(12, 9), seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


class StubEngine:
    """The `SearchEngine` surface the handlers use. A query's prediction is its byte
    count and the k it was searched with; item "name" or its position opens
    root/name (None outside `files`)."""

    metric, kind = "hamming", "flat"

    def __init__(self, root=None, files=("a.png", "b.png", "c.png", "d.png"), valid=True):
        self.images_root, self.files, self.valid = root, list(files), valid
        self.index = types.SimpleNamespace(num_items=len(self.files))
        self.encoded = []

    def encode(self, blobs):
        self.encoded.append(list(blobs))
        count = len(blobs)
        return {
            "valid": np.full(count, self.valid),
            "status": np.full(count, 0 if self.valid else 3),  # 3: over the model's pixels
            "sizes": [len(blob) for blob in blobs],
        }

    def neighbours(self, outputs, k):
        return types.SimpleNamespace(k=k)

    def predictions(self, outputs, result):
        return [{"bytes": size, "k": result.k} for size in outputs["sizes"]]

    def position(self, item):
        if item in self.files:
            return self.files.index(item)
        return int(item) if item.isdigit() and int(item) < len(self.files) else None

    def open_item(self, position):
        if self.images_root is None:
            return None
        return open(os.path.join(self.images_root, self.files[position]), "rb")

    def describe(self):
        return {"model": {"bits": 16}, "index": {"num_items": len(self.files)}}


class InlinePool:
    """A worker pool that runs the job at once in the caller (or raises `error`)."""

    def __init__(self, error=None):
        self.error, self.timeouts = error, []

    async def run(self, function, *args, timeout):
        self.timeouts.append(timeout)
        if self.error is not None:
            raise self.error
        job = types.SimpleNamespace(check=lambda: None)
        return function(job, *args)


def _provide(value):
    return lambda: value


def _client(router, **given) -> tuple[TestClient, Metrics]:
    """A client of an application with `router` only; `given` maps a dependency's
    name in dependencies.py (engine, limits, pool, thumbnails, description) to its stub."""
    app = FastAPI()
    add_error_handlers(app)
    app.include_router(router)
    metrics = Metrics(CollectorRegistry())
    app.state.metrics = metrics  # the error handlers count refusals there
    given.setdefault("metrics", metrics)
    for name, value in given.items():
        app.dependency_overrides[getattr(dependencies, f"get_{name}")] = _provide(value)
    return TestClient(app), metrics


# ---------------------------------------------------------------- search
def test_search_answers_with_the_engines_predictions_for_each_form():
    engine, pool = StubEngine(), InlinePool()
    client, metrics = _client(search.router, engine=engine, limits=Limits(), pool=pool)
    first, second = _png(), _png(seed=1, size=(20, 7))
    response = client.post("/search?k=50", content=first, headers={"content-type": "image/png"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    # k is cut to the index's 4 items; the body is rendered as JSONResponse would.
    expected = {"predictions": [{"bytes": len(first), "k": 4}], "k": 4, "metric": "hamming"}
    assert response.content == JSONResponse({**expected, "kind": "flat"}).body
    files = [("image", ("a.png", first)), ("image", ("b.png", second))]
    response = client.post("/search", files=files, data={"k": "2"})
    assert response.json()["predictions"] == [
        {"bytes": len(first), "k": 2},
        {"bytes": len(second), "k": 2},
    ]
    assert engine.encoded == [[first], [first, second]]  # one model call per request
    assert pool.timeouts == [Limits().request_timeout_s] * 2
    assert metrics.registry.get_sample_value("wsdhash_search_queries_total") == 3


def test_search_refusals_are_the_documented_answers():
    image = _png()
    client, metrics = _client(
        search.router, engine=StubEngine(valid=False), limits=Limits(), pool=InlinePool()
    )
    body = client.post("/search", files={"image": ("big.png", image)}).json()
    assert body["limit"] == "max_pixels" and "image 'big.png'" in body["error"]
    assert (
        metrics.registry.get_sample_value(
            "wsdhash_rejected_requests_total", {"reason": "max_pixels"}
        )
        == 1
    )
    busy, _ = _client(
        search.router,
        engine=StubEngine(),
        limits=Limits(workers=3, max_queue=5),
        pool=InlinePool(workers.Overloaded(5, 9)),
    )
    response = busy.post("/search", content=image)
    assert response.status_code == 503 and response.headers["retry-after"] == "9"
    assert response.json() == {
        "error": "the service is busy: 5 searches wait for 3 workers (at max_queue=5); "
        "retry in 9 s.",
        "limit": "max_queue",
        "maximum": 5,
    }
    few, _ = _client(
        search.router, engine=StubEngine(), limits=Limits(max_batch=1), pool=InlinePool()
    )
    instances = [{"b64": base64.b64encode(image).decode()}] * 2
    response = few.post("/search", json={"instances": instances})
    assert response.status_code == 413 and response.json()["limit"] == "max_batch"
    # Multipart too: Starlette turns its parser's "too many files" into a 400 of its
    # own inside request.form(); the service must still answer its documented 413.
    files = [("a", ("a.png", image, "image/png")), ("b", ("b.png", image, "image/png"))]
    response = few.post("/search", files=files)
    assert response.status_code == 413, response.text
    assert response.json() == {
        "error": "more than max_batch=1 images.",
        "limit": "max_batch",
        "maximum": 1,
    }


def test_a_stopped_job_calls_neither_model_nor_index():
    engine = StubEngine()

    def stopped():
        raise workers.Stopped()

    job = types.SimpleNamespace(check=stopped)
    with pytest.raises(workers.Stopped):
        search.run_search(job, engine, Metrics(CollectorRegistry()), ["body"], [b"x"], 3)
    assert engine.encoded == []


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, 10),
        ("", 10),
        ("7", 7),
        (7, 7),
        ("0", "k"),
        ("x", "k"),
        (True, "k"),
        (1.5, "k"),
        ("8", "max_k"),
    ],
)
def test_parse_k(value, expected):
    limits = Limits(max_k=7)
    if isinstance(expected, int):
        assert search.parse_k(value, limits) == expected
    else:
        with pytest.raises(search.ServiceError) as refused:
            search.parse_k(value, limits)
        assert refused.value.status == 400 and refused.value.fields["limit"] == expected


# ---------------------------------------------------------------- items
@pytest.fixture
def images(tmp_path):
    for number, name in enumerate(("a.png", "b.png")):
        (tmp_path / name).write_bytes(_png(size=(40, 30), seed=number))
    return tmp_path


def test_items_answer_the_file_and_its_thumbnail(images, monkeypatch):
    made = []
    thumbnail = uploads.thumbnail
    monkeypatch.setattr(uploads, "thumbnail", lambda f, s: made.append(s) or thumbnail(f, s))
    engine = StubEngine(str(images), files=("a.png", "b.png"))
    client, _ = _client(items.router, engine=engine, thumbnails=items.ThumbnailCache(1))
    image = client.get("/items/b.png/image")
    assert image.content == (images / "b.png").read_bytes()
    assert image.headers["content-type"] == "image/png"
    for _ in range(2):
        response = client.get("/items/1/thumbnail?size=16")
        assert response.status_code == 200 and response.headers["cache-control"] == "max-age=3600"
        with Image.open(io.BytesIO(response.content)) as small:
            assert small.format == "JPEG" and small.size == (16, 12)  # 40 x 30 fitted to 16
    assert made == [16]  # the second came from the cache
    client.get("/items/0/thumbnail?size=16")  # a cache of one: item 1 goes
    client.get("/items/1/thumbnail?size=16")
    assert made == [16, 16, 16]
    (images / "b.png").write_bytes(_png(size=(30, 30), seed=5))  # replaced: made afresh
    with Image.open(io.BytesIO(client.get("/items/1/thumbnail?size=16").content)) as small:
        assert small.size == (16, 16)


def test_unknown_items_and_a_missing_root_are_404s():
    client, _ = _client(items.router, engine=StubEngine(), thumbnails=items.ThumbnailCache(4))
    response = client.get("/items/nothing/thumbnail")
    assert response.status_code == 404
    assert response.json() == {"error": "no item 'nothing' in the index.", "input": "id"}
    assert client.get("/items/1/image").json() == {
        "error": "item 1 has no image inside the images root (none: start with --images_root).",
        "input": "id",
    }
    response = client.get("/items/1/thumbnail?size=15")
    assert response.status_code == 400 and response.json()["limit"] == "thumbnail_size"


# ---------------------------------------------------------------- status and page
def test_health_info_and_metrics():
    engine = StubEngine()
    metrics = Metrics(CollectorRegistry())
    metrics.queries.inc(3)
    description = status.describe_service(engine, Limits(max_k=7))
    client, _ = _client(status.router, engine=engine, metrics=metrics, description=description)
    assert client.get("/healthz").json() == {"status": "ok", "items": 4, "kind": "flat"}
    assert client.get("/info").json() == description
    limits = description.pop("limits")
    assert description == {**engine.describe(), "version": wsdhash.__version__}
    names = [
        "max_upload_bytes",
        "max_pixels",
        "max_k",
        "max_batch",
        "request_timeout_s",
        "workers",
        "max_queue",
        "max_uploads",
        "max_header_bytes",
    ]
    assert list(limits) == names and limits["max_k"] == 7
    assert limits == {
        field.name: getattr(Limits(max_k=7), field.name) for field in dataclasses.fields(Limits)
    }
    response = client.get("/metrics")
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert "\nwsdhash_search_queries_total 3.0\n" in response.text


def test_the_page_is_the_static_file():
    client, _ = _client(page.router)
    response = client.get("/")
    static = os.path.join(os.path.dirname(search.__file__), "..", "static", "index.html")
    with open(static, encoding="utf-8") as f:
        assert response.text == f.read()
    assert response.headers["content-type"] == "text/html; charset=utf-8"
