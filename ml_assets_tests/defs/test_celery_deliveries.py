"""A step that kills its Celery worker process every time is not handed back forever.

Real processes: Redis (broker and backend) and one worker started as `make up` starts it
(`python -m ml_assets.defs.celery worker`); the run's orchestrator runs in this process on a SQLite
instance both share. Acks late + reject on worker lost put the step back after each crash; the
worker refuses its start number ML_ASSETS_CELERY_MAX_DELIVERIES + 1, the task fails and the run
fails naming the step, instead of the step crashing its worker again and again.
"""

from __future__ import annotations

import os

import dagster as dg
import pytest

from ml_assets.defs.celery import StepDeliveryLimitError, worker_starts
from ml_assets.ops.celery_workers import start_workers
from ml_assets.ops.processes import stop_groups
from ml_assets_tests.e2e.harness import REPO
from ml_assets_tests.fixtures.redis import redis  # noqa: F401 (the session's Redis fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LIMIT = 2


def test_a_step_that_kills_its_worker_process_each_time_fails_the_run_after_the_delivery_limit(
        redis, tmp_path, monkeypatch):  # noqa: F811
    broker, backend = redis.fresh_urls()
    home = tmp_path / "home"
    home.mkdir()
    env = {"ML_ASSETS_EXECUTOR": "celery", "ML_ASSETS_CELERY_BROKER_URL": broker,
           "ML_ASSETS_CELERY_BACKEND_URL": backend, "ML_ASSETS_CELERY_MAX_DELIVERIES": str(LIMIT),
           "DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    worker_env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    workers = start_workers(["worker-1"], env=worker_env, log_dir=tmp_path, cwd=REPO)
    try:
        from ml_assets_tests.defs.celery_crash_job import define_crash_job

        with dg.DagsterInstance.get() as instance:
            result = dg.execute_job(dg.reconstructable(define_crash_job), instance=instance, raise_on_error=False)
            assert not result.success
            run_id = result.run_id
            assert worker_starts(instance, run_id, "dies") == LIMIT  # started twice, never a third time
            messages = [e.dagster_event.message for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
                        if e.step_key == "dies"]
            refused = [m for m in messages if "ML_ASSETS_CELERY_MAX_DELIVERIES=2" in m]
            assert len(refused) == 1 and f'step "dies" of run {run_id} was started 2 times' in refused[0], messages
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
            # The run's failure names the step and the limit (the executor's error from the failed task).
            errors = "\n".join(str(e.dagster_event.event_specific_data) for e in instance.all_logs(run_id)
                               if e.dagster_event and e.dagster_event.is_failure)
            assert StepDeliveryLimitError.__name__ in errors and 'step "dies"' in errors, errors
            started = {e.step_key for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)}
            assert "after" not in started
        log = (tmp_path / "celery-worker-1.log").read_text(errors="replace")
        assert log.count("WorkerLostError") >= LIMIT, log[-3000:]
    finally:
        stop_groups(list(workers.values()))
