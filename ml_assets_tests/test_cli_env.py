"""`ml-assets serve / rollback / history / land` with ML_ASSETS_ENV=azure against a real Azurite.

Each test runs twice: credentials as a connection string, and as account URL + key. The
commands build their resources from the environment exactly as the code location does.
`history`, `rollback` and `land` run in process (`ml_assets.cli.main`); `serve`, and the error
cases, run as real `ml-assets` subprocesses.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from ml_assets.cli import main
from ml_assets.examples.flights_features import feature_names, flights_features, records
from ml_assets.ml.models import FeatureColumns, SklearnParams, save_model, train_sklearn
from ml_assets.ops.processes import stop_groups
from ml_assets.spec import load_spec
from ml_assets.storage import AzureBlobStore
from ml_assets.storage.model_store import ModelStore
from ml_assets_tests.fixtures.blackhole import black_hole_fixture  # noqa: F401
from ml_assets_tests.fixtures.environment import clean_environ, ml_env_fixture  # noqa: F401
from ml_assets_tests.fixtures.smtp import free_port

pytestmark = pytest.mark.azurite

CLI = str(Path(sys.executable).parent / "ml-assets")
MODEL = "flights"


@pytest.fixture(params=["connection-string", "url-and-key"])
def azure_env(request, azurite, ml_env) -> dict[str, str]:
    """ML_ASSETS_ENV=azure on a fresh container; returns every variable set (for subprocesses)."""
    secrets = {
        "connection-string": {"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string},
        "url-and-key": {"AZURE_STORAGE_ACCOUNT_URL": azurite.account_url, "AZURE_STORAGE_KEY": azurite.account_key},
    }[request.param]
    return ml_env(ML_ASSETS_ENV="azure", ML_ASSETS_CONTAINER=f"cli-{uuid.uuid4().hex[:12]}", **secrets)


def _models(azurite, env: dict[str, str], tmp_path: Path) -> ModelStore:
    """The same container, opened independently of the CLI."""
    store = AzureBlobStore(env["ML_ASSETS_CONTAINER"], connection_string=azurite.connection_string)
    return ModelStore(store, tmp_path / "publisher-cache")


def _publish_three(models: ModelStore, tmp_path: Path) -> None:
    for flavor in ("sklearn", "keras", "sklearn"):
        artifact = tmp_path / f"artifact-{uuid.uuid4().hex}"
        artifact.mkdir()
        (artifact / "model.bin").write_bytes(flavor.encode())
        models.publish(MODEL, artifact, {"flavor": flavor})
    models.promote(MODEL, 1, expected=None, reason="first model")
    models.promote(MODEL, 3, expected=1, reason="beat v1")


def test_history_and_rollback(azurite, azure_env, tmp_path, capsys):
    models = _models(azurite, azure_env, tmp_path)
    _publish_three(models, tmp_path)

    assert main(["history", "--model", MODEL]) == 0
    out = capsys.readouterr().out
    assert "champion v3; versions [1, 2, 3]" in out
    assert "beat v1" in out

    assert main(["rollback", "--model", MODEL, "--to", "1", "--reason", "v3 drifts on carrier WN"]) == 0
    assert "champion is now v1" in capsys.readouterr().out
    assert models.champion(MODEL).version == 1
    assert [entry["version"] for entry in models.history(MODEL)] == [1, 3, 1]


def test_land(azurite, azure_env, capsys):
    assert main(["land", "--start", "2013-01-01", "--end", "2013-01-02"]) == 0
    container = azure_env["ML_ASSETS_CONTAINER"]
    assert f"into azure:{azurite.account_name}/{container}" in capsys.readouterr().out
    spec = load_spec("flights")
    store = AzureBlobStore(container, connection_string=azurite.connection_string, create_if_missing=False)
    for day in (dt.date(2013, 1, 1), dt.date(2013, 1, 2)):
        for source in spec.sources:
            assert list(store.list(spec.blob_prefix(source, day) + "/")), f"{source} {day} not landed"


@pytest.mark.timeout(300)
def test_serve_answers_over_http(azurite, azure_env, example_frames, tmp_path):
    frame, labels = flights_features(example_frames, 400, seed=3)
    model = train_sklearn(frame.iloc[:300], labels[:300], FeatureColumns(*feature_names()),
                          SklearnParams(max_iter=20), seed=0)
    artifact = tmp_path / "artifact"
    save_model(model, artifact)
    models = _models(azurite, azure_env, tmp_path)
    manifest = {"flavor": model.flavor,
                "columns": {"numeric": list(model.columns.numeric), "categorical": list(model.columns.categorical)}}
    version = models.publish(MODEL, artifact, manifest).version
    models.promote(MODEL, version, expected=None, reason="test")

    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [CLI, "serve", "--model", MODEL, "--port", str(port), "--poll-interval", "0.5"],
            env=clean_environ(**azure_env), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 180
            while True:
                assert process.poll() is None, f"ml-assets serve exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"no ready server within 180 s:\n{log.read_text()}"
                try:
                    if client.get("/healthz").json().get("ready"):
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.25)
            status = client.get(f"/v1/models/{MODEL}")
            assert status.status_code == 200, status.text
            [entry] = status.json()["model_version_status"]
            assert (entry["version"], entry["state"]) == (str(version), "AVAILABLE")
            rows = records(frame.iloc[300:310])
            predicted = client.post(f"/v1/models/{MODEL}:predict", json={"instances": rows})
            assert predicted.status_code == 200, predicted.text
            assert len(predicted.json()["predictions"]) == len(rows)
            assert all(0 < p < 1 for p in predicted.json()["predictions"])
    finally:
        stop_groups([process], timeout=15)


def test_history_subprocess(azurite, azure_env, tmp_path):
    _publish_three(_models(azurite, azure_env, tmp_path), tmp_path)
    result = subprocess.run([CLI, "history", "--model", MODEL], env=clean_environ(**azure_env),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "champion v3; versions [1, 2, 3]" in result.stdout


def test_missing_credentials_fail_naming_the_variables():
    result = subprocess.run([CLI, "history"], env=clean_environ(ML_ASSETS_ENV="azure"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "AZURE_STORAGE_CONNECTION_STRING" in result.stderr
    assert "AZURE_STORAGE_ACCOUNT_URL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(120)
def test_frozen_store_fails_the_command_within_the_timeout(black_hole, azurite):
    env = clean_environ(ML_ASSETS_ENV="azure", AZURE_STORAGE_ACCOUNT_URL=f"{black_hole.url}/devstoreaccount1",
                        AZURE_STORAGE_KEY=azurite.account_key, ML_ASSETS_STORE_TIMEOUT_S="3")
    result = subprocess.run([CLI, "history"], env=env, capture_output=True, text=True, timeout=100)
    assert result.returncode == 2, result.stderr
    assert "no answer from the store" in result.stderr
    assert "store timeout of 3 s" in result.stderr
    assert azurite.account_key not in result.stderr
