"""The service's outermost ASGI middleware (`RequestGuard`): what is checked before a
request reaches its route, and what is counted after every answer.

- The request body limit for the body's kind (errors.Limits.body_limit): from
  Content-Length at once, then counted while the body streams in (reading stops at
  the limit: 413).
- For POST /search, load shedding: every search admitted holds a worker or a queue
  place from its arrival to its answer, so past `workers + max_queue` searches in
  flight, or `max_uploads` bodies being read, the request is a 503 with Retry-After at
  once, before its body is read.
- Every answer's count and latency by route template and method (metrics.py).
- The catch-all: an unexpected exception is logged and answered as a 500 JSON body
  without details.
"""

from __future__ import annotations

import logging
import time

from fastapi.responses import JSONResponse

from wsdhash.service import workers
from wsdhash.service.errors import (
    Limits,
    ServiceError,
    input_error,
    limit_error,
    overloaded_error,
)
from wsdhash.service.metrics import Metrics

logger = logging.getLogger("wsdhash.serve")

_LENGTH_DIGITS = 18  # a longer Content-Length is over every limit (and int() may refuse it)
INTERNAL_ERROR = {"error": "internal error: the service's log has the details."}


def content_kind(headers: dict) -> str:
    """The media type of a request's raw ASGI headers, lower case, without parameters."""
    value = headers.get(b"content-type", b"").decode("latin-1")
    return value.split(";")[0].strip().lower()


class _Held:
    """What one request holds of the guard's counts: an admitted search, a body being read."""

    __slots__ = ("searching", "uploading")

    def __init__(self):
        self.searching = self.uploading = False


class RequestGuard:
    """ASGI middleware (module doc); `uploads` and `searches` are the counts in flight."""

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

    def _length_error(self, length: bytes | None, kind: str, limit: int) -> ServiceError | None:
        """The refusal a Content-Length earns before any byte is read, if any."""
        if length is None:
            return None
        length = length.strip()
        if not length.isdigit():
            return input_error("request", f"Content-Length {length[:40]!r} is no number.")
        if len(length) > _LENGTH_DIGITS or int(length) > limit:
            size = int(length) if len(length) <= _LENGTH_DIGITS else None
            return self._too_large(kind, size)
        return None

    def _admit(self, held: _Held) -> ServiceError | None:
        """Takes a search place, then an upload slot; the 503 when either is full."""
        # Where the process itself is the bottleneck (its event loop, on a busy
        # machine), the excess is refused here at once rather than waiting in front
        # of the pool's queue.
        if self.searches >= self.limits.workers + self.limits.max_queue:
            return overloaded_error(
                "max_queue",
                f"{self.searches} searches in flight for {self.limits.workers} workers",
                self.limits.max_queue,
                self.pool.retry_after_s(),
            )
        self.searches += 1
        held.searching = True
        if self.uploads >= self.limits.max_uploads:
            return overloaded_error(
                "max_uploads",
                f"{self.uploads} request bodies are being read",
                self.limits.max_uploads,
                1,
            )
        self.uploads += 1
        held.uploading = True
        return None

    def _release(self, held: _Held) -> None:
        if held.uploading:
            self.uploads -= 1
        if held.searching:
            self.searches -= 1

    def _limited(self, receive, kind: str, limit: int, held: _Held):
        """`receive` that counts the body's bytes (413 past `limit`) and frees the
        upload slot once the whole body is in."""
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise self._too_large(kind)
                if held.uploading and not message.get("more_body", False):
                    held.uploading = False  # the whole body is in: the slot is free
                    self.uploads -= 1
            return message

        return limited_receive

    async def _refuse(self, error: ServiceError, scope, receive, send) -> None:
        self.metrics.count_refusal(error)
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

        held = _Held()
        try:
            headers = dict(scope["headers"])
            kind = content_kind(headers)
            upload = scope["method"] == "POST" and scope["path"] == "/search"
            limit = self.limits.body_limit(kind if upload else "other")
            error = self._length_error(headers.get(b"content-length"), kind, limit)
            if error is None and upload:
                error = self._admit(held)
            if error is not None:
                await self._refuse(error, scope, receive, tracked_send)
                return
            await self.app(scope, self._limited(receive, kind, limit, held), tracked_send)
        except Exception:  # the catch-all: logged, a plain 500 answer
            logger.exception("%s %s failed", scope["method"], scope.get("path"))
            if status[0] is None:
                await JSONResponse(INTERNAL_ERROR, 500)(scope, receive, tracked_send)
        finally:
            self._release(held)
            route_path = getattr(scope.get("route"), "path", None)
            self.metrics.count_answer(
                route_path, scope["method"], status[0], time.perf_counter() - started
            )
