"""Training job through Celery (two workers) vs in process: wall times and their ratio.

One PostgreSQL instance (Debian's binaries), a local store in a temporary folder (one host: every
process sees it), Redis from Debian's `redis-server` as broker and result backend. The training
window's days are landed (`ml-assets land`) and built (raw, features, labels) once, then
`dagster job execute -j training_job` runs:

- in_process: ML_ASSETS_EXECUTOR=in_process, every step in the run's process (the embedded profile);
- celery_cold: ML_ASSETS_EXECUTOR=celery, two `dagster-celery` workers (concurrency 1) just
  started: each step is a task; the workers' pool processes start their Spark session and import
  TensorFlow on their first step, as the run's process does in process;
- celery_warm: the same again, the workers' processes keeping their Spark session and TensorFlow.

For each: `wall_s` (the CLI command, process start included) and `run_s` (RUN_START to the run's
end in the event log). Ratios are celery / in_process. On the bundled spec with no champion yet the
promotion gate may refuse the candidate ("failed_steps": [the gate], deployed_model skipped): the
same in every mode, so the walls still compare the same work. Prints one JSON object, also
written to bench/results/celery.json.

    python bench/bench_celery.py [--spec flights] [--start 2013-01-01] [--days 35]
"""

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
SPARK_CONF = {"spark.master": "local[2]", "spark.driver.memory": "1g", "spark.sql.shuffle.partitions": "2"}
WORKERS = 2
GATE = "candidate_model_promotion_gate"


def prepare(first: str, last: str) -> None:
    """Raw one day per run, features and labels as one range (in this process, in process)."""
    import dagster as dg

    from ml_assets.definitions import defs

    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    days = [(start + dt.timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]
    with dg.DagsterInstance.get() as instance:
        for day in days:
            defs.resolve_job_def("raw_job").execute_in_process(instance=instance, partition_key=day)
        defs.resolve_job_def("feature_job").execute_in_process(instance=instance, tags={
            "dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]})


def run(argv: list[str], env: dict, log: Path, may_fail: bool = False) -> float:
    """Wall seconds of the command; `may_fail`: a failed run is judged from the event log instead."""
    started = time.perf_counter()
    with open(log, "ab") as out:
        result = subprocess.run(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    if result.returncode != 0 and not may_fail:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{' '.join(argv)} failed (exit {result.returncode}):\n{tail}")
    return round(time.perf_counter() - started, 2)


def last_training_run(env: dict) -> dict:
    """Run duration and where its steps ran, from the instance's event log."""
    code = """
import json, dagster as dg
from dagster._core.events import DagsterEventType
with dg.DagsterInstance.get() as instance:
    run = instance.get_runs(filters=dg.RunsFilter(job_name="training_job"), limit=1)[0]
    failed = sorted({e.step_key for e in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)})
    stats = instance.get_run_stats(run.run_id)
    workers = {}
    for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT):
        if "in celery worker" in (entry.message or ""):
            meta = entry.dagster_event.engine_event_data.metadata
            workers[entry.step_key] = str(meta["Celery worker"].value)
    print(json.dumps({"run_s": round(stats.end_time - stats.start_time, 2), "status": run.status.value,
                      "failed_steps": failed, "step_workers": workers}))
"""
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # Every step ran; only the promotion gate may say no (no champion yet on the bench's data): the
    # same work was done either way, and deployed_model is skipped in every mode alike.
    if result["status"] != "SUCCESS" and result["failed_steps"] != [GATE]:
        raise RuntimeError(f"training_job failed at {result['failed_steps']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="flights", help="bundled spec name or YAML path (default flights)")
    parser.add_argument("--start", default="2013-01-01")
    parser.add_argument("--days", type=int, default=35, help="days landed and built (the spec's window + holdout)")
    parser.add_argument("--prepare", nargs=2, metavar=("FIRST", "LAST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(*args.prepare)
        return

    from ml_assets.ops.celery_workers import start_workers, worker_names
    from ml_assets.ops.postgres import PostgresServer, new_password
    from ml_assets.ops.processes import stop_groups
    from ml_assets.ops.redis import RedisServer

    first = dt.date.fromisoformat(args.start)
    last = first + dt.timedelta(days=args.days - 1)
    work = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    logs = work / "logs"
    logs.mkdir()
    redis = RedisServer.start()
    postgres = PostgresServer.start(durable=False)
    workers: dict = {}
    try:
        password = new_password()
        postgres.create_user("bench", password)
        postgres.create_database("bench", owner="bench")
        home = work / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text((REPO / "deploy" / "dagster.postgres.yaml").read_text())
        base = {k: v for k, v in os.environ.items() if not k.startswith(("ML_ASSETS_", "AZURE_STORAGE_", "SMTP_"))}
        base.update({
            "DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "DAGSTER_POSTGRES_HOSTNAME": postgres.host, "DAGSTER_POSTGRES_PORT": str(postgres.port),
            "DAGSTER_POSTGRES_USER": "bench", "DAGSTER_POSTGRES_PASSWORD": password, "DAGSTER_POSTGRES_DB": "bench",
            "ML_ASSETS_ENV": "local", "ML_ASSETS_SPEC": args.spec,
            "ML_ASSETS_STORE_ROOT": str(work / "store"), "ML_ASSETS_CACHE_DIR": str(work / "cache"),
            "ML_ASSETS_OUTBOX_DIR": str(work / "outbox"), "ML_ASSETS_SPARK_CONF": json.dumps(SPARK_CONF),
            "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
        })
        in_process = {**base, "ML_ASSETS_EXECUTOR": "in_process"}
        celery = {**base, "ML_ASSETS_EXECUTOR": "celery", "ML_ASSETS_CELERY_BROKER_URL": redis.db_url(0),
                  "ML_ASSETS_CELERY_BACKEND_URL": redis.db_url(1), "ML_ASSETS_CELERY_WORKER_CONCURRENCY": "1"}
        prep_s = run([str(BIN / "ml-assets"), "land", "--spec", args.spec, "--start", first.isoformat(),
                      "--end", last.isoformat()], in_process, logs / "setup.log")
        prep_s += run([sys.executable, __file__, "--prepare", first.isoformat(), last.isoformat()], in_process,
                      logs / "setup.log")
        job = [str(BIN / "dagster"), "job", "execute", "-m", "ml_assets.definitions", "-j", "training_job"]
        results = {}
        wall = run(job, in_process, logs / "in_process.log", may_fail=True)
        results["in_process"] = {"wall_s": wall, **last_training_run(in_process)}
        workers = start_workers(worker_names(WORKERS), env=celery, log_dir=logs, cwd=home)
        for name in ("celery_cold", "celery_warm"):
            wall = run(job, celery, logs / f"{name}.log", may_fail=True)
            results[name] = {"wall_s": wall, **last_training_run(celery)}
        reference = results["in_process"]
        report = {
            "benchmark": "training_job: Celery (2 workers, concurrency 1) vs in process",
            "spec": args.spec, "days": [first.isoformat(), last.isoformat()], "setup_s": round(prep_s, 1),
            **results,
            "ratio_wall_celery_cold_over_in_process": round(results["celery_cold"]["wall_s"] / reference["wall_s"], 3),
            "ratio_wall_celery_warm_over_in_process": round(results["celery_warm"]["wall_s"] / reference["wall_s"], 3),
            "ratio_run_celery_cold_over_in_process": round(results["celery_cold"]["run_s"] / reference["run_s"], 3),
            "ratio_run_celery_warm_over_in_process": round(results["celery_warm"]["run_s"] / reference["run_s"], 3),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        }
    finally:
        stop_groups(list(workers.values()))
        postgres.stop()
        redis.stop()
    text = json.dumps(report, indent=2)
    print(text)
    results_dir = REPO / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "celery.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
