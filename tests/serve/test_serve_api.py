"""The service's HTTP API in-process (FastAPI's TestClient) over a tiny trained model and
an index of its images: every endpoint, every limit and every bad input answers as
documented (4xx JSON naming the limit or the input, never a 500)."""

import base64
import io
import os
import time
import urllib.parse

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from wsdhash.service import engine as engine_lib
from wsdhash.service.app import create_app
from wsdhash.service.errors import Limits


def _encoded(image: Image.Image, kind: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def _noise(size=(40, 30), mode="RGB", seed=0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    return Image.fromarray(pixels).convert(mode)


@pytest.fixture(scope="module")
def client(engine):
    return TestClient(create_app(engine))


@pytest.fixture(scope="module")
def query_image(served_files):
    _, images, _, _ = served_files
    with open(os.path.join(images, sorted(os.listdir(images))[3]), "rb") as f:
        return f.read()


def _upload(client, data, name="query.png", k=None, **kwargs):
    params = {} if k is None else {"k": k}
    return client.post("/search", files={"image": (name, data)}, params=params, **kwargs)


def _error(response, status, limit=None):
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    if limit is not None:
        assert body["limit"] == limit, body
    return body


def test_search_answers_what_the_index_answers_for_every_request_form(client, engine, query_image):
    expected = engine.direct_search([query_image], 7)
    forms = [
        _upload(client, query_image, k=7),
        client.post("/search?k=7", content=query_image, headers={"content-type": "image/png"}),
        client.post(
            "/search", json={"instances": [{"b64": base64.b64encode(query_image).decode()}], "k": 7}
        ),
    ]
    for response in forms:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["k"] == 7 and body["metric"] == "hamming" and body["kind"] == "flat"
        [prediction] = body["predictions"]
        assert prediction["positions"] == expected.positions[0].tolist()
        assert prediction["distances"] == expected.distances[0].tolist()
        assert prediction["ids"] == [str(engine.index.ids[p]) for p in prediction["positions"]]
        assert all(path and not path.startswith("..") for path in prediction["paths"])
        assert len(prediction["code"]) == 16 and set(prediction["code"]) <= {"0", "1"}


def test_a_batch_runs_as_one_model_call(engine, query_image, monkeypatch):
    calls = []
    encode = engine.encode
    monkeypatch.setattr(engine, "encode", lambda blobs: calls.append(len(blobs)) or encode(blobs))
    other = _encoded(_noise(seed=3))
    instances = [{"b64": base64.b64encode(d).decode()} for d in (query_image, other, query_image)]
    response = TestClient(create_app(engine)).post("/search", json={"instances": instances, "k": 4})
    assert response.status_code == 200, response.text
    assert calls == [3]
    first, second, third = response.json()["predictions"]
    assert first == third
    assert second["positions"] == engine.direct_search([other], 4).positions[0].tolist()
    # Several multipart files are one batch too.
    calls.clear()
    files = [("image", ("a.png", query_image)), ("image", ("b.png", other))]
    assert TestClient(create_app(engine)).post("/search", files=files).status_code == 200
    assert calls == [2]


@pytest.mark.parametrize(
    "name, data",
    [
        ("alpha.png", _encoded(_noise(mode="RGBA"))),
        ("gray.png", _encoded(_noise(mode="L"))),
        ("gray.jpg", _encoded(_noise(mode="L"), "JPEG")),
        ("cmyk.jpg", _encoded(_noise(mode="CMYK"), "JPEG")),
        ("tiny.png", _encoded(_noise(size=(1, 1)))),
        ("tiny.jpg", _encoded(_noise(size=(1, 1)), "JPEG")),
    ],
)
def test_images_the_model_decodes_are_searched(client, name, data):
    response = _upload(client, data, name, k=3)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"][0]["ids"]) == 3


@pytest.mark.parametrize(
    "name, data, status, words",
    [
        ("garbage.jpg", b"\x00\x01 this is not an image at all", 400, "not an image"),
        ("empty.png", b"", 400, "empty image"),
        ("anim.gif", _encoded(_noise(), "GIF"), 415, "GIF"),
        ("picture.webp", _encoded(_noise(), "WEBP"), 415, "WEBP"),
        ("broken.png", _encoded(_noise())[:60], 400, "corrupt or truncated"),
        ("broken.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 40, 400, "corrupt or truncated"),
    ],
)
def test_bad_images_are_a_4xx_naming_the_upload(client, name, data, status, words):
    body = _error(_upload(client, data, name), status)
    assert name in body["error"] and words in body["error"], body


def test_empty_and_malformed_requests(client):
    body = _error(client.post("/search"), 400)
    assert "empty body" in body["error"]
    _error(client.post("/search", content=b"", headers={"content-type": "image/png"}), 400)
    _error(client.post("/search", content=b"{", headers={"content-type": "application/json"}), 400)
    _error(client.post("/search", json={"images": []}), 400)
    _error(client.post("/search", json={"instances": []}), 400)
    body = _error(client.post("/search", json={"instances": [{"b64": "%%%"}]}), 400)
    assert body["input"] == "instances[0]"
    body = _error(client.post("/search", json={"instances": [{"b64": "aGk="}, "x"]}), 400)
    assert body["input"] == "instances[1]"  # the malformed one, before any is decoded
    body = _error(
        client.post("/search", content=b"a=1", headers={"content-type": "text/plain"}), 415
    )
    gif = base64.b64encode(_encoded(_noise(), "GIF")).decode()
    png = base64.b64encode(_encoded(_noise())).decode()
    body = _error(client.post("/search", json={"instances": [{"b64": png}, {"b64": gif}]}), 415)
    assert body["input"] == "instances[1]"


def test_k_limits(client, engine, query_image):
    _error(_upload(client, query_image, k=0), 400, "k")
    _error(_upload(client, query_image, k=-3), 400, "k")
    _error(_upload(client, query_image, k="ten"), 400, "k")
    body = _error(_upload(client, query_image, k=101), 400, "max_k")
    assert body["maximum"] == 100
    # k above the index size (within max_k) returns the whole index, ranked.
    roomy = TestClient(create_app(engine, Limits(max_k=1000)))
    response = _upload(roomy, query_image, k=500)
    assert response.status_code == 200
    assert response.json()["k"] == engine.index.num_items == 270
    assert sorted(response.json()["predictions"][0]["positions"]) == list(range(270))


def test_size_pixel_batch_and_time_limits(engine, query_image, monkeypatch):
    small = TestClient(
        create_app(engine, Limits(max_upload_bytes=len(query_image) - 1, max_batch=1))
    )
    body = _error(_upload(small, query_image), 413, "max_upload_bytes")
    assert body["value"] == len(query_image)
    # A body larger than the whole request may hold is refused from its Content-Length.
    _error(_upload(small, query_image * 100), 413, "max_upload_bytes")

    pixels = TestClient(create_app(engine, Limits(max_pixels=40 * 30 - 1)))
    body = _error(_upload(pixels, _encoded(_noise(size=(40, 30))), "big.png"), 413, "max_pixels")
    assert body["value"] == 1200 and "big.png" in body["error"]
    _error(_upload(pixels, _encoded(_noise(size=(40, 30)), "JPEG"), "big.jpg"), 413, "max_pixels")

    batch = TestClient(create_app(engine, Limits(max_batch=2)))
    instances = [{"b64": base64.b64encode(query_image).decode()}] * 3
    _error(batch.post("/search", json={"instances": instances}), 413, "max_batch")

    encode = engine.encode
    monkeypatch.setattr(engine, "encode", lambda blobs: time.sleep(2) or encode(blobs))
    slow = TestClient(create_app(engine, Limits(request_timeout_s=0.2)))
    started = time.perf_counter()
    _error(_upload(slow, query_image), 408, "request_timeout_s")
    assert time.perf_counter() - started < 1.5  # answered at the limit, not after the search


def test_the_models_own_pixel_limit_is_a_413(engine, monkeypatch):
    def too_large(blobs):
        return {"valid": np.array([False]), "status": np.array([engine_lib.STATUS_TOO_LARGE])}

    monkeypatch.setattr(engine, "encode", too_large)
    response = _upload(TestClient(create_app(engine)), _encoded(_noise()), "large.png")
    assert "large.png" in _error(response, 413, "max_pixels")["error"]


def test_thumbnails_by_position_or_id(client, engine):
    response = client.get("/items/3/thumbnail")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as image:
        assert max(image.size) <= 128 and image.mode == "RGB"
    by_id = client.get(f"/items/{urllib.parse.quote(str(engine.index.ids[3]))}/thumbnail")
    assert by_id.status_code == 200 and by_id.content == response.content
    image = client.get("/items/3/image")
    with open(engine.item_file(3), "rb") as f:
        assert image.status_code == 200 and image.content == f.read()
    _error(client.get("/items/3/thumbnail?size=4000"), 400, "thumbnail_size")
    _error(client.get("/items/270/thumbnail"), 404)
    _error(client.get("/items/nothing/thumbnail"), 404)


@pytest.mark.parametrize(
    "item",
    [
        "../../../../etc/passwd",
        "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "%2Fetc%2Fpasswd",
        "..\\..\\etc\\passwd",
        "-1",
    ],
)
def test_a_path_traversal_id_reads_nothing(client, item):
    for endpoint in ("thumbnail", "image"):
        response = client.get(f"/items/{item}/{endpoint}")
        assert response.status_code == 404, (item, response.status_code)
        assert "root:" not in response.text


def test_index_entries_outside_the_images_root_are_never_served(tmp_path, engine):
    """An index whose stored ids point outside the root (a path with .., an absolute
    path, a symlink out of it) serves no file for them."""
    from wsdhash.index.sharded import ShardedIndex, build_index

    root, outside = tmp_path / "root", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    secret = outside / "secret.png"
    secret.write_bytes(_encoded(_noise()))
    (root / "inside.png").write_bytes(_encoded(_noise(seed=1)))
    (root / "link.png").symlink_to(secret)
    ids = ["inside.png", "../secret/secret.png", str(secret), "link.png"]
    codes = np.zeros((4, 2), np.uint8)
    build_index(str(tmp_path / "index"), [(codes, np.array(ids))], kind="flat")
    index = ShardedIndex(str(tmp_path / "index"))
    other = engine_lib.SearchEngine(engine.model, index, str(root), check_images=0)
    client = TestClient(create_app(other))
    assert client.get("/items/0/thumbnail").status_code == 200
    for position in (1, 2, 3):
        assert client.get(f"/items/{position}/thumbnail").status_code == 404
        assert client.get(f"/items/{position}/image").status_code == 404
        assert other.item_path(position) is None


def test_healthz_info_and_page(client, engine, served_files):
    _, _, model, index = served_files
    assert client.get("/healthz").json() == {"status": "ok", "items": 270, "kind": "flat"}
    info = client.get("/info").json()
    assert info["model"]["bits"] == 16 and info["model"]["quantizer"] is None
    assert info["model"]["sha256"] == engine_lib.folder_sha256(model)
    assert info["model"]["built"] and info["index"]["built"]
    assert info["index"]["kind"] == "flat" and info["index"]["num_items"] == 270
    assert info["index"]["sha256"] == engine_lib.folder_sha256(os.path.join(index, "index.json"))
    assert info["limits"]["max_k"] == 100 and info["start_check"]["agreement"] >= 0.75
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="results"' in page.text and 'type="file"' in page.text


def test_metrics_count_requests_and_latencies(engine, query_image):
    client = TestClient(create_app(engine))
    for _ in range(2):
        assert _upload(client, query_image).status_code == 200
    _upload(client, b"garbage")
    client.get("/items/no-such-item/thumbnail")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'wsdhash_http_requests_total{handler="/search",method="POST",status="200"} 2.0' in text
    assert 'wsdhash_http_requests_total{handler="/search",method="POST",status="400"} 1.0' in text
    assert 'handler="/items/{item:path}/thumbnail",method="GET",status="404"} 1.0' in text
    assert 'wsdhash_http_request_duration_seconds_count{handler="/search"} 3.0' in text
    assert 'wsdhash_http_request_duration_seconds_bucket{handler="/search",le="+Inf"} 3.0' in text
    assert "wsdhash_model_seconds_count 2.0" in text
    assert "wsdhash_search_queries_total 2.0" in text
    assert 'wsdhash_rejected_requests_total{reason="input"} 2.0' in text
    assert "wsdhash_index_items 270.0" in text


def test_the_search_answer_is_the_json_fastapi_would_render(client, engine, query_image):
    """/search renders its answer in the worker thread (app.json_bytes): the same bytes
    and headers as a returned dict through JSONResponse."""
    from fastapi.responses import JSONResponse

    from wsdhash.service.app import json_bytes

    response = _upload(client, query_image, k=5)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.content == JSONResponse(response.json()).body
    assert int(response.headers["content-length"]) == len(response.content)
    body = response.json()
    assert set(body) == {"predictions", "k", "metric", "kind"} and body["k"] == 5
    assert all(type(d) is int for d in body["predictions"][0]["distances"])  # hamming
    content = {"a": [1, 2.5, -0.1234567, None, "ü é", True], "b": {"c": []}}
    assert json_bytes(content) == JSONResponse(content).body
    with pytest.raises(ValueError):
        json_bytes({"x": float("nan")})  # as JSONResponse: no NaN in an answer


def test_item_paths_are_remembered(engine, monkeypatch):
    position = 5
    expected = engine.item_path(position)
    assert expected and not os.path.isabs(expected)
    calls = []
    item_file = engine.item_file
    monkeypatch.setattr(engine, "item_file", lambda p: calls.append(p) or item_file(p))
    assert engine.item_path(position) == expected and calls == []
    assert engine.position(str(engine.index.ids[position])) == position


def test_predictions_code_and_distances_match_the_per_item_formulas(engine):
    """predictions() reads whole rows at once: the same values as item by item."""
    import types

    codes = np.array([[1.5, -2.0, 0.0, np.nan, 3.0], [-1.0, 0.5, 2.0, -0.0, -7.0]], np.float32)
    positions = np.array([[4, 0, -1], [2, -1, -1]], np.int64)
    distances = np.array([[1.0, 2.0, 99.0], [0.0, 99.0, 99.0]], np.float32)
    result = types.SimpleNamespace(positions=positions, distances=distances)
    first, second = engine.predictions({"codes": codes}, result)
    for row, answer in zip(codes, (first, second), strict=True):
        assert answer["code"] == "".join("1" if c > 0 else "0" for c in row)
    assert first["positions"] == [4, 0] and second["positions"] == [2]
    assert first["distances"] == [1, 2] and all(type(d) is int for d in first["distances"])
    assert first["ids"] == [str(engine.index.ids[4]), str(engine.index.ids[0])]
    assert first["paths"] == [engine.item_path(4), engine.item_path(0)]
    assert engine.predictions({}, result)[0]["code"] is None
