"""Infra validation: does a model version load in the serving app and answer real requests in time?

Like TFX's InfraValidator, but without a container: the version is served by the same Starlette
app that `ml-assets serve` runs, and sample rows are sent one request at a time.
"""

from __future__ import annotations

import time

import numpy as np

from ml_assets.ml.gate import InfraResult
from ml_assets.storage.model_store import ModelStore


def validate_serving(store: ModelStore, name: str, version: int, records: list[dict]) -> InfraResult:
    from starlette.testclient import TestClient

    from ml_assets.serving.app import create_app
    from ml_assets.serving.registry import ModelRegistry

    try:
        manifest = store.get(name, version).manifest
        size_mb = sum(f["size"] for f in manifest["files"].values()) / 1e6
        store.fetch(name, version)  # verifies every file against the manifest
    except Exception as exc:  # anything that stops loading fails the gate, with the reason
        return InfraResult(loaded=False, answered=0, requested=len(records), p95_latency_ms=None,
                           size_mb=0.0, error=f"{type(exc).__name__}: {exc}")
    app = create_app(ModelRegistry(store, name), poll_interval=3600.0)
    latencies, answered, error = [], 0, None
    path = f"/v1/models/{name}/versions/{version}:predict"
    with TestClient(app) as client:
        warm = client.post(path, json={"instances": records[:1]})
        if warm.status_code != 200:
            return InfraResult(loaded=False, answered=0, requested=len(records), p95_latency_ms=None,
                               size_mb=size_mb, error=f"HTTP {warm.status_code}: {warm.text[:300]}")
        for record in records:
            started = time.perf_counter()
            response = client.post(path, json={"instances": [record]})
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code == 200 and len(response.json().get("predictions", [])) == 1:
                answered += 1
            elif error is None:
                error = f"HTTP {response.status_code}: {response.text[:300]}"
    return InfraResult(loaded=True, answered=answered, requested=len(records),
                       p95_latency_ms=float(np.percentile(latencies, 95)) if latencies else None,
                       size_mb=size_mb, error=error)
