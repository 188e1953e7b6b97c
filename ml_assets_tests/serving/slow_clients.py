"""Raw-socket clients that stop or drip mid-request: the server must answer and close them."""

from __future__ import annotations

import select
import socket

import httpx

from ml_assets_tests.serving.helpers import NAME


def _half(path: str = f"/v1/models/{NAME}:predict", content_type: str = "application/json") -> bytes:
    """A request whose headers promise a 100,000-byte body, and the first 15 bytes of it."""
    return (
        f"POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: {content_type}\r\n"
        "content-length: 100000\r\n\r\n"
    ).encode() + b'{"instances": ['


_HALF = _half()


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def half_sent_requests_are_answered_and_closed(host: str, port: int, connections: int = 20) -> None:
    """Connections that stop mid-body, and one that drips a byte at a time, are answered 408
    and closed by the server (the body would need 100,000 bytes; far fewer are ever sent);
    so are half-sent and dripped headers (4,000 bytes of them, one every 50 ms); requests
    refused before their body is read are closed after the answer."""
    sockets = [socket.create_connection((host, port), timeout=120) for _ in range(connections)]
    try:
        for sock in sockets:
            sock.sendall(_HALF)
        for sock in sockets:
            answer = until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
            assert b"connection: close" in answer.lower()
            assert b"body_timeout_s" in answer
    finally:
        for sock in sockets:
            sock.close()
    with socket.create_connection((host, port), timeout=120) as drip:
        drip.sendall(_HALF)
        sent = len(_HALF)
        while not select.select([drip], [], [], 0.05)[0]:
            drip.sendall(b" ")
            sent += 1
            assert sent < 100_000, "the server never answered the dripping body"
        # A dripping client goes on a little before it reads: bytes the server no longer reads,
        # which must not reset the connection (and lose the answer) when it closes.
        drip.sendall(b" " * 64)
        answer = until_closed(drip)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
    # Half-sent headers, dripped headers, and a connection that sends nothing: closed too
    # (uvicorn has no deadline of its own there: serving.protocol adds header_timeout_s).
    with socket.create_connection((host, port), timeout=120) as silent:
        assert until_closed(silent) == b""
    with socket.create_connection((host, port), timeout=120) as partial:
        partial.sendall(_HALF[:40])
        answer = until_closed(partial)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
        assert b"header_timeout_s" in answer
    with socket.create_connection((host, port), timeout=120) as drip:
        headers = _HALF.split(b"\r\n\r\n")[0] + b"\r\nx-padding: " + b"a" * 4000
        sent = 0
        while not select.select([drip], [], [], 0.05)[0]:
            assert sent < len(headers), "the server never answered the dripping headers"
            drip.sendall(headers[sent : sent + 1])
            sent += 1
        assert until_closed(drip).startswith(b"HTTP/1.1 408 ")
    # Requests refused whatever their body (unknown model, not JSON, a bad version, a path
    # outside /v1/models): the body is still read (and dropped) under the deadline, so a
    # half-sent one gets its 408 and the connection is closed.
    for request in [
        _half("/v1/models/other:predict"),
        _half(content_type="text/plain"),
        _half(f"/v1/models/{NAME}/versions/{'9' * 5000}:predict"),
        _half("/healthz"),
        _half("/elsewhere"),
    ]:
        with socket.create_connection((host, port), timeout=120) as sock:
            sock.sendall(request)
            answer = until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), (request[:60], answer[:300])
            assert b"connection: close" in answer.lower()


def refused_requests_keep_their_connection(base_url: str) -> None:
    """A whole request refused before its body was needed is answered on a connection that
    stays open (its body was read and dropped), so the answer is never lost to a reset."""
    body = b'{"instances": [' + b" " * 200_000 + b"]}"
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for path, content_type, status in [
            ("/v1/models/other:predict", "application/json", 404),
            (f"/v1/models/{NAME}:predict", "text/plain", 415),
            ("/healthz", "application/json", 405),
            ("/elsewhere", "application/json", 404),
        ] * 3:
            response = client.post(path, content=body, headers={"content-type": content_type})
            assert response.status_code == status, (path, response.text)
            assert response.headers.get("connection") != "close"
        assert client.get("/healthz").status_code == 200
