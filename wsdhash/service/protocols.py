"""uvicorn with a cap on a request's head (request line and headers), for both parsers.

h11 has a cap of its own (`h11_max_incomplete_event_size`, 16 KiB unless set), but
httptools has none: llhttp accumulates a header of any size (a 64 MiB header was
answered 200). Both protocol classes here count the bytes of a request's head as they
arrive and, past `max_header_bytes`, answer 431 with a JSON body naming the limit,
stop reading and close the connection; the bytes of a body are not counted. The
count starts after the previous request's head (a kept-alive connection starts afresh
for every request).
"""

from __future__ import annotations

import json

_LINGER_S = 1.0  # after a 431, read (and drop) what the client still sends, then close


def _refusal(limit: int) -> bytes:
    body = json.dumps(
        {
            "error": f"request line and headers over max_header_bytes={limit} bytes.",
            "limit": "max_header_bytes",
            "maximum": limit,
        }
    ).encode()
    return (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


class _HeadLimit:
    """Mixin over a uvicorn HTTP protocol class (which sets `self.cycle` when a head is
    parsed and `cycle.more_body = False` when its body has arrived)."""

    max_header_bytes = 65536
    _head_bytes = 0
    _counted_cycle = None
    _refused = False

    def _reading_head(self) -> bool:
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: the 431 is sent, the rest is dropped
        if self.cycle is not self._counted_cycle:  # a head was parsed: count afresh
            self._counted_cycle, self._head_bytes = self.cycle, 0
        if not self._reading_head():
            super().data_received(data)
            return
        room = self.max_header_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        cycle = self.cycle
        if room > 0:
            self._head_bytes += room
            super().data_received(data[:room])
        if self.transport.is_closing():
            return  # the parser refused the request already
        if self.cycle is not cycle or not self._reading_head():
            self.data_received(data[room:])  # the head ended within the limit
            return
        self._refuse()

    def _refuse(self) -> None:
        self._refused = True
        self.transport.write(_refusal(self.max_header_bytes))
        try:
            self.transport.write_eof()  # the answer, then a FIN: the client can read it
        except (NotImplementedError, RuntimeError, OSError):
            self.transport.close()
            return
        self.loop.call_later(_LINGER_S, self.transport.close)


def protocol_class(http: str, max_header_bytes: int):
    """uvicorn's protocol class for `http` ("h11" or "httptools") with the head cap."""
    if http == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base

        def reading_head(self) -> bool:
            return self.cycle is None or not self.cycle.more_body

    elif http == "h11":
        import h11
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

        def reading_head(self) -> bool:
            return self.conn.their_state is h11.IDLE

    else:
        raise ValueError(f"http must be h11 or httptools; got {http!r}.")
    return type(
        f"Capped{base.__name__}",
        (_HeadLimit, base),
        {"max_header_bytes": max_header_bytes, "_reading_head": reading_head},
    )


def uvicorn_config(app, http: str, max_header_bytes: int, **options):
    """A `uvicorn.Config` serving `app` with the head cap on the `http` parser."""
    import uvicorn

    return uvicorn.Config(
        app,
        http=protocol_class(http, max_header_bytes),
        h11_max_incomplete_event_size=max_header_bytes,
        **options,
    )
