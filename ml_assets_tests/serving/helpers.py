"""Publishing test models and talking to a served app (shared by the serving tests)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

from ml_assets.ml.models import FeatureColumns, load_model, save_model
from ml_assets.serving import ModelRegistry, create_app
from ml_assets.serving.threaded import running_in_thread
from ml_assets.storage.model_store import ModelStore

NAME = "flights"
TOL = 1e-6


def publish(store: ModelStore, model, tmp_path: Path, *, promote: bool = True) -> int:
    directory = tmp_path / f"artifact-{uuid.uuid4().hex}"
    save_model(model, directory)
    columns = model.columns
    manifest = {
        "flavor": model.flavor,
        "columns": {"numeric": list(columns.numeric), "categorical": list(columns.categorical)},
    }
    version = store.publish(NAME, directory, manifest).version
    if promote:
        promote_to(store, version)
    return version


def promote_to(store: ModelStore, version: int) -> None:
    store.promote(NAME, version, expected=store.champion(NAME).version, reason="test")


@contextlib.contextmanager
def serving(store: ModelStore, **kw) -> Iterator[tuple[httpx.Client, ModelRegistry]]:
    """The app in a real uvicorn server (background thread, free loopback port)."""
    registry = ModelRegistry(store, NAME)
    with (
        running_in_thread(create_app(registry, **kw)) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield client, registry


def predict(client: httpx.Client, instances: list[dict], path: str = f"/v1/models/{NAME}:predict"):
    response = client.post(path, json={"instances": instances})
    assert response.status_code == 200, response.text
    return np.array(response.json()["predictions"])


def batch_scores(store: ModelStore, version: int, instances: list[dict]) -> np.ndarray:
    """Batch scoring of the same rows: the artifact loaded as the store holds it."""
    manifest = store.get(NAME, version).manifest
    columns = FeatureColumns(**manifest["columns"])
    model = load_model(store.fetch(NAME, version), manifest["flavor"], columns)
    return model.predict_proba(instances)


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)
