"""The Azure SDK side of the Azure backend: client timeouts, and reading its results and errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceModifiedError
from azure.storage.blob import LinearRetry, StorageStreamDownloader

SHA_KEY = "sha256"  # metadata key holding the sha256 of a blob's content

#: Seconds after which one request to the store, retries included, gives up.
DEFAULT_TIMEOUT_S = 120.0
#: Tries per request: a dropped connection or a 5xx is retried, within the timeout.
REQUEST_ATTEMPTS = 3


def client_timeouts(timeout_s: float) -> dict[str, Any]:
    """SDK settings under which a request, with its retries and their pauses, ends within timeout_s.

    The SDK's defaults (20 s connect, 60 s per read, 4 tries 15-42 s apart) leave a frozen store
    hanging a step for about five minutes. Here a tenth of the budget goes to each of the two
    pauses and the rest is split between the three tries' connect and read timeouts.
    """
    pause = 0.1 * timeout_s
    per_try = (timeout_s - (REQUEST_ATTEMPTS - 1) * pause) / REQUEST_ATTEMPTS
    return {
        "connection_timeout": per_try,
        "read_timeout": per_try,
        "retry_policy": LinearRetry(
            backoff=pause, retry_total=REQUEST_ATTEMPTS - 1, random_jitter_range=0
        ),
    }


def recorded_sha(stream: StorageStreamDownloader) -> str | None:
    return (stream.properties.metadata or {}).get(SHA_KEY)


def timestamp(result: dict[str, Any]) -> float:
    value = result.get("last_modified")
    return value.timestamp() if isinstance(value, datetime) else 0.0


def summary(exc: AzureError) -> str:
    code = getattr(exc, "error_code", None)
    message = (getattr(exc, "message", None) or str(exc)).strip().splitlines()
    first = message[0] if message else type(exc).__name__
    return f"{code}: {first}" if code else first


def container_note(exc: AzureError) -> str:
    return (
        " (the container does not exist)"
        if getattr(exc, "error_code", None) == "ContainerNotFound"
        else ""
    )


def was_modified(exc: BaseException) -> bool:
    return isinstance(exc.__cause__, ResourceModifiedError)
