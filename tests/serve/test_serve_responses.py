"""The service's answers byte for byte, over the tiny model: the JSON catch-all for
unknown routes and methods, request validation, the search handler's refusals (a full
worker queue, the timeout, an unsupported Content-Type, the unexpected), the guard's
Content-Length check and the item endpoints' headers. Each expected body is written out
from the documented layout (errors.py) and rendered as FastAPI renders a dict, so a
reordered key or a changed word fails."""

import os

import pytest
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from wsdhash.service import workers
from wsdhash.service.app import create_app
from wsdhash.service.errors import Limits


@pytest.fixture(scope="module")
def app(engine):
    return create_app(engine, Limits(request_timeout_s=0.25))


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app, raise_server_exceptions=False)


def _exact(response, status: int, body: dict, **headers: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.content == JSONResponse(body).body
    for name, value in headers.items():
        assert response.headers[name.replace("_", "-")] == value, response.headers


def test_unknown_routes_and_methods_are_the_json_catch_all(client):
    _exact(client.get("/no/such/route"), 404, {"error": "Not Found"})
    _exact(client.get("/search"), 405, {"error": "Method Not Allowed"}, allow="POST")
    _exact(client.post("/healthz"), 405, {"error": "Method Not Allowed"}, allow="GET")


def test_a_query_that_fails_validation_is_a_400_naming_it(client):
    message = "query.size: Input should be a valid integer, unable to parse string as an integer"
    _exact(client.get("/items/3/thumbnail?size=big"), 400, {"error": message, "input": "request"})


def test_thumbnail_size_and_unknown_item(client):
    body = {
        "error": "size must be 16..512; got 4000.",
        "limit": "thumbnail_size",
        "value": 4000,
        "maximum": 512,
    }
    _exact(client.get("/items/3/thumbnail?size=4000"), 400, body)
    body = {"error": "no item 'nothing' in the index.", "input": "id"}
    _exact(client.get("/items/nothing/image"), 404, body)


def test_item_answers_carry_their_cache_header_and_media_type(client, engine):
    thumbnail = client.get("/items/3/thumbnail?size=16")
    assert thumbnail.status_code == 200
    assert thumbnail.headers["cache-control"] == "max-age=3600"
    assert thumbnail.headers["content-type"] == "image/jpeg"
    image = client.get("/items/3/image")
    assert image.status_code == 200 and image.headers["cache-control"] == "max-age=3600"
    extension = os.path.splitext(engine.item_file(3))[1].lower()
    assert image.headers["content-type"] == {".png": "image/png", ".jpg": "image/jpeg"}[extension]


def test_an_unsupported_content_type_is_a_415(client):
    response = client.post("/search", content=b"a=1", headers={"content-type": "text/plain"})
    message = (
        "request: Content-Type 'text/plain': send multipart/form-data, application/json "
        "or the image's bytes."
    )
    _exact(response, 415, {"error": message, "input": "request"})


def test_a_content_length_that_is_no_number_is_a_400(client):
    response = client.post("/search", content=b"x", headers={"content-length": "12x"})
    _exact(
        response, 400, {"error": "request: Content-Length b'12x' is no number.", "input": "request"}
    )


def _search_with_pool(app, client, image, monkeypatch, raising: BaseException):
    async def run(*args, timeout):
        raise raising

    monkeypatch.setattr(app.state.pool, "run", run)
    return client.post("/search", content=image, headers={"content-type": "image/png"})


@pytest.fixture(scope="module")
def image(engine):
    with open(engine.item_file(3), "rb") as f:
        return f.read()


def test_a_full_worker_queue_is_a_503_with_retry_after(app, client, image, monkeypatch):
    response = _search_with_pool(app, client, image, monkeypatch, workers.Overloaded(3, 7))
    body = {
        "error": "the service is busy: 3 searches wait for 2 workers (at max_queue=16); "
        "retry in 7 s.",
        "limit": "max_queue",
        "maximum": 16,
    }
    _exact(response, 503, body, retry_after="7")


def test_a_search_past_its_time_is_a_408(app, client, image, monkeypatch):
    response = _search_with_pool(app, client, image, monkeypatch, TimeoutError())
    body = {
        "error": "the search took longer than request_timeout_s=0.25.",
        "limit": "request_timeout_s",
        "maximum": 0.25,
    }
    _exact(response, 408, body)


def test_the_unexpected_is_a_plain_500(app, client, image, monkeypatch):
    response = _search_with_pool(app, client, image, monkeypatch, RuntimeError("secret"))
    _exact(response, 500, {"error": "internal error: the service's log has the details."})
