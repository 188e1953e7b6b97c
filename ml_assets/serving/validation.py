"""Infra validation: does a model version load in the serving app and answer real requests in time?

Like TFX's InfraValidator, but without a container: the version is served by the same app and
the same uvicorn server that `ml-assets serve` runs (in a thread, on a free loopback port), and
sample rows are sent over real HTTP, one row per request, on one keep-alive connection - so the
latency is what a client of the server sees, HTTP parsing and the socket included.
"""

from __future__ import annotations

import json
import time

import numpy as np

from ml_assets.ml.gate import InfraResult
from ml_assets.serving.registry import ModelRegistry
from ml_assets.storage.model_store import ModelStore

#: Seconds one request may take (the first one loads the version) before it counts as failed;
#: generous because a Keras version loads in seconds on a busy machine, and a hung server must
#: still end the gate with a reason instead of blocking it.
REQUEST_TIMEOUT_S = 120.0
_HEADERS = {"content-type": "application/json"}


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _body(records: list[dict]) -> bytes:
    """The predict body, encoded as httpx's `json=` does (NaN/inf are not JSON: ValueError)."""
    return json.dumps({"instances": records}, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode()


class _VersionRegistry(ModelRegistry):
    """Loads only the versions asked for. The app's start-up `refresh()` would also load the
    champion: a model load per gate that says nothing about the version under validation."""

    def refresh(self) -> bool:
        return False


def validate_serving(store: ModelStore, name: str, version: int, records: list[dict]) -> InfraResult:
    """Serve `version` over loopback HTTP and send each of `records` as a one-row predict request.

    Never raises: a version that fails to verify or load, or a server that fails to start,
    gives `loaded=False` with the reason. The server is stopped before this returns.
    """
    import httpx

    from ml_assets.serving.app import create_app
    from ml_assets.serving.threaded import running_in_thread

    def not_loaded(size_mb: float, error: str) -> InfraResult:
        return InfraResult(loaded=False, answered=0, requested=len(records), p95_latency_ms=None,
                           size_mb=size_mb, error=error)

    try:
        manifest = store.get(name, version).manifest
        size_mb = sum(f["size"] for f in manifest["files"].values()) / 1e6
        store.fetch(name, version)  # verifies every file against the manifest
    except Exception as exc:  # anything that stops loading fails the gate, with the reason
        return not_loaded(0.0, _reason(exc))
    path = f"/v1/models/{name}/versions/{version}:predict"
    try:
        app = create_app(_VersionRegistry(store, name), poll_interval=3600.0)
        # trust_env=False: an HTTP(S)_PROXY in the environment must not route loopback traffic.
        with (running_in_thread(app) as url,
              httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S, trust_env=False) as client):
            warm = client.post(path, content=_body(records[:1]), headers=_HEADERS)
            if warm.status_code != 200:
                return not_loaded(size_mb, f"HTTP {warm.status_code}: {warm.text[:300]}")
            return _send_each(client, path, records, size_mb)
    except Exception as exc:  # the server did not start, or the warm-up request never got an answer
        return not_loaded(size_mb, _reason(exc))


def _send_each(client, path: str, records: list[dict], size_mb: float) -> InfraResult:
    """One request per record; the first failure is kept, later ones only counted. A request that
    times out or loses the connection ends the loop (the rest count as unanswered), so a hung server
    costs one REQUEST_TIMEOUT_S, not one per row."""
    import httpx

    latencies, answered, error = [], 0, None
    for record in records:
        try:
            body = _body([record])
            started = time.perf_counter()
            response = client.post(path, content=body, headers=_HEADERS)
            latencies.append((time.perf_counter() - started) * 1000)
            ok = response.status_code == 200 and len(response.json().get("predictions", [])) == 1
            failure = None if ok else f"HTTP {response.status_code}: {response.text[:300]}"
        except httpx.TransportError as exc:  # timed out or connection gone: the rest would wait too
            error = error or _reason(exc)
            break
        except (httpx.HTTPError, ValueError) as exc:  # a 200 that is not JSON, a NaN in a row
            failure = _reason(exc)
        if failure is None:
            answered += 1
        elif error is None:
            error = failure
    return InfraResult(loaded=True, answered=answered, requested=len(records),
                       p95_latency_ms=float(np.percentile(latencies, 95)) if latencies else None,
                       size_mb=size_mb, error=error)
