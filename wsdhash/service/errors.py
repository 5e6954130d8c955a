"""The service's request limits and the errors it answers with (JSON: 4xx, or 503 when
it is busy, with `Retry-After`; anything unexpected is a logged 500 without details).

Every error body is `{"error": MESSAGE, ...}` (the TensorFlow Serving REST layout);
a violated limit adds `"limit": NAME` (the `Limits` field, which is also the
`wsdhash.serve` flag that raises it), `"value"` and `"maximum"`; a bad input adds
`"input"`: which upload or instance it is ("instances[2]", "image 'cat.gif'").
"""

from __future__ import annotations

import dataclasses

# Defaults: a phone photo is 3-12 MB and 12-50 MP; a page of results is 10-50 items.
DEFAULT_MAX_UPLOAD_BYTES = 20 * 2**20
DEFAULT_MAX_PIXELS = 50_000_000


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask for.

    Attributes:
        max_upload_bytes: bytes of one image (after base64 decoding). A request body
            may hold `max_batch` of them (4/3 more as base64) plus 64 KiB.
        max_pixels: width x height of one image, read from its header before any
            decoding (the model has its own, `export --max_pixels`; both answer 413).
        max_k: neighbours per query.
        max_batch: images per request (they run as one model call).
        request_timeout_s: seconds a search may take, model and index together, from
            the moment it is queued.
        workers: searches that run at once (threads, one model call each).
        max_queue: searches that may wait for a worker; one more is a 503.
        max_uploads: requests whose bodies are read at once; one more is a 503.
        max_header_bytes: bytes of a request's line and headers (431 past them).

    Every value must lie within `BOUNDS` (the error names the `wsdhash.serve` flag).
    """

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_k: int = 100
    max_batch: int = 16
    request_timeout_s: float = 30.0
    workers: int = 2
    max_queue: int = 16
    max_uploads: int = 16
    max_header_bytes: int = 65536

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            low, high = BOUNDS[field.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"--{field.name} must be a number; got {value!r}.")
            if not low <= value <= high:  # NaN fails both
                raise ValueError(f"--{field.name} must be {low}..{high}; got {value}.")

    def body_limit(self, kind: str) -> int:
        """Most bytes a request body of Content-Type `kind` may hold: one image for its
        raw bytes, `max_batch` images as base64 in JSON or as multipart files, a little
        for anything else (refused as 415 anyway)."""
        if kind == "application/json":
            return (self.max_upload_bytes * 4 // 3 + 4 + 64) * self.max_batch + 65536
        if kind == "multipart/form-data":
            return (self.max_upload_bytes + 1024) * self.max_batch + 65536
        if kind in ("", "application/octet-stream") or kind.startswith("image/"):
            return self.max_upload_bytes
        return 65536


# Each Limits field's bounds, inclusive (an upper bound keeps a typo from taking the host).
BOUNDS = {
    "max_upload_bytes": (1, 2**31),
    "max_pixels": (1, 2**31),
    "max_k": (1, 100_000),
    "max_batch": (1, 1024),
    "request_timeout_s": (0.001, 86_400),
    "workers": (1, 256),
    "max_queue": (1, 100_000),
    "max_uploads": (1, 100_000),
    "max_header_bytes": (1024, 2**24),
}


class ServiceError(Exception):
    """An answer other than 200: `status` and the JSON body's fields."""

    def __init__(self, status: int, message: str, headers: dict | None = None, **fields):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers  # response headers (Retry-After), not in the body
        self.fields = fields

    def body(self) -> dict:
        return {"error": self.message, **self.fields}


def limit_error(
    limit: str, message: str, value=None, maximum=None, status: int = 413, headers=None
):
    """A violated limit (413 for sizes and counts, 400 for k, 408 for the timeout, 503
    for a full queue, with `Retry-After` in `headers`)."""
    fields = {"limit": limit}
    if value is not None:
        fields["value"] = value
    if maximum is not None:
        fields["maximum"] = maximum
    return ServiceError(status, message, headers=headers, **fields)


def overloaded_error(limit: str, what: str, maximum: int, retry_after_s: int):
    """503: the service is at its `limit` (max_queue, max_uploads); try again later."""
    return limit_error(
        limit,
        f"the service is busy: {what} (at {limit}={maximum}); retry in {retry_after_s} s.",
        maximum=maximum,
        status=503,
        headers={"Retry-After": str(retry_after_s)},
    )


def input_error(what: str, message: str, status: int = 400):
    """A bad upload or instance (`what` names it): 400, or 415 for an unsupported format."""
    return ServiceError(status, f"{what}: {message}", input=what)
