"""Property: whatever a request contains, the server answers strict JSON and never a 5xx.

Hypothesis generates hostile requests (`bodies.py`): 2,000 per flavor through the app in
process (Starlette's TestClient: the same ASGI app, no sockets, so the bulk stays fast), then a
few hundred and the half-sent bodies against a real `ml-assets serve` process. Examples are
derandomized (the same requests on every run) and the status counts are printed as one JSON
line (`pytest -s`), the figures for the closing note.
"""

from __future__ import annotations

import collections
import json
import math
import os
import sys
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from ml_assets.ops.processes import free_port, spawn, stop_groups
from ml_assets.serving import ModelRegistry, create_app
from ml_assets_tests.serving.bodies import Request, requests
from ml_assets_tests.serving.helpers import NAME, predict, publish
from ml_assets_tests.serving.slow_clients import half_sent_requests_are_answered_and_closed

IN_PROCESS_EXAMPLES = 2000
REAL_PROCESS_EXAMPLES = 200
#: What a request's content may get: never a 5xx (404: a version that does not exist).
ALLOWED = {200, 400, 404, 413, 415}


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def _refuse_constant(token: str):
    raise AssertionError(f"the response holds {token}, which is not JSON")


def check_answer(request: Request, status: int, text: str, counts: collections.Counter) -> None:
    """No 5xx; strict JSON; 200 carries finite probabilities, anything else an error message."""
    counts[status] += 1
    assert status in ALLOWED, (status, request.path[:100], request.body[:300], text[:500])
    body = json.loads(text, parse_constant=_refuse_constant)
    if status == 200:
        [key] = body
        assert key in ("predictions", "outputs")
        assert body[key] and all(
            type(p) is float and math.isfinite(p) and 0 <= p <= 1 for p in body[key]
        )
    else:
        assert isinstance(body["error"], str) and body["error"], body


def _fuzz(send, examples: int, good: dict, columns) -> collections.Counter:
    counts: collections.Counter = collections.Counter()

    @_settings(examples)
    @given(requests(NAME, good, list(columns.numeric), list(columns.categorical)))
    def property_(request: Request) -> None:
        status, text = send(request)
        check_answer(request, status, text, counts)

    property_()
    return counts


def _report(label: str, counts: collections.Counter) -> None:
    figures = {"fuzz": label, "requests": sum(counts.values()),
               "status_counts": {str(k): v for k, v in sorted(counts.items())}}
    print(json.dumps(figures))


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")
@pytest.mark.parametrize("flavor", ["sklearn", "keras"])
def test_generated_requests_never_get_5xx_or_invalid_json(
    flavor, store, sklearn_models, keras_model, rows, tmp_path
):
    from starlette.testclient import TestClient

    model = sklearn_models[0] if flavor == "sklearn" else keras_model
    publish(store, model, tmp_path)
    app = create_app(ModelRegistry(store, NAME), poll_interval=0)
    with TestClient(app, raise_server_exceptions=False) as client:

        def send(request: Request) -> tuple[int, str]:
            response = client.post(request.path, content=request.body, headers=request.headers)
            return response.status_code, response.text

        counts = _fuzz(send, IN_PROCESS_EXAMPLES, rows[0], model.columns)
        _report(f"{flavor} in process", counts)
        assert sum(counts.values()) >= IN_PROCESS_EXAMPLES
        # Both outcomes are exercised, not only refusals.
        assert counts[200] > 100 and counts[400] > 100, counts
        assert counts[413] == 0  # nothing generated reaches the default limits
        status, _ = send(Request(f"/v1/models/{NAME}:predict", None, json.dumps(
            {"instances": rows[:3]}).encode()))
        assert status == 200


def test_generated_requests_against_the_real_server_process(
    store, sklearn_models, rows, tmp_path
):
    """`ml-assets serve` as its own process on a local store: fuzzed bodies, then half-sent ones."""
    model = sklearn_models[0]
    publish(store, model, tmp_path)
    port = free_port()
    env = {
        **os.environ,
        "ML_ASSETS_ENV": "local",
        "ML_ASSETS_STORE_ROOT": str(tmp_path / "blobs"),
        "ML_ASSETS_CACHE_DIR": str(tmp_path / "serve-cache"),
    }
    log = tmp_path / "serve.log"
    cli = Path(sys.executable).with_name("ml-assets")
    process = spawn(
        [str(cli), "serve", "--model", NAME, "--port", str(port), "--poll-interval", "0",
         "--body-timeout", "1", "--header-timeout", "1"],
        log_path=log,
        env=env,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 180
            while True:
                assert process.poll() is None, f"ml-assets serve exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"not ready in 180 s:\n{log.read_text()}"
                try:
                    if client.get("/healthz").json().get("ready"):
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)

            def send(request: Request) -> tuple[int, str]:
                response = client.post(request.path, content=request.body, headers=request.headers)
                return response.status_code, response.text

            counts = _fuzz(send, REAL_PROCESS_EXAMPLES, rows[0], model.columns)
            _report("sklearn real process", counts)
            assert sum(counts.values()) >= REAL_PROCESS_EXAMPLES
            half_sent_requests_are_answered_and_closed("127.0.0.1", port)
            assert len(predict(client, rows[:3])) == 3
        assert process.poll() is None, log.read_text()
    finally:
        stop_groups([process], timeout=15)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
