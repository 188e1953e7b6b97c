"""Raw-socket clients that stop or drip mid-request: the server must answer and close them."""

from __future__ import annotations

import select
import socket

from ml_assets_tests.serving.helpers import NAME


def _half(path: str = f"/v1/models/{NAME}:predict", content_type: str = "application/json") -> bytes:
    """A request whose headers promise a 100,000-byte body, and the first 15 bytes of it."""
    return (
        f"POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: {content_type}\r\n"
        "content-length: 100000\r\n\r\n"
    ).encode() + b'{"instances": ['


_HALF = _half()


def _until_closed(sock: socket.socket) -> bytes:
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
            answer = _until_closed(sock)
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
        answer = _until_closed(drip)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
    # Half-sent headers, dripped headers, and a connection that sends nothing: closed too
    # (uvicorn has no deadline of its own there: serving.protocol adds header_timeout_s).
    with socket.create_connection((host, port), timeout=120) as silent:
        assert _until_closed(silent) == b""
    with socket.create_connection((host, port), timeout=120) as partial:
        partial.sendall(_HALF[:40])
        answer = _until_closed(partial)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
        assert b"header_timeout_s" in answer
    with socket.create_connection((host, port), timeout=120) as drip:
        headers = _HALF.split(b"\r\n\r\n")[0] + b"\r\nx-padding: " + b"a" * 4000
        sent = 0
        while not select.select([drip], [], [], 0.05)[0]:
            assert sent < len(headers), "the server never answered the dripping headers"
            drip.sendall(headers[sent : sent + 1])
            sent += 1
        assert _until_closed(drip).startswith(b"HTTP/1.1 408 ")
    # Requests answered without reading their body (unknown model, not JSON, a path outside
    # /v1/models): answered at once, then closed rather than kept waiting for the body.
    for request, status in [
        (_half("/v1/models/other:predict"), b"404"),
        (_half(content_type="text/plain"), b"415"),
        (_half(f"/v1/models/{NAME}/versions/{'9' * 5000}:predict"), b"400"),
        (_half("/healthz"), b"405"),
        (_half("/elsewhere"), b"404"),
    ]:
        with socket.create_connection((host, port), timeout=120) as sock:
            sock.sendall(request)
            answer = _until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 " + status + b" "), (request[:60], answer[:300])
            assert b"connection: close" in answer.lower()


