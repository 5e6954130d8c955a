"""The service under load and attack (issue 22): a fixed pool of search workers behind a
bounded queue (503 with Retry-After when full; a timed-out search never starts or stops
between stages), limits enforced while a body streams in, 4xx JSON for every bad
request and a 500 JSON without details for the unexpected, items opened inside the
images root at every open, bounded metrics labels, a head cap with both HTTP parsers,
and images whose headers lie."""

import asyncio
import base64
import io
import json
import logging
import os
import shutil
import socket
import struct
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from wsdhash.service import engine as engine_lib
from wsdhash.service.app import create_app
from wsdhash.service.errors import Limits

WAIT_S = 120  # a generous ceiling for what must happen on a busy machine


@pytest.fixture(scope="module")
def query_image(served_files):
    _, images, _, _ = served_files
    with open(os.path.join(images, sorted(os.listdir(images))[3]), "rb") as f:
        return f.read()


def _png(size=(40, 30), seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _error(response, status, limit=None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    assert isinstance(body["error"], str) and body["error"], body
    if limit is not None:
        assert body["limit"] == limit, body
    return body


def _in_process(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")


async def _until(condition) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.005)


def _gated(engine, monkeypatch):
    """The engine's model call waits for `gate`; `started` and `searched` record the
    model calls begun and the index searches made."""
    gate, started, searched = threading.Event(), [], []
    encode, neighbours = engine.encode, engine.neighbours

    def gated_encode(blobs):
        started.append(len(blobs))
        assert gate.wait(WAIT_S)
        return encode(blobs)

    monkeypatch.setattr(engine, "encode", gated_encode)
    monkeypatch.setattr(engine, "neighbours", lambda o, k: searched.append(k) or neighbours(o, k))
    return gate, started, searched


# ---------------------------------------------------------------- 1. bounded work
def test_a_full_queue_is_a_503_with_retry_after_at_once(engine, query_image, monkeypatch):
    gate, started, _ = _gated(engine, monkeypatch)
    app = create_app(engine, Limits(workers=1, max_queue=1, request_timeout_s=WAIT_S))

    async def scenario():
        async with _in_process(app) as client:
            search = lambda: client.post("/search", content=query_image)
            first = asyncio.create_task(search())
            await _until(lambda: started)  # the one worker is busy
            second = asyncio.create_task(search())
            await _until(lambda: app.state.pool.queued == 1)  # the queue is full
            third = await search()
            gate.set()
            return await first, await second, third

    first, second, third = asyncio.run(scenario())
    assert first.status_code == second.status_code == 200
    body = _error(third, 503, "max_queue")
    assert body["maximum"] == 1 and "busy" in body["error"]
    assert 1 <= int(third.headers["retry-after"]) <= 60
    assert started == [1, 1] and app.state.pool.threads == 1


def test_a_timed_out_search_never_starts_or_stops_before_its_next_stage(
    engine, query_image, monkeypatch
):
    gate, started, searched = _gated(engine, monkeypatch)
    app = create_app(engine, Limits(workers=1, max_queue=4, request_timeout_s=0.5))
    pool = app.state.pool

    async def scenario():
        async with _in_process(app) as client:
            search = lambda: client.post("/search", content=query_image)
            first = asyncio.create_task(search())
            await _until(lambda: started)
            second = asyncio.create_task(search())
            await _until(lambda: pool.queued == 1 or second.done())
            answers = [await first, await second]  # both time out: the gate is closed
            assert pool.queued == 0  # the queued one was taken out
            gate.set()  # the first model call ends; its search must stop there
            await _until(lambda: pool.busy == 0)
            return answers, await search()

    (first, second), after = asyncio.run(scenario())
    _error(first, 408, "request_timeout_s")
    _error(second, 408, "request_timeout_s")
    assert after.status_code == 200, after.text
    # One model call for the timed-out pair (the second never started), no index search
    # for either, and the worker threads did not grow.
    assert started == [1, 1] and searched == [10]
    assert pool.threads == 1
    metrics = TestClient(app).get("/metrics").text
    assert 'wsdhash_dropped_searches_total{reason="cancelled"} 1.0' in metrics
    assert 'wsdhash_dropped_searches_total{reason="stopped"} 1.0' in metrics


# ---------------------------------------------------------------- 2. limits while streaming
def test_a_raw_body_is_read_no_further_than_one_images_limit(engine):
    limits = Limits(max_upload_bytes=10_000)
    sent = []

    async def body():
        for _ in range(200):  # 200 KB, far over one image's 10 KB
            sent.append(1000)
            yield b"\0" * 1000

    async def scenario():
        async with _in_process(create_app(engine, limits)) as client:
            return await client.post(
                "/search", content=body(), headers={"content-type": "image/png"}
            )

    body_ = _error(asyncio.run(scenario()), 413, "max_upload_bytes")
    assert body_["maximum"] == 10_000
    assert sum(sent) <= 12_000  # it stopped reading at the limit
    # A Content-Length over one image's limit is refused before any byte is read.
    response = TestClient(create_app(engine, limits)).post(
        "/search", content=b"\0" * 10_001, headers={"content-type": "image/jpeg"}
    )
    assert _error(response, 413, "max_upload_bytes")["value"] == 10_001


def test_json_instances_are_counted_before_any_is_decoded(engine, monkeypatch):
    decoded = []
    decode = base64.b64decode
    monkeypatch.setattr(base64, "b64decode", lambda *a, **k: decoded.append(1) or decode(*a, **k))
    client = TestClient(create_app(engine))
    instances = [{"b64": "aGk="}] * 10_000
    body = _error(client.post("/search", json={"instances": instances}), 413, "max_batch")
    assert body["value"] == 10_000 and decoded == []
    # An instance longer than one image is refused before decoding as well.
    small = TestClient(create_app(engine, Limits(max_upload_bytes=3000)))
    long = base64.b64encode(b"\x89PNG" + b"\0" * 4000).decode()
    body = _error(small.post("/search", json={"instances": [{"b64": long}]}), 413)
    assert body["limit"] == "max_upload_bytes" and "instances[0]" in body["error"]
    assert decoded == []


def test_concurrent_uploads_are_capped(engine, query_image):
    app = create_app(engine, Limits(max_uploads=2))
    release = asyncio.Event

    async def scenario():
        go = release()

        async def slow_body():
            yield query_image[:100]
            await go.wait()
            yield query_image[100:]

        async with _in_process(app) as client:
            headers = {"content-type": "image/png"}
            slow = [
                asyncio.create_task(client.post("/search", content=slow_body(), headers=headers))
                for _ in range(2)
            ]
            await _until(lambda: app.user_middleware and _uploads(app) == 2)
            refused = await client.post("/search", content=query_image, headers=headers)
            go.set()
            return refused, [await task for task in slow]

    refused, done = asyncio.run(scenario())
    assert _error(refused, 503, "max_uploads")["maximum"] == 2
    assert "retry-after" in refused.headers
    assert [r.status_code for r in done] == [200, 200]
    assert _uploads(app) == 0


def _uploads(app) -> int:
    """The guard middleware's count of bodies being read."""
    stack = app.middleware_stack
    while stack is not None and not hasattr(stack, "uploads"):
        stack = getattr(stack, "app", None)
    return -1 if stack is None else stack.uploads


# ---------------------------------------------------------------- 3. 4xx JSON, never a bare 500
def _small_engine(tmp_path, engine, files: dict[str, bytes]):
    """An engine over `files` (name -> bytes) in tmp_path/root, ids = names."""
    from wsdhash.index.sharded import ShardedIndex, build_index

    root = tmp_path / "root"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    codes = np.zeros((len(files), 2), np.uint8)
    build_index(str(tmp_path / "index"), [(codes, np.array(list(files)))], kind="flat")
    index = ShardedIndex(str(tmp_path / "index"))
    return engine_lib.SearchEngine(engine.model, index, str(root), check_images=0), root


def test_odd_item_ids_and_deep_json_are_4xx_json(engine):
    client = TestClient(create_app(engine))
    for item in ("9" * 5000, "%C2%B2", "١"):  # "²" and "١" (Arabic-Indic 1) are isdigit()
        body = _error(client.get(f"/items/{item}/thumbnail"), 404)
        assert body["input"] == "id"
        _error(client.get(f"/items/{item}/image"), 404)
    for item in ("0003", "0" * 5000 + "3"):  # leading zeros: still a position
        assert client.get(f"/items/{item}/thumbnail").status_code == 200
    _error(client.get("/items/3/thumbnail?size=" + "9" * 5000), 400)
    deep = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    body = _error(
        client.post("/search", content=deep, headers={"content-type": "application/json"}), 400
    )
    assert "nested" in body["error"]
    _error(client.post("/search", content=b"x", headers={"content-length": "1" * 5000}), 413)


def test_a_deleted_database_image_is_a_404(tmp_path, engine):
    other, root = _small_engine(tmp_path, engine, {"a.png": _png(), "b.png": _png(seed=1)})
    client = TestClient(create_app(other))
    assert client.get("/items/0/image").status_code == 200
    (root / "a.png").unlink()
    for endpoint in ("image", "thumbnail"):
        _error(client.get(f"/items/0/{endpoint}"), 404)


def test_the_unexpected_is_a_logged_500_json_without_details(engine, query_image, caplog):
    def broken(outputs, k):
        raise RuntimeError("a secret detail of the failure")

    app = create_app(engine)
    client = TestClient(app)
    engine_neighbours = engine.neighbours
    engine.neighbours = broken
    try:
        with caplog.at_level(logging.ERROR, logger="wsdhash.serve"):
            response = client.post("/search", content=query_image)
    finally:
        engine.neighbours = engine_neighbours
    body = _error(response, 500)
    assert "secret" not in response.text and "Traceback" not in response.text
    assert "log" in body["error"]
    assert any("secret" in (r.exc_text or "") or r.exc_info for r in caplog.records)
    assert client.post("/search", content=query_image).status_code == 200


# ---------------------------------------------------------------- 4. symlink swap
def test_a_file_swapped_for_a_symlink_after_the_first_look_is_not_served(tmp_path, engine):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "c.png").write_bytes(b"root:x:0:0:secret\n")
    other, root = _small_engine(tmp_path, engine, {"a.png": _png(), "sub/c.png": _png(seed=2)})
    client = TestClient(create_app(other))
    for item in ("0", "1"):
        assert client.get(f"/items/{item}/image").status_code == 200
        assert client.get(f"/items/{item}/thumbnail").status_code == 200
    (root / "a.png").unlink()
    (root / "a.png").symlink_to(secret / "c.png")  # the file itself
    shutil.rmtree(root / "sub")
    (root / "sub").symlink_to(secret)  # a folder on its path
    for item in ("0", "1"):
        for endpoint in ("image", "thumbnail"):
            response = client.get(f"/items/{item}/{endpoint}")
            assert response.status_code == 404, (item, endpoint)
            assert "secret" not in response.text


# ---------------------------------------------------------------- 5. metrics and headers
@pytest.fixture(scope="module", params=["h11", "httptools"])
def real_server(request, engine):
    """The service under uvicorn on a free 127.0.0.1 port, with an 8 KiB head cap."""
    import uvicorn

    from wsdhash.service.protocols import uvicorn_config

    app = create_app(engine, Limits(max_header_bytes=8192))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    config = uvicorn_config(
        app, request.param, 8192, loop="asyncio", log_level="warning", access_log=False
    )
    service = uvicorn.Server(config)
    thread = threading.Thread(target=service.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not service.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield request.param, listener.getsockname()[1]
    finally:
        service.should_exit = True
        thread.join(WAIT_S)
        listener.close()


def _exchange(port: int, data: bytes) -> bytes:
    """Sends raw bytes (the last request says Connection: close), returns everything
    the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as connection:
        try:
            connection.sendall(data)
        except OSError:  # the server closed first (it still answered)
            pass
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


def _get(path: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_head_over_the_cap_is_a_431_with_either_parser(real_server, query_image):
    http, port = real_server
    answer = _exchange(port, _get("/healthz", "X-Big: " + "a" * 64_000, "Connection: close"))
    assert answer.startswith(b"HTTP/1.1 431 "), (http, answer[:200])
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["limit"] == "max_header_bytes"
    answer = _exchange(port, _get("/healthz", "X-Fits: " + "a" * 6000, "Connection: close"))
    assert answer.startswith(b"HTTP/1.1 200 "), (http, answer[:200])
    # Kept alive: every request's head counts afresh, and a body is not a head.
    body = _png((90, 90), seed=4)  # about 24 KB, three times the cap
    upload = (
        f"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    many = (
        _get("/healthz", "X-Pad: " + "a" * 3000) * 5
        + upload
        + _get("/healthz", "Connection: close")
    )
    answer = _exchange(port, many)
    assert answer.count(b"HTTP/1.1 200 ") == 7, (http, answer.count(b"HTTP/1.1 "))


def test_metrics_label_only_known_methods(real_server):
    http, port = real_server
    for number in range(30):
        _exchange(port, _get("/healthz", "Connection: close", method=f"M{number}X"))
    _exchange(port, _get("/healthz", "Connection: close", method="DELETE"))
    answer = _exchange(port, _get("/metrics", "Connection: close"))
    text = answer.split(b"\r\n\r\n", 1)[1].decode()
    assert "M1X" not in text and "M29X" not in text, http
    methods = {
        line.split('method="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("wsdhash_http_requests_total{")
    }
    assert methods <= {"GET", "POST", "DELETE", "other"} and "DELETE" in methods, methods
    if http == "h11":  # httptools refuses unknown methods before the application
        assert 'method="other"' in text


# ---------------------------------------------------------------- 12. headers that lie
def _jpeg_claiming(width: int, height: int) -> bytes:
    """A 64 x 64 JPEG whose frame header claims width x height."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 64, 3), np.uint8)).save(
        buffer, "JPEG", quality=90
    )
    data, position = bytearray(buffer.getvalue()), 2
    while data[position + 1] not in (0xC0, 0xC1, 0xC2):
        position += 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
    data[position + 5 : position + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def lying_images() -> dict[str, bytes]:
    jpeg = _jpeg_claiming(64, 64)
    return {
        "claims 7000 x 7000.jpg": _jpeg_claiming(7000, 7000),
        "png magic, jpeg body.png": b"\x89PNG\r\n\x1a\n" + jpeg,
    }


def test_images_whose_headers_lie_are_corrupt_not_valid_or_too_large(engine, query_image):
    client = TestClient(create_app(engine))
    for name, data in lying_images().items():
        response = client.post("/search", files={"image": (name, data)})
        body = _error(response, 400)
        assert "corrupt or truncated" in body["error"] and name in body["error"], body
    # An honest large JPEG of one flat colour (a few bytes per block) is searched.
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 2000), (90, 120, 200)).save(buffer, "JPEG", optimize=True)
    assert (
        client.post("/search", files={"image": ("flat.jpg", buffer.getvalue())}).status_code == 200
    )


def test_the_pool_refuses_past_its_queue_and_never_grows():
    from wsdhash.service import workers

    gate, dropped = threading.Event(), []
    pool = workers.WorkerPool(1, 2, on_drop=dropped.append)

    async def scenario():
        loop = asyncio.get_running_loop()

        def submit(function):
            return pool.submit(function, (), time.monotonic() + WAIT_S, loop, loop.create_future())

        jobs = [submit(lambda job: gate.wait(WAIT_S))]
        await _until(lambda: pool.busy == 1)  # the one worker took it
        jobs += [submit(lambda job: gate.wait(WAIT_S)) for _ in range(2)]
        assert pool.queued == 2
        with pytest.raises(workers.Overloaded) as refused:
            submit(lambda job: None)
        assert 1 <= refused.value.retry_after_s <= 60 and refused.value.queued == 2
        pool.withdraw(jobs[2])  # a request that gave up: out of the queue at once
        assert pool.queued == 1 and dropped == ["cancelled"]
        gate.set()
        await _until(lambda: pool.busy == 0 and pool.queued == 0)

    asyncio.run(scenario())
    assert pool.threads == 1
    pool.close()
