"""The server refuses tampered versions, keeps serving the old one and says why in /v1/models;
after a restart it serves the newest earlier champion that verifies. Local store and Azurite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ml_assets.storage import BlobStore, ModelStore
from ml_assets_tests.serving.helpers import NAME, TOL, predict, promote_to, publish, serving
from ml_assets_tests.storage.tamper import rewrite, rot


@pytest.fixture
def store(blob_store: BlobStore, tmp_path: Path) -> ModelStore:
    return ModelStore(blob_store, tmp_path / "cache")


def statuses(client) -> list[dict]:
    response = client.get(f"/v1/models/{NAME}")
    assert response.status_code == 200, response.text
    return response.json()["model_version_status"]


def refused(entries: list[dict], version: int) -> str:
    """The reason /v1/models gives for `version`, which must be listed as END."""
    (entry,) = [e for e in entries if e["version"] == str(version)]
    assert entry["state"] == "END"
    return entry["status"]["error_message"]


def skops_key(store: ModelStore, version: int) -> tuple[str, int]:
    key = f"models/{NAME}/{version}/model.skops"
    return key, store.blobs.info(key).size // 2


def test_tampered_champion_is_refused_and_the_old_version_keeps_serving(
    store, sklearn_models, rows, tmp_path
):
    first, second = sklearn_models
    v1 = publish(store, first, tmp_path)
    v2 = publish(store, second, tmp_path, promote=False)
    with serving(store, poll_interval=0) as (client, registry):
        before = predict(client, rows[:8])
        promote_to(store, v2)  # verified now; rots before the server loads it
        key, offset = skops_key(store, v2)
        rot(store.blobs, key, offset)
        assert registry.refresh() is False
        assert registry.current.version == v1
        entries = statuses(client)
        assert entries[0]["version"] == str(v1) and entries[0]["state"] == "AVAILABLE"
        why = refused(entries, v2)
        assert "ModelIntegrityError" in why and "model.skops" in why
        np.testing.assert_allclose(predict(client, rows[:8]), before, rtol=0, atol=TOL)

    # A restart with the rotten champion still named: the newest earlier champion serves.
    fresh = ModelStore(store.blobs, tmp_path / "cache-after-restart")
    with serving(fresh, poll_interval=0) as (client, registry):
        assert registry.current.version == v1
        assert client.get("/healthz").json()["ready"] is True
        assert "model.skops" in refused(statuses(client), v2)
        np.testing.assert_allclose(predict(client, rows[:8]), before, rtol=0, atol=TOL)
    assert store.champion(NAME).version == v2  # the server never moves the pointer


def test_an_edited_champion_manifest_is_refused_on_load(store, sklearn_models, rows, tmp_path):
    first, second = sklearn_models
    v1 = publish(store, first, tmp_path)
    v2 = publish(store, second, tmp_path)
    key = f"models/{NAME}/{v2}/manifest.json"
    manifest = json.loads(store.blobs.get(key))
    manifest["metrics"] = {"roc_auc": 0.99}  # files and columns unchanged: loads fine if trusted
    rewrite(store.blobs, key, json.dumps(manifest, indent=2, sort_keys=True).encode())
    with serving(store, poll_interval=0) as (client, registry):
        assert registry.current.version == v1
        assert "changed after it was promoted" in refused(statuses(client), v2)
        predict(client, rows[:2])
