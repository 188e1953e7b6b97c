"""The cluster profile's executor end to end: steps run on two real Celery workers.

Real processes: Redis (broker and result backend), PostgreSQL (the instance, cluster profile:
deploy/dagster.cluster.yaml, Spark and training pools sized 2 from ML_ASSETS_SPARK_POOL_LIMIT and
ML_ASSETS_TRAINING_POOL_LIMIT), Azurite (the store),
the code server, the webserver, `dagster-daemon run` and two `dagster-celery` workers (worker-1,
worker-2, concurrency 1 each) started as `make up` starts them (ml_assets.services). Ten days are
built first in one process (prepare_days). Then, with ML_ASSETS_EXECUTOR=celery:

1. a training cycle (`dagster job execute -j training_job`): every step ran in a Celery worker,
   the two candidates (training pool, limit 2) on different workers at the same time;
2. the workers restarted with ML_ASSETS_CELERY_VISIBILITY_TIMEOUT_S=120 (how long Redis keeps a
   delivered, unacknowledged step before a live worker hands it out again), then a 7-day monitoring
   backfill (feature_drift + live_performance, launched as the UI launches it) with two losses:
   a. the pool process running one of its steps is SIGKILLed (as the OOM killer would): the step is
      delivered again at once (acks late + reject on worker lost);
   b. a whole worker (its process group: the Celery main process and its pool) is SIGKILLed while
      it runs a step (a host gone): nobody rejects that step; once the visibility timeout has
      passed, the surviving worker restores it from Redis' unacknowledged set and runs it;
   each lost step succeeds once in a live worker process (its node name and PID in the step's
   events), the backfill succeeds and no (asset, day) is materialized twice.

The visibility timeout must exceed the longest step, or a step still running is handed out a
second time and runs twice (the keras step took 122 s at load average 19 on this 2-core machine):
hence the default 3600 s for the training phase and 120 s only for the monitoring steps (~1-8 s
each on a quiet machine; 47-83 s for a fresh worker process's first one at load average 20, when a
40 s timeout did start two of them twice). Only the consuming workers' value matters (kombu
restores from the consumers); a deployment sets the one variable everywhere. RabbitMQ requeues a
lost worker's step as soon as its connection drops (no timeout).

Which worker ran a step is read from the event log: dagster-celery's "Executing steps ... in celery
worker" engine event names the worker (node name) and, like every event, carries the PID of the
process that wrote it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter

import dagster as dg
import pytest
import yaml
from dagster._core.events import DagsterEventType

from ml_assets.defs.execution import SPARK_POOL, TRAINING_POOL, ensure_pool_limits
from ml_assets.landing import days_between, land
from ml_assets.ops.celery_workers import ROLE_PREFIX, nodename
from ml_assets.ops.processes import descendants, group_members, stop_groups
from ml_assets.services import start
from ml_assets.spec import load_spec
from ml_assets.storage import AzureBlobStore
from ml_assets_tests.e2e.harness import (
    BIN,
    REPO,
    SPEC_PATH,
    http_json,
    launch_asset_backfill,
    materializations,
    open_instance,
    runs_table,
    stack_env,
    tail,
    wait_until,
)
from ml_assets_tests.fixtures.redis import redis  # noqa: F401 (the session's Redis fixture)

pytestmark = [pytest.mark.integration, pytest.mark.azurite, pytest.mark.timeout(30 * 60)]

FIRST_DAY, LAST_DAY = dt.date(2013, 1, 1), dt.date(2013, 1, 10)  # 7 training + 3 holdout days
MONITORED = [(dt.date(2013, 1, 3) + dt.timedelta(days=n)).isoformat() for n in range(7)]
MONITORING = ["feature_drift", "live_performance"]
TRAINING = ["training_set", "keras_candidate", "sklearn_candidate", "candidate_model", "deployed_model"]
WORKERS = ["worker-1", "worker-2"]
EXECUTING = "in celery worker"  # dagster-celery's engine event: "Executing steps <key> in celery worker"
# Redis hands a lost worker's step out again after this long: above the monitoring steps (a fresh
# worker process's first one took 83 s on an overloaded machine), as short as that allows.
VISIBILITY_TIMEOUT_S = 120
FINISHED = (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE, DagsterEventType.ASSET_MATERIALIZATION)


@dataclasses.dataclass(frozen=True)
class Execution:
    """One delivery of a step to a worker, as the event log records it."""

    run_id: str
    step_key: str
    worker: str
    pid: int | None
    timestamp: float


def executions(instance, run_ids, finished: set | None = None) -> list[Execution]:
    """Each delivery of a step to a worker: the worker from dagster-celery's engine event, the PID
    from the STEP_START the worker's process wrote next (None until it did). `finished`, if given,
    receives the (run_id, step_key) with a success, failure or materialization (same query)."""
    found = []
    kinds = {DagsterEventType.ENGINE_EVENT, DagsterEventType.STEP_START, *(FINISHED if finished is not None else ())}
    for run_id in run_ids:
        open_deliveries: dict[str, Execution] = {}
        for entry in instance.all_logs(run_id, of_type=kinds):
            if not entry.step_key:
                continue
            if entry.dagster_event.event_type in FINISHED:
                finished.add((run_id, entry.step_key))
            elif entry.dagster_event.event_type == DagsterEventType.STEP_START:
                delivery = open_deliveries.pop(entry.step_key, None)
                if delivery is not None:
                    found.append(dataclasses.replace(delivery, pid=entry.dagster_event.pid))
            elif EXECUTING in (entry.message or ""):
                metadata = entry.dagster_event.engine_event_data.metadata
                open_deliveries[entry.step_key] = Execution(run_id, entry.step_key, str(metadata["Celery worker"].value),
                                                            None, entry.timestamp)
        found.extend(open_deliveries.values())
    return sorted(found, key=lambda e: e.timestamp)


def step_windows(instance, run_id: str) -> dict[str, tuple[float, float]]:
    """(last STEP_START, STEP_SUCCESS) of each step of the run that succeeded."""
    started, windows = {}, {}
    for entry in instance.all_logs(run_id, of_type={DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}):
        if entry.dagster_event.event_type == DagsterEventType.STEP_START:
            started[entry.step_key] = entry.timestamp
        else:
            windows[entry.step_key] = (started[entry.step_key], entry.timestamp)
    return windows


def step_events(instance, run_id: str, step_key: str) -> Counter:
    """DagsterEventType -> how many such events the step has in the run."""
    return Counter(entry.dagster_event.event_type for entry in instance.all_logs(run_id)
                   if entry.dagster_event and entry.step_key == step_key)


SENSORS_QUERY = """{ sensorsOrError(repositorySelector: {repositoryName: "__repository__",
  repositoryLocationName: "ml_assets"}) { ... on Sensors { results { name sensorState { id status } } } } }"""
STOP_SENSOR = """mutation($id: String!) { stopSensor(id: $id) { __typename
  ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }"""


def stop_all_sensors(webserver_url: str) -> list[str]:
    """The test drives every run itself: no sensor may request one once the daemon starts."""
    _, answer = http_json(f"{webserver_url}/graphql", {"query": SENSORS_QUERY})
    stopped = []
    for sensor in answer["data"]["sensorsOrError"]["results"]:
        _, result = http_json(f"{webserver_url}/graphql", {"query": STOP_SENSOR,
                                                           "variables": {"id": sensor["sensorState"]["id"]}})
        state = result["data"]["stopSensor"]
        assert state["__typename"] == "StopSensorMutationResult", state
        stopped.append(sensor["name"])
    return stopped


def cluster_home(home):
    """DAGSTER_HOME with the cluster profile (deploy/dagster.cluster.yaml: PostgreSQL, step-level
    pools, room for the backfill's seven light runs at once)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((REPO / "deploy" / "dagster.cluster.yaml").read_text())
    return home


def dagster_cli(args: list[str], env: dict[str, str], log_path) -> None:
    """A Dagster CLI run (its process orchestrates; the steps go to the workers); fails with its log."""
    with open(log_path, "ab") as log:
        result = subprocess.run([str(BIN / "dagster"), *args], env=env, cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=20 * 60)
    assert result.returncode == 0, f"dagster {' '.join(args)} failed\n{tail(log_path, 80)}"


def test_training_and_backfill_run_on_two_celery_workers_and_survive_a_lost_worker(
        tmp_path, azurite, postgres, redis, example_frames):  # noqa: F811
    broker, backend = redis.fresh_urls()
    workdir = tmp_path / "cluster"
    home = cluster_home(workdir / "dagster_home")
    container = f"celery-{uuid.uuid4().hex[:12]}"
    env = stack_env(home=home, workdir=workdir, connection_string=azurite.connection_string, container=container,
                    extra={**postgres.fresh_db(), "ML_ASSETS_EXECUTOR": "celery",
                           "ML_ASSETS_CELERY_BROKER_URL": broker, "ML_ASSETS_CELERY_BACKEND_URL": backend,
                           "ML_ASSETS_CELERY_WORKER_CONCURRENCY": "1",
                           # Spark steps at once = the workers' slots (2 x 1); training steps at once
                           # = 2 workers x 1 training step each: both candidates together.
                           "ML_ASSETS_SPARK_POOL_LIMIT": str(len(WORKERS)),
                           "ML_ASSETS_TRAINING_POOL_LIMIT": str(len(WORKERS))})
    logs = workdir / "logs"
    store = AzureBlobStore(container, connection_string=azurite.connection_string)
    land(store, load_spec(SPEC_PATH), example_frames, days_between(FIRST_DAY, LAST_DAY))
    # Ten days built in one process while the services start (set-up, not under test).
    logs.mkdir(parents=True)
    with open(logs / "prepare.log", "wb") as prepare_log:
        prepare = subprocess.Popen([sys.executable, "-m", "ml_assets_tests.e2e.prepare_days", FIRST_DAY.isoformat(),
                                    LAST_DAY.isoformat()], env=env, cwd=REPO, stdout=prepare_log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    services = daemon = None
    try:
        services = start(home, env=env, roles=("code-server", "webserver"), log_dir=logs,
                         celery_workers=len(WORKERS))
        stopped = stop_all_sensors(services.webserver_url)
        assert "landed_blobs" in stopped and "data_automation" in stopped, stopped
        assert prepare.wait(timeout=15 * 60) == 0, tail(logs / "prepare.log", 80)
        workers = {name: services.processes[ROLE_PREFIX + name] for name in WORKERS}
        nodes = {nodename(name): name for name in WORKERS}

        with open_instance(env) as instance:
            # The pool limits from config, as the landed_blobs sensor writes them (it is stopped here);
            # the profile's default_limit (1) would train the candidates one after the other.
            assert ensure_pool_limits(instance) == []
            limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
            assert limits == {SPARK_POOL: len(WORKERS), TRAINING_POOL: len(WORKERS)}, limits
            # 1. A training cycle through Celery.
            before = {run.run_id for run in instance.get_runs()}
            dagster_cli(["job", "execute", "-m", "ml_assets.definitions", "-j", "training_job"], env,
                        logs / "training.log")
            dagster_cli(["asset", "materialize", "-m", "ml_assets.definitions", "--select", "reference_stats"],
                        env, logs / "reference.log")
            training_run = next(run for run in instance.get_runs(filters=dg.RunsFilter(job_name="training_job"))
                                if run.run_id not in before)
            assert training_run.status == dg.DagsterRunStatus.SUCCESS
            ran = executions(instance, [training_run.run_id])
            by_step = {e.step_key: e for e in ran}
            # Every step of the run (checks included) was delivered to a worker, never run in the run's process.
            assert set(TRAINING) <= set(by_step), by_step
            assert {e.worker for e in ran} <= set(nodes), ran
            run_pid = next(e.dagster_event.pid for e in instance.all_logs(
                training_run.run_id, of_type=DagsterEventType.RUN_START))
            # ... each in a process of the worker its engine event names, not in the run's process.
            for step in ran:
                assert step.pid in descendants(workers[nodes[step.worker]].pid), step
            assert run_pid is not None and run_pid not in {e.pid for e in ran}
            keras, sklearn = by_step["keras_candidate"], by_step["sklearn_candidate"]
            assert keras.worker != sklearn.worker, f"both candidates ran on {keras.worker}"
            windows = step_windows(instance, training_run.run_id)
            (k0, k1), (s0, s1) = windows["keras_candidate"], windows["sklearn_candidate"]
            assert k0 < s1 and s0 < k1, f"the candidates did not run at the same time: {windows}"
            print("training steps:", json.dumps({e.step_key: [e.worker, e.pid] for e in ran}))

            # 2. The workers restarted with a short visibility timeout (the same variable a deployment
            # sets; each worker writes it into its YAML), beside the daemon.
            stop_groups(list(workers.values()))
            for name in WORKERS:
                del services.processes[ROLE_PREFIX + name]
                log = logs / f"{ROLE_PREFIX}{name}.log"
                log.rename(log.with_suffix(".training.log"))
            daemon = start(home, env={**env, "ML_ASSETS_CELERY_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S)},
                           roles=("daemon",), grpc_port=services.grpc_port, log_dir=logs,
                           celery_workers=len(WORKERS))
            workers = {name: daemon.processes[ROLE_PREFIX + name] for name in WORKERS}
            for name in WORKERS:
                worker_config = yaml.safe_load((home / "celery" / f"{name}.yaml").read_text())
                options = worker_config["execution"]["config"]["config_source"]["broker_transport_options"]
                assert options["visibility_timeout"] == VISIBILITY_TIMEOUT_S, options

            # A 7-day monitoring backfill; a pool process, then a whole worker, are killed mid-step.
            backfill_id = launch_asset_backfill(services.webserver_url, MONITORING, MONITORED)

            def backfill_runs() -> list[str]:
                return [run.run_id for run in instance.get_runs(filters=dg.RunsFilter(
                    tags={"dagster/backfill": backfill_id}))]

            def dump() -> str:
                return "\n".join([runs_table(instance), *(tail(p, 40) for p in sorted(logs.glob("*.log")))])

            def done(step: Execution) -> bool:
                done_steps: set = set()
                executions(instance, [step.run_id], done_steps)
                return (step.run_id, step.step_key) in done_steps

            lost_process: Execution | None = None  # its pool process killed
            lost_worker: Execution | None = None  # its whole worker killed
            spared: set[tuple[str, str, int]] = set()

            def freeze(step: Execution, group: bool) -> bool:
                """SIGSTOP the step's process (or its worker's group); True if it is still mid-step."""
                target = workers[nodes[step.worker]].pid
                assert step.pid in descendants(target), step
                stop = (lambda sig: os.killpg(target, sig)) if group else (lambda sig: os.kill(step.pid, sig))
                stop(signal.SIGSTOP)
                time.sleep(0.2)  # a write the process had in flight lands before we look
                if done(step):
                    stop(signal.SIGCONT)
                    spared.add((step.run_id, step.step_key, step.pid))
                    return False
                stop(signal.SIGKILL)
                return True

            def kill_mid_step() -> bool:
                """Once each worker has finished a backfill step: kill the pool process running a
                later one; then the whole worker running the next one we catch mid-step, that same
                worker's if we can (its new pool process's first step is the longest to catch, and
                the other worker keeps its warm process: its steps stay well below the timeout)."""
                nonlocal lost_process, lost_worker
                runs = backfill_runs()
                done_steps: set = set()
                seen = executions(instance, runs, done_steps)
                if {e.worker for e in seen if (e.run_id, e.step_key) in done_steps} != set(nodes):
                    return False
                running = [e for e in seen if e.pid is not None and (e.run_id, e.step_key) not in done_steps
                           and (e.run_id, e.step_key, e.pid) not in spared and e != lost_process]
                if lost_process is None:
                    lost_process = next((step for step in running if freeze(step, group=False)), None)
                    return False
                running.sort(key=lambda e: e.worker != lost_process.worker)
                lost_worker = next((step for step in running if freeze(step, group=True)), None)
                if lost_worker is not None:
                    return True
                if len(runs) == len(MONITORED) and all(instance.get_run_by_id(r).is_finished for r in runs):
                    raise AssertionError(f"the backfill ended before both kills (pool process: {lost_process})\n{dump()}")
                return False

            wait_until(kill_mid_step, what="a pool process, then a whole worker, killed mid-step",
                       timeout=15 * 60, interval=0.1, dump=dump)
            killed_at = time.monotonic()
            lost = nodes[lost_worker.worker]
            survivor = next(name for name in WORKERS if name != lost)

            def backfill_done() -> str | None:
                _, answer = http_json(f"{services.webserver_url}/graphql", {"query": BACKFILL_STATUS,
                                                                           "variables": {"id": backfill_id}})
                status = answer["data"]["partitionBackfillOrError"].get("status")
                return status if status in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED",
                                            "CANCELED") else None

            status = wait_until(backfill_done, what="the backfill to finish", timeout=15 * 60, interval=2, dump=dump)
            wait_until(lambda: all(instance.get_run_by_id(r).is_finished for r in backfill_runs()),
                       what="every backfill run to finish", timeout=5 * 60, interval=1, dump=dump)
            runs = [instance.get_run_by_id(r) for r in backfill_runs()]
            assert status in ("COMPLETED", "COMPLETED_SUCCESS"), f"backfill {status}\n{dump()}"
            assert len(runs) == len(MONITORED) and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), dump()

            # The lost worker is gone whole; the other one lives.
            assert workers[lost].poll() is not None and group_members(workers[lost].pid) == []
            assert workers[survivor].poll() is None, "the surviving worker exited"
            for victim in (lost_process, lost_worker):
                deliveries = [e for e in executions(instance, [victim.run_id]) if e.step_key == victim.step_key]
                counts = step_events(instance, victim.run_id, victim.step_key)
                assert victim in deliveries and deliveries[-1].pid != victim.pid, deliveries
                # Started once per delivery, succeeded once, in the last one.
                assert counts[DagsterEventType.STEP_START] == len(deliveries), (counts, deliveries)
                assert counts[DagsterEventType.STEP_SUCCESS] == 1 and not counts[DagsterEventType.STEP_FAILURE], counts
            # The whole-worker loss: the step ran again on the surviving worker, its node name (worker@host)
            # in the engine event and its process's PID in STEP_START.
            retried = [e for e in executions(instance, [lost_worker.run_id]) if e.step_key == lost_worker.step_key][-1]
            assert retried.worker == nodename(survivor), retried
            assert retried.pid in descendants(workers[survivor].pid), retried
            # Steps of the backfill ran on both workers.
            backfill_steps = executions(instance, backfill_runs())
            assert {e.worker for e in backfill_steps} == set(nodes), backfill_steps
            print("backfill steps:", json.dumps([[e.step_key, e.worker, e.pid] for e in backfill_steps]),
                  f"pool process killed: {lost_process}; worker {lost} killed: {lost_worker}; retried on {retried}; "
                  f"backfill done {time.monotonic() - killed_at:.0f} s after the worker loss")

            # Nothing materialized twice: every monitored day once, every training asset once.
            keys = [dg.AssetKey(name) for name in MONITORING + TRAINING]
            materialized = materializations(instance, keys)
            expected = {(name, day) for name in MONITORING for day in MONITORED} | {(n, None) for n in TRAINING}
            assert set(materialized) == expected, sorted(set(materialized) ^ expected)
            assert all(n == 1 for n in materialized.values()), {k: n for k, n in materialized.items() if n != 1}
            assert not materializations(instance, keys, restated=True)  # nor restated (unchanged=true)
    finally:
        if prepare.poll() is None:
            prepare.kill()
        for stack in (daemon, services):
            if stack is not None:
                stack.stop()
        store.close()


BACKFILL_STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status } ... on PythonError { message } } }"""

