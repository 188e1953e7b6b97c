"""Per-run overhead: embedded SQLite vs the PostgreSQL profile, through the daemon and in process.

For each instance profile (dagster.yaml: SQLite in DAGSTER_HOME; deploy/dagster.postgres.yaml:
PostgreSQL, started here from Debian's binaries with durable settings), a no-op raw-like run
(bench/_noop_location.py: one daily partition, a blocking check, the real code-location import):

- daemon: the gRPC code server and `dagster-daemon run` as real processes (ml_assets.services);
  each run is submitted through GraphQL's launchRun (in this process, against the workspace file),
  queued, dequeued by the daemon's run queue and launched by the code server in a new process;
  launch-to-success is the wall time from the submission to the run's SUCCESS;
- in process: `dg.materialize` on the same instance (no queue, no new process).

Median of 10 each after warm-up runs; prints one JSON object (also in bench/results/).
"""

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RUNS, WARMUP = 10, 2
RUN_TIMEOUT_S = 300.0
LOCATION = REPO / "bench" / "_noop_location.py"
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""


def partition(i: int) -> str:
    return (date(2013, 1, 1) + timedelta(days=i)).isoformat()


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def wait_for_end(instance, run_id: str) -> None:
    import dagster as dg

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run = instance.get_run_by_id(run_id)
        if run.status == dg.DagsterRunStatus.SUCCESS:
            return
        if run.is_finished:
            raise RuntimeError(f"run {run_id} ended {run.status}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} still {run.status} after {RUN_TIMEOUT_S:.0f} s")
        time.sleep(0.05)


def daemon_runs(home: Path, env: dict[str, str], first: int) -> dict:
    import dagster as dg
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.cli import execute_query

    from ml_assets import services

    with services.start(home, env=env, roles=("code-server", "daemon"), definitions=str(LOCATION),
                        log_dir=home / "logs") as running:
        os.environ.update(services.child_env(home, running.host, running.grpc_port, env))
        with dg.DagsterInstance.from_config(str(home)) as instance, WorkspaceProcessContext(
            instance, WorkspaceFileTarget(paths=[str(services.workspace_file())])
        ) as workspace:
            launch_to_success, queued, start_to_end = [], [], []
            for i in range(WARMUP + RUNS):
                params = {
                    "selector": {"repositoryLocationName": services.LOCATION_NAME,
                                 "repositoryName": "__repository__", "jobName": "raw_noop_job"},
                    "runConfigData": {},
                    "executionMetadata": {"tags": [{"key": "dagster/partition",
                                                    "value": partition(first + i)}]},
                }
                started = time.perf_counter()
                result = execute_query(workspace, LAUNCH, {"params": params})
                launched = (result.get("data") or {}).get("launchRun") or {}
                if launched.get("__typename") != "LaunchRunSuccess":
                    raise RuntimeError(f"launchRun failed: {result}")
                run_id = launched["run"]["runId"]
                wait_for_end(instance, run_id)
                elapsed = time.perf_counter() - started
                if i < WARMUP:
                    continue
                record = instance.get_run_record_by_id(run_id)
                launch_to_success.append(elapsed)
                queued.append(record.start_time - record.create_timestamp.timestamp())
                start_to_end.append(record.end_time - record.start_time)
    return {
        "launch_to_success_s": median(launch_to_success),
        "queued_to_start_s": median(queued),
        "start_to_end_s": median(start_to_end),
        "runs_s": [round(v, 3) for v in launch_to_success],
    }


def in_process_runs(home: Path, first: int) -> dict:
    import dagster as dg

    sys.path.insert(0, str(LOCATION.parent))
    from _noop_location import raw_noop

    durations = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for i in range(WARMUP + RUNS):
            started = time.perf_counter()
            result = dg.materialize([raw_noop], instance=instance, partition_key=partition(first + i))
            elapsed = time.perf_counter() - started
            assert result.success
            if i >= WARMUP:
                durations.append(elapsed)
    return {"median_s": median(durations), "runs_s": [round(v, 3) for v in durations]}


def profile(name: str, profile_file: Path, env: dict[str, str], workdir: Path) -> dict:
    home = workdir / name
    home.mkdir()
    shutil.copy(profile_file, home / "dagster.yaml")
    os.environ.update(env)
    result = {"daemon": daemon_runs(home, env, first=0)}
    result["in_process"] = in_process_runs(home, first=WARMUP + RUNS)
    return result


def main() -> None:
    from ml_assets.ops.postgres import PostgresServer, new_password

    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    results: dict = {
        "benchmark": "run_overhead",
        "runs_each": RUNS,
        "warmup_runs": WARMUP,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "note": "daemon path: default QueuedRunCoordinator dequeue interval and DefaultRunLauncher "
                "(a new process per run that loads the code location)",
    }
    with tempfile.TemporaryDirectory(prefix="bench-run-overhead-") as tmp:
        workdir = Path(tmp)
        results["sqlite"] = profile("sqlite", REPO / "dagster.yaml", {}, workdir)
        server = PostgresServer.start(durable=True)
        try:
            password = new_password()
            server.create_user("dagster", password)
            server.create_database("dagster", owner="dagster")
            env = {
                "DAGSTER_POSTGRES_HOSTNAME": server.host, "DAGSTER_POSTGRES_PORT": str(server.port),
                "DAGSTER_POSTGRES_USER": "dagster", "DAGSTER_POSTGRES_PASSWORD": password,
                "DAGSTER_POSTGRES_DB": "dagster",
            }
            results["postgres"] = profile("postgres", REPO / "deploy" / "dagster.postgres.yaml",
                                          env, workdir)
        finally:
            server.stop()
    for mode, key in (("daemon", "launch_to_success_s"), ("in_process", "median_s")):
        results[f"{mode}_postgres_over_sqlite"] = round(
            results["postgres"][mode][key] / results["sqlite"][mode][key], 2)
    out = REPO / "bench" / "results" / "run_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
