"""The request body, read under `ServingLimits`: a size limit (413) and a deadline (408).

The deadline covers the whole body from the moment the app asks for it, so neither a client that
stops mid-body nor one that drips a byte at a time can hold a connection longer than
`body_timeout_s`. Both errors close the connection (the rest of the body may still come).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ml_assets.serving.inputs import ApiError, ServingLimits


class Disconnected(Exception):
    """The client went away before its request body arrived."""


BODY_READ = "ml_assets.body_read"  # scope key: the request body was read to its end


def declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request announces a body (a non-zero content-length, or chunked)."""
    for name, value in headers:
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def read_body(scope: dict, receive: Callable, limits: ServingLimits) -> bytes:
    """The whole request body within `limits` (413 when too large, 408 when too slow)."""
    timeout = limits.body_timeout_s
    try:
        async with asyncio.timeout(timeout if timeout > 0 else None):
            body = await _receive_all(receive, limits.max_body_bytes)
            scope[BODY_READ] = True
            return body
    except TimeoutError:
        raise ApiError(
            408,
            f"request body not received within {timeout:g} s (body_timeout_s): "
            "send the whole body at once",
            close=True,
        ) from None


async def _receive_all(receive: Callable, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(
                413, f"request body larger than {max_bytes} bytes (max_body_bytes)", close=True
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def drained() -> dict:
    """`receive` once the body was read: an empty end of body."""
    return {"type": "http.request", "body": b"", "more_body": False}


__all__ = ["BODY_READ", "Disconnected", "declares_body", "drained", "read_body"]
