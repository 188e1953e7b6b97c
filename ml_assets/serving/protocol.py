"""uvicorn's HTTP protocol with a deadline on request headers and a lingering close.

uvicorn arms no timer on a new connection, nor while a request's headers are arriving (its
keep-alive timeout only runs between requests), so a client that connects and then sends
nothing, or half its headers, holds the connection for ever; the ASGI app never sees it. This
subclass closes such a connection after `ServingLimits.header_timeout_s` (answering 408 when
part of a request arrived). Bodies have their own deadline in the app (`body_timeout_s`).

Lingering close. When the server ends a connection while the client may still be sending (a 408
for a dripping body, a 413 for a body over the limit, headers too slow), closing the socket with
unread bytes makes the kernel send a reset instead of an orderly end, and a reset can discard the
answer before the client reads it. As nginx and Apache do (`lingering_close`), the connection is
half-closed instead: the answer goes out followed by the end of the stream, what the client still
sends is read and dropped, and the socket is closed when the client closes its side, after
`LINGER_IDLE_S` without a byte from it, or `LINGER_MAX_S` after the answer at the latest.

It hooks the httptools parser callbacks (`on_message_begin`, `on_headers_complete`) of
uvicorn's `HttpToolsProtocol`; the serving tests drive it over raw sockets.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Seconds without a byte from the client before a half-closed connection is closed, and at most
# after the answer whatever the client does (a client dripping for ever is still cut off).
LINGER_IDLE_S = 2.0
LINGER_MAX_S = 10.0


class LingeringTransport:
    """The connection's transport as uvicorn sees it: `close()` half-closes and lingers.

    Everything else is the real transport's. Once lingering, `is_closing()` is true and writes are
    dropped, so uvicorn behaves as after a close; the protocol drops incoming data (`drop`).
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop,
                 idle_s: float = LINGER_IDLE_S, max_s: float = LINGER_MAX_S) -> None:
        self._transport = transport
        self._loop = loop
        self._idle_s = idle_s
        self._max_s = max_s
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self.lingering = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.lingering:
            self._transport.write(data)

    def close(self) -> None:
        if self.lingering or self._transport.is_closing():
            return
        if not self._transport.can_write_eof():  # TLS: no half-close
            self._transport.close()
            return
        self.lingering = True
        self._transport.write_eof()  # the end of the stream goes out after the answer
        self._transport.resume_reading()  # uvicorn may have paused reads (flow control)
        self._deadline = self._loop.time() + self._max_s
        self._arm()

    def close_now(self) -> None:
        """Close without lingering: for an idle connection (nothing of a request can be in flight)."""
        self.cancel()
        self._transport.close()

    def drop(self) -> None:
        """The client sent more while lingering: dropped; the idle time starts again."""
        self._arm()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self.cancel()
        wait = min(self._idle_s, self._deadline - self._loop.time())
        self._timer = self._loop.call_later(max(wait, 0.0), self._transport.close)


class LingeringCloseProtocol(HttpToolsProtocol):
    """httptools' protocol whose server-side closes linger (see the module's docstring)."""

    _lingering: LingeringTransport

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._lingering = LingeringTransport(transport, self.loop)
        super().connection_made(self._lingering)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self._lingering.lingering:
            self._lingering.drop()
            return
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lingering.cancel()
        super().connection_lost(exc)

    # Idle connections (keep-alive expired, server shutting down between requests) close at once:
    # no request is in flight, so there is nothing to linger for, and a shutdown does not wait.
    def timeout_keep_alive_handler(self) -> None:
        self._lingering.close_now()

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self._lingering.close_now()
        else:
            super().shutdown()


def header_timeout_protocol(seconds: float) -> type[asyncio.Protocol]:
    """A uvicorn `http=` protocol class closing connections whose headers take over `seconds`
    (0: no header deadline); every server-side close lingers."""
    if not seconds > 0:
        return LingeringCloseProtocol
    body = json.dumps(
        {"error": f"request headers not received within {seconds:g} s (header_timeout_s)"}
    ).encode()
    answer = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    ) + body

    class HeaderTimeoutProtocol(LingeringCloseProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _in_request = False

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            if self._in_request:  # part of a request arrived: say why it is refused
                self.transport.write(answer)
            self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # a connection that never sends a byte is closed too

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_request = True
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            self._in_request = False
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


__all__ = ["LINGER_IDLE_S", "LINGER_MAX_S", "LingeringCloseProtocol", "header_timeout_protocol"]
