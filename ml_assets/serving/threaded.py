"""Run an ASGI app with uvicorn in a background thread on a free loopback port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


@contextlib.contextmanager
def running_in_thread(app, host: str = "127.0.0.1", start_timeout: float = 120.0) -> Iterator[str]:
    """Serve `app` until the block exits; yields its base URL.

    The listening socket is bound before uvicorn starts and handed to it, so no other process
    can take the port in between.
    """
    import uvicorn

    # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on accepted sockets whose
    # proto says TCP, and without it every response (headers and body are two writes) waits ~40 ms
    # for the client's delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    from ml_assets.serving.app import uvicorn_protocol

    config = uvicorn.Config(app, host=host, port=port, loop="asyncio", http=uvicorn_protocol(app),
                            access_log=False, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the server thread on {host}:{port} died while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server on {host}:{port} did not start in {start_timeout:.0f} s")
            time.sleep(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
