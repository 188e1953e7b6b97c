"""The threaded uvicorn runner answers like a real server: no Nagle delay on its responses."""

from __future__ import annotations

import socket

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ml_assets.serving.threaded import running_in_thread


def test_accepted_connections_have_tcp_nodelay(monkeypatch):
    """uvicorn writes a response's headers and body separately; without TCP_NODELAY on the
    accepted socket the body waits for the client's delayed ACK (~40 ms per request)."""
    import uvicorn

    servers: list[uvicorn.Server] = []
    real_init = uvicorn.Server.__init__

    def recording_init(self, config):
        real_init(self, config)
        servers.append(self)

    monkeypatch.setattr(uvicorn.Server, "__init__", recording_init)
    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
    with running_in_thread(app) as url, httpx.Client(base_url=url, trust_env=False) as client:
        assert client.get("/").text == "ok"
        (server,) = servers
        (connection,) = server.server_state.connections  # the client's keep-alive connection
        accepted = connection.transport.get_extra_info("socket")
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
