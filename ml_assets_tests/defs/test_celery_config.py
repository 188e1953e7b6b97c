"""The executor chosen from the environment, and the Celery settings executor and workers share."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ml_assets.defs import celery
from ml_assets.defs.settings import EnvConfigError, celery_settings, executor_name
from ml_assets.ops.celery_workers import worker_command
from ml_assets_tests.fixtures.environment import ml_env_fixture  # noqa: F401 (fixture)


def test_in_process_is_the_default_executor(ml_env):
    assert executor_name() == "in_process"
    assert celery.executor_for_environment() is dg.in_process_executor


def test_celery_executor_carries_the_broker_and_the_redelivery_settings(ml_env):
    ml_env(ML_ASSETS_EXECUTOR="celery", ML_ASSETS_CELERY_BROKER_URL="redis://broker:6379/0",
           ML_ASSETS_CELERY_WORKER_CONCURRENCY="3", ML_ASSETS_CELERY_VISIBILITY_TIMEOUT_S="7200")
    executor = celery.executor_for_environment()
    assert executor.name == "celery"
    settings = celery_settings()
    # A Redis broker is its own result backend unless told otherwise.
    assert (settings.broker_url, settings.backend_url) == ("redis://broker:6379/0", "redis://broker:6379/0")
    assert settings.worker_concurrency == 3
    config = celery.executor_config(settings)
    source = config["config_source"]
    assert source["task_acks_late"] and source["task_reject_on_worker_lost"]
    assert source["worker_prefetch_multiplier"] == 1
    assert source["broker_transport_options"]["visibility_timeout"] == 7200


def test_the_workers_yaml_is_what_dagster_celery_validates_into_the_executors_config(ml_env, tmp_path):
    """The worker reads its YAML through dagster-celery's own loader: same broker, backend, settings."""
    ml_env(ML_ASSETS_EXECUTOR="celery", ML_ASSETS_CELERY_BROKER_URL="amqp://user:secret@rabbit:5672//")
    settings = celery_settings()
    assert settings.backend_url == "rpc://"  # RabbitMQ: results come back over the broker
    _check_worker_yaml(settings, tmp_path)
    ml_env(ML_ASSETS_CELERY_BROKER_URL="redis://:secret@redis:6379/0")
    _check_worker_yaml(celery_settings(), tmp_path)
    ml_env(ML_ASSETS_CELERY_BACKEND_URL="redis://:secret@redis:6379/1")
    _check_worker_yaml(celery_settings(), tmp_path)


def _check_worker_yaml(settings, tmp_path):
    from dagster_celery.cli import get_validated_config

    path = tmp_path / "worker.yaml"
    path.write_text(celery.worker_yaml(settings))
    assert "secret" not in path.read_text()  # the URLs stay env references in the file
    validated = get_validated_config(str(path))
    expected = celery.executor_config(settings)
    assert validated["broker"] == expected["broker"] and validated["backend"] == expected["backend"]
    assert validated["config_source"] == expected["config_source"]


def test_worker_command_runs_the_configured_number_of_steps_at_once():
    argv = celery.worker_command("worker-7", concurrency=2)
    assert Path(argv[0]).name == "celery" and argv[1:4] == ["-A", "dagster_celery.app", "worker"]
    assert argv[argv.index("-n") + 1] == "worker-7@%h" and argv[argv.index("-Q") + 1] == "dagster"
    assert "--concurrency=2" in argv and "--prefetch-multiplier=1" in argv
    assert worker_command("worker-7", python="python") == [
        "python", "-m", "ml_assets.defs.celery", "worker", "--name", "worker-7"]


def test_a_worker_gets_dagster_celerys_settings_without_its_password_written_to_disk(ml_env, tmp_path):
    """`dagster-celery worker start` writes the resolved broker URL into a new file per start; the worker's
    Celery app (imported as the worker imports it) gets the same settings from memory, and no file has it."""
    password = "s3cret-pw"
    ml_env(ML_ASSETS_EXECUTOR="celery", ML_ASSETS_CELERY_BROKER_URL=f"redis://:{password}@127.0.0.1:6390/0",
           ML_ASSETS_CELERY_BACKEND_URL=f"redis://:{password}@127.0.0.1:6390/1",
           ML_ASSETS_CELERY_VISIBILITY_TIMEOUT_S="120")
    home = tmp_path / "home"
    home.mkdir()
    argv, env = celery.prepare_worker("worker-3", home, concurrency=1)
    env["DAGSTER_HOME"] = str(home)
    probe = ("import json, dagster_celery.app as m; c = m.app.conf; print(json.dumps({k: c[k] for k in "
             "('broker_url', 'result_backend', 'task_acks_late', 'task_reject_on_worker_lost', "
             "'worker_prefetch_multiplier', 'broker_transport_options')}))")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ours = json.loads(done.stdout.strip().splitlines()[-1])
    # What dagster-celery itself writes for the same YAML (into a throw-away home).
    theirs_home = tmp_path / "theirs"
    theirs_home.mkdir()
    code = ("import json, runpy, sys, os; from dagster_celery.cli import get_config_dir; "
            "d = get_config_dir(sys.argv[1]); g = runpy.run_path(os.path.join(d, 'dagster_celery_config.py')); "
            "print(json.dumps({k: v for k, v in g.items() if not k.startswith('__')}))")
    done = subprocess.run([sys.executable, "-c", code, env[celery.WORKER_YAML_VAR]], capture_output=True, text=True,
                          env={**env, "DAGSTER_HOME": str(theirs_home)}, timeout=120)
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    assert password in next((theirs_home / "dagster_celery" / "config").rglob("*.py")).read_text()
    assert {k: ours[k] for k in ("broker_url", "result_backend")} == {k: theirs[k] for k in ("broker_url", "result_backend")}
    assert ours["broker_url"].endswith(f":{password}@127.0.0.1:6390/0")
    for key in ("task_acks_late", "task_reject_on_worker_lost", "worker_prefetch_multiplier", "broker_transport_options"):
        assert ours[key] == theirs[key], key
    assert ours["broker_transport_options"]["visibility_timeout"] == 120
    assert argv[0] == str(Path(sys.executable).with_name("celery"))
    written = [p for p in home.rglob("*") if p.is_file()]
    assert written and not any(password in p.read_text(errors="replace") for p in written), written
    assert not (home / "dagster_celery").exists()


@pytest.mark.parametrize(("values", "named"), [
    ({"ML_ASSETS_EXECUTOR": "kubernetes"}, "ML_ASSETS_EXECUTOR"),
    ({"ML_ASSETS_EXECUTOR": "celery"}, "ML_ASSETS_CELERY_BROKER_URL"),
    ({"ML_ASSETS_EXECUTOR": "celery", "ML_ASSETS_CELERY_BROKER_URL": "http://user:hunter2@broker"},
     "ML_ASSETS_CELERY_BROKER_URL"),
    ({"ML_ASSETS_EXECUTOR": "celery", "ML_ASSETS_CELERY_BROKER_URL": "redis://b:6379/0",
      "ML_ASSETS_CELERY_BACKEND_URL": "nonsense"}, "ML_ASSETS_CELERY_BACKEND_URL"),
    ({"ML_ASSETS_EXECUTOR": "celery", "ML_ASSETS_CELERY_BROKER_URL": "redis://b:6379/0",
      "ML_ASSETS_CELERY_WORKER_CONCURRENCY": "0"}, "ML_ASSETS_CELERY_WORKER_CONCURRENCY"),
    ({"ML_ASSETS_EXECUTOR": "celery", "ML_ASSETS_CELERY_BROKER_URL": "redis://b:6379/0",
      "ML_ASSETS_CELERY_VISIBILITY_TIMEOUT_S": "soon"}, "ML_ASSETS_CELERY_VISIBILITY_TIMEOUT_S"),
])
def test_bad_settings_name_the_variable_and_never_echo_a_password(ml_env, values, named):
    ml_env(**values)
    with pytest.raises(EnvConfigError, match=named) as raised:
        celery.executor_for_environment()
    assert "hunter2" not in str(raised.value)
