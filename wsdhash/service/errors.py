"""The service's request limits and the errors it answers with (JSON, always 4xx).

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
        request_timeout_s: seconds a search may take, model and index together.
    """

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_k: int = 100
    max_batch: int = 16
    request_timeout_s: float = 30.0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if not getattr(self, field.name) > 0:
                raise ValueError(f"--{field.name} must be > 0; got {getattr(self, field.name)}.")

    @property
    def max_body_bytes(self) -> int:
        return (self.max_upload_bytes * 4 // 3 + 4) * self.max_batch + 65536


class ServiceError(Exception):
    """An answer other than 200: `status` and the JSON body's fields."""

    def __init__(self, status: int, message: str, **fields):
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields

    def body(self) -> dict:
        return {"error": self.message, **self.fields}


def limit_error(limit: str, message: str, value=None, maximum=None, status: int = 413):
    """A violated limit (413 for sizes and counts, 400 for k, 408 for the timeout)."""
    fields = {"limit": limit}
    if value is not None:
        fields["value"] = value
    if maximum is not None:
        fields["maximum"] = maximum
    return ServiceError(status, message, **fields)


def input_error(what: str, message: str, status: int = 400):
    """A bad upload or instance (`what` names it): 400, or 415 for an unsupported format."""
    return ServiceError(status, f"{what}: {message}", input=what)
