"""Infra validation over real loopback HTTP: what it counts, what it refuses, and that the
server it starts is always stopped (port closed, server thread gone)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import socket
import threading
import uuid

import pytest

from ml_assets.ml.models import save_model
from ml_assets.serving import threaded
from ml_assets.serving.validation import validate_serving
from ml_assets_tests.serving.helpers import NAME, publish
from ml_assets_tests.storage.tamper import rot


@pytest.fixture
def served(monkeypatch) -> list[str]:
    """The base URLs of the servers validate_serving starts (through the real running_in_thread)."""
    urls: list[str] = []
    real = threaded.running_in_thread

    @contextlib.contextmanager
    def recording(app, **kw):
        with real(app, **kw) as url:
            urls.append(url)
            yield url

    monkeypatch.setattr(threaded, "running_in_thread", recording)
    return urls


def assert_stopped(port: int, threads_before: set[threading.Thread]) -> None:
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 5):
        pass
    left = [t.name for t in threading.enumerate() if t not in threads_before and t.name.endswith("(run)")]
    assert left == [], f"uvicorn server threads still alive: {left}"


def test_each_row_is_one_request_and_the_first_error_is_kept(store, sklearn_models, rows, tmp_path, served):
    version = publish(store, sklearn_models[0], tmp_path, promote=False)
    records = [dict(row) for row in rows[:6]]
    records[2]["distance"] = 2**1024  # beyond float64: the server answers 400 naming the feature
    del records[4]["carrier"]  # a missing feature: another 400, counted but not kept
    before = set(threading.enumerate())

    result = validate_serving(store, NAME, version, records)

    assert (result.loaded, result.answered, result.requested) == (True, 4, 6)
    assert result.error.startswith("HTTP 400: ") and "'distance'" in result.error
    assert "carrier" not in result.error
    assert result.p95_latency_ms is not None and result.p95_latency_ms > 0
    manifest = store.get(NAME, version).manifest
    assert result.size_mb == sum(f["size"] for f in manifest["files"].values()) / 1e6
    (url,) = served
    assert_stopped(int(url.rsplit(":", 1)[1]), before)


def test_a_tampered_file_fails_to_load_naming_it(store, sklearn_models, rows, tmp_path, served):
    version = publish(store, sklearn_models[0], tmp_path, promote=False)
    key = f"models/{NAME}/{version}/model.skops"
    rot(store.blobs, key, store.blobs.info(key).size // 2)

    result = validate_serving(store, NAME, version, rows[:3])

    assert (result.loaded, result.answered, result.requested, result.p95_latency_ms) == (False, 0, 3, None)
    assert "ModelIntegrityError" in result.error and "model.skops" in result.error
    assert served == []  # refused before any server was started


def test_a_version_the_server_cannot_load_is_not_loaded(store, sklearn_models, rows, tmp_path, served):
    """Verified files, a flavor no loader knows: the server's own load fails (503, with why)."""
    model = sklearn_models[0]
    directory = tmp_path / f"artifact-{uuid.uuid4().hex}"
    save_model(model, directory)
    columns = {"numeric": list(model.columns.numeric), "categorical": list(model.columns.categorical)}
    version = store.publish(NAME, directory, {"flavor": "onnx", "columns": columns}).version
    before = set(threading.enumerate())

    result = validate_serving(store, NAME, version, rows[:3])

    assert (result.loaded, result.answered, result.requested) == (False, 0, 3)
    assert result.error.startswith("HTTP 503: ") and f"version {version}" in result.error
    assert "unknown model flavor 'onnx'" in result.error
    assert result.size_mb > 0
    (url,) = served
    assert_stopped(int(url.rsplit(":", 1)[1]), before)


def test_a_server_that_does_not_start_is_not_loaded_and_is_stopped(
    store, sklearn_models, rows, tmp_path, monkeypatch
):
    import uvicorn

    version = publish(store, sklearn_models[0], tmp_path, promote=False)
    # The real server, slowed so that it cannot start within the timeout (a fast machine could
    # otherwise start it before the first check): running_in_thread gives up and must stop it.
    real_startup = uvicorn.Server.startup

    async def slow_startup(self, sockets=None):
        await asyncio.sleep(1.0)
        await real_startup(self, sockets=sockets)

    monkeypatch.setattr(uvicorn.Server, "startup", slow_startup)
    monkeypatch.setattr(threaded, "running_in_thread",
                        functools.partial(threaded.running_in_thread, start_timeout=0.2))
    before = set(threading.enumerate())

    result = validate_serving(store, NAME, version, rows[:3])

    assert (result.loaded, result.answered, result.requested, result.p95_latency_ms) == (False, 0, 3, None)
    match = re.fullmatch(r"RuntimeError: the server on 127\.0\.0\.1:(\d+) did not start in 0 s", result.error)
    assert match, result.error
    assert_stopped(int(match[1]), before)


def test_a_server_that_stops_answering_ends_the_run_with_the_timeout(
    store, sklearn_models, rows, tmp_path, served, monkeypatch
):
    """The 4th request's predict stalls past the client timeout: that request's error is kept
    and no further request is sent (each would wait the full timeout)."""
    from ml_assets.serving import registry, validation

    version = publish(store, sklearn_models[0], tmp_path, promote=False)
    monkeypatch.setattr(validation, "REQUEST_TIMEOUT_S", 2.0)
    real_predict = registry.LoadedModel.predict
    calls = []

    def stalling_predict(self, records):
        calls.append(len(records))
        if len(calls) == 4:  # warm-up, two sample rows, then a stall
            threading.Event().wait(3.0)  # > REQUEST_TIMEOUT_S: the answer comes too late
        return real_predict(self, records)

    monkeypatch.setattr(registry.LoadedModel, "predict", stalling_predict)
    before = set(threading.enumerate())

    result = validate_serving(store, NAME, version, rows[:8])

    assert (result.loaded, result.answered, result.requested) == (True, 2, 8)
    assert result.error.startswith("ReadTimeout"), result.error
    assert len(calls) == 4  # nothing sent after the timeout
    (url,) = served
    assert_stopped(int(url.rsplit(":", 1)[1]), before)
