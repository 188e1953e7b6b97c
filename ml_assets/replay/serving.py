"""The replay's model server checks: wait for a deployed version to answer, probe it against batch scoring."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


class ReplayError(Exception):
    """The replay cannot start or go on; the message names the thing and the problem."""


def wait_until_served(url: str, version: int, since: float, timeout: float = 60.0) -> float:
    """Seconds from `since` (perf_counter) until the server at `url` has `version` AVAILABLE."""
    from ml_assets.defs.assets.training import MODEL_NAME

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v1/models/{MODEL_NAME}", timeout=10) as response:
                status = json.loads(response.read())["model_version_status"]
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # 404: no version loaded yet
                raise
            status = []
        if any(int(s["version"]) == version and s["state"] == "AVAILABLE" for s in status):
            return time.perf_counter() - since
        time.sleep(0.05)
    raise RuntimeError(f"the server did not pick up v{version} within {timeout:.0f} s")


def probe_serving(instance, blob_store, rows: int = 50) -> dict:
    """Serve the champion over HTTP, predict sample holdout rows, compare with batch scoring."""
    import dagster as dg

    from ml_assets.defs.assets.training import MODEL_NAME
    from ml_assets.ml.models import FeatureColumns, load_model
    from ml_assets.serving.app import create_app
    from ml_assets.serving.registry import ModelRegistry
    from ml_assets.serving.threaded import running_in_thread

    store = blob_store.models()
    champion = store.champion(MODEL_NAME).version
    if champion is None:
        raise ReplayError("no champion to serve: every training cycle was rejected")
    evaluated = instance.get_latest_materialization_event(dg.AssetKey("candidate_model"))
    document = evaluated.asset_materialization.metadata["evaluation_blob"].value
    records = blob_store.get_json(document)["sample_records"][:rows]
    manifest = store.get(MODEL_NAME, champion).manifest
    batch = load_model(store.fetch(MODEL_NAME, champion), manifest["flavor"],
                       FeatureColumns(**manifest["columns"])).predict_proba(records)
    with running_in_thread(create_app(ModelRegistry(store, MODEL_NAME))) as url:
        latencies = []
        served = []
        for record in records:
            started = time.perf_counter()
            served += _post_json(f"{url}/v1/models/{MODEL_NAME}:predict", {"instances": [record]})["predictions"]
            latencies.append((time.perf_counter() - started) * 1000)
    return {"url": url, "version": champion, "rows": len(records),
            "max_abs_diff": float(max(abs(a - b) for a, b in zip(served, batch, strict=True))),
            "p50_ms": sorted(latencies)[len(latencies) // 2]}


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())
