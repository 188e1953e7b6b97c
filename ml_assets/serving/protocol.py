"""uvicorn's HTTP protocol with a deadline on request headers.

uvicorn arms no timer on a new connection, nor while a request's headers are arriving (its
keep-alive timeout only runs between requests), so a client that connects and then sends
nothing, or half its headers, holds the connection for ever; the ASGI app never sees it. This
subclass closes such a connection after `ServingLimits.header_timeout_s` (answering 408 when
part of a request arrived). Bodies have their own deadline in the app (`body_timeout_s`).

It hooks the httptools parser callbacks (`on_message_begin`, `on_headers_complete`) of
uvicorn's `HttpToolsProtocol`; the serving tests drive it over raw sockets.
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def header_timeout_protocol(seconds: float) -> type[asyncio.Protocol]:
    """A uvicorn `http=` protocol class closing connections whose headers take over `seconds`."""
    if not seconds > 0:
        return HttpToolsProtocol
    body = json.dumps(
        {"error": f"request headers not received within {seconds:g} s (header_timeout_s)"}
    ).encode()
    answer = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    ) + body

    class HeaderTimeoutProtocol(HttpToolsProtocol):
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


__all__ = ["header_timeout_protocol"]
