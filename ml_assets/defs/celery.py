"""Distributed execution on Celery (the cluster profile): the executor and its workers.

ML_ASSETS_EXECUTOR=celery makes every job's executor dagster-celery's `celery_executor`: the run's
process only orchestrates; each step becomes a Celery task on the broker (Redis or RabbitMQ) and
runs in a `dagster-celery worker` process, which loads the code location, the run and the instance
(from the run's instance ref: the same PostgreSQL) itself. The embedded profile keeps
`in_process_executor` (one Spark session per run, no broker).

Workers: `python -m ml_assets.defs.celery worker --name worker-1` writes the worker's config YAML
(the same broker, backend and Celery settings as the executor, from ml_assets/defs/settings.py;
URLs as env references) and becomes the Celery worker `dagster-celery worker start` would run
(`celery -A dagster_celery.app worker -Q dagster -n worker-1@<host> --concurrency N ...`). Unlike
that command, it never writes the resolved broker URL (password included) into a new file under
$DAGSTER_HOME/dagster_celery/config/ at each start: `dagster_celery_config`, the module dagster-celery's
app reads its settings from, is built in memory from the YAML and the environment (worker_app_config).
N (ML_ASSETS_CELERY_WORKER_CONCURRENCY, default 1) is the number of steps, hence of training steps,
one worker runs at once: each is a long-lived pool process that keeps its Spark session and
TensorFlow between steps. `... ping --name worker-1` exits 0 when that worker answers (health check).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
from pathlib import Path

import dagster as dg

from ml_assets.defs.settings import CelerySettings, celery_settings, executor_name

# dagster-celery's task name and its one queue (dagster_celery.make_app routes every task there).
QUEUE = "dagster"
EXECUTE_PLAN_TASK = "execute_plan"
CELERY_APP = "dagster_celery.app"
BROKER_VAR, BACKEND_VAR = "ML_ASSETS_CELERY_BROKER_URL", "ML_ASSETS_CELERY_BACKEND_URL"
# The worker's YAML, for the `dagster_celery_config` module its Celery app imports (see worker_app_config).
WORKER_YAML_VAR = "ML_ASSETS_CELERY_WORKER_YAML"
# That module: a line of code on the worker's PYTHONPATH, no setting and no secret in it.
CONFIG_MODULE_SOURCE = (
    "# Celery settings of this worker, built from $ML_ASSETS_CELERY_WORKER_YAML and the environment.\n"
    "from ml_assets.defs.celery import worker_app_config as _settings\n\n"
    "globals().update(_settings())\n"
)


def celery_app_settings(settings: CelerySettings) -> dict:
    """Celery settings the executor (submitting) and the workers (consuming) must share."""
    # Why acks late + reject on worker lost (and not Dagster step retries alone): a step whose
    # worker dies never reports back, so Dagster sees neither a failure to retry nor a success;
    # dagster-celery would wait for the result forever. With early acks (Celery's default) the
    # message is already gone and the run hangs. Acknowledging after the step ran leaves the
    # message on the broker while it runs: if the pool process running it dies (OOM kill, crash),
    # reject_on_worker_lost puts it back at once; if the whole worker is lost, RabbitMQ requeues
    # it when the connection drops and Redis after `visibility_timeout`. Another worker then runs
    # the step again from its start (a step never half-commits: its materialization is the last
    # thing it records). Dagster's RetryPolicy still handles steps that fail (store errors).
    # Prefetch 1: a worker holds only the step it runs, so queued steps go to the idle worker.
    interval = max(1, min(10, settings.visibility_timeout_s // 10))
    return {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # dagster-celery's publish retries (its defaults, replaced as a whole by this dict).
            "max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
            # Redis only (RabbitMQ ignores them): when a lost worker's step is handed back, and
            # how often the live workers look for such steps.
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": interval,
            "unacked_restore_throttle": 1,
        },
        "result_expires": 7 * 24 * 3600,
    }


def executor_config(settings: CelerySettings) -> dict:
    """The `celery_executor` config (also the `execution.config` block of the workers' YAML)."""
    return {"broker": settings.broker_url, "backend": settings.backend_url,
            "config_source": celery_app_settings(settings)}


def executor_for_environment() -> dg.ExecutorDefinition:
    """in_process_executor, or the Celery executor when ML_ASSETS_EXECUTOR=celery."""
    if executor_name() == "in_process":
        # Steps of a run share one process and so one Spark session; the multiprocess default
        # would start a JVM per step.
        return dg.in_process_executor
    from dagster_celery import celery_executor

    return celery_executor.configured(executor_config(celery_settings()), name="celery")


def nodename(name: str) -> str:
    """The worker's Celery node name: dagster-celery starts it as `<name>@<host>`."""
    return f"{name}@{socket.gethostname()}"


def worker_yaml(settings: CelerySettings) -> str:
    """The worker's `execution.config`; URLs as env references (they may hold a password)."""
    import yaml

    config = executor_config(settings)
    config["broker"] = {"env": BROKER_VAR}
    if settings.backend_url == settings.broker_url:
        config["backend"] = {"env": BROKER_VAR}
    elif "://" in settings.backend_url and settings.backend_url != "rpc://":
        config["backend"] = {"env": BACKEND_VAR}
    return yaml.safe_dump({"execution": {"config": config}}, sort_keys=True)


def _script(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"`{name}` not found beside {sys.executable} nor on PATH: install the project")
    return found


def worker_command(name: str, concurrency: int, loglevel: str = "INFO") -> list[str]:
    """The Celery worker `dagster-celery worker start -A dagster_celery.app -n <name> -q dagster` runs."""
    return [_script("celery"), "-A", CELERY_APP, "worker", "--prefetch-multiplier=1", "--loglevel", loglevel,
            "-Q", QUEUE, "-n", f"{name}@%h", f"--concurrency={concurrency}", "--pool=prefork", "--task-events"]


def worker_app_config(config_yaml: str | None = None) -> dict:
    """The settings `dagster-celery worker start` writes into its config module, from the worker's YAML
    (default $ML_ASSETS_CELERY_WORKER_YAML) validated by dagster-celery, env references resolved."""
    from dagster_celery.cli import get_validated_config

    path = config_yaml or os.environ.get(WORKER_YAML_VAR)
    if not path:
        raise RuntimeError(f"{WORKER_YAML_VAR} is not set: start workers with `python -m {__name__} worker`")
    validated = get_validated_config(path)
    settings: dict = {}
    if validated.get("broker"):
        settings["broker_url"] = str(validated["broker"])
    if validated.get("backend"):
        settings["result_backend"] = str(validated["backend"])
    settings.update(validated.get("config_source") or {})
    # Runs in the worker before each step task: a step whose process dies every time stops being redelivered.
    settings["task_annotations"] = {EXECUTE_PLAN_TASK: {"before_start": refuse_lost_step_again}}
    return settings


class StepDeliveryLimitError(RuntimeError):
    """A step was started ML_ASSETS_CELERY_MAX_DELIVERIES times by workers lost before it ended."""


def worker_starts(instance: dg.DagsterInstance, run_id: str, step_key: str) -> int:
    """Times a worker began `step_key` since the executor last submitted it (from the run's engine events:
    the executor's "Submitting celery task" and each worker's "Executing steps ... in celery worker")."""
    from dagster_celery.core_execution_loop import DELEGATE_MARKER

    starts = 0
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        if entry.step_key != step_key or entry.dagster_event is None:
            continue
        data = entry.dagster_event.engine_event_data
        if data.marker_start == DELEGATE_MARKER:
            starts = 0  # submitted (again: a Dagster retry is a new task with its own deliveries)
        elif data.marker_end == DELEGATE_MARKER and "Celery worker" in data.metadata:
            starts += 1
    return starts


def refuse_lost_step_again(task, task_id: str, args: tuple, kwargs: dict) -> None:
    """Celery `before_start` of dagster-celery's step task: fail the task instead of starting a step that
    workers already began max_deliveries times without finishing (acks late + reject on worker lost would
    otherwise hand a step that kills its process back forever). The executor then fails the run with
    this message; a step that raises is not concerned (it ends, and Dagster's retry policy applies)."""
    from dagster._grpc.types import ExecuteStepArgs
    from dagster._serdes import unpack_value

    packed = args[0] if args else kwargs["execute_step_args_packed"]
    step_args = unpack_value(packed, as_type=ExecuteStepArgs)
    keys = list(step_args.step_keys_to_execute or [])
    if not keys or step_args.instance_ref is None:
        return
    limit = celery_settings().max_deliveries
    with dg.DagsterInstance.from_ref(step_args.instance_ref) as instance:
        starts = worker_starts(instance, step_args.run_id, keys[0])
        if starts < limit:
            return
        message = (f'step "{keys[0]}" of run {step_args.run_id} was started {starts} times by Celery workers '
                   f"that were lost before it ended (its process killed or crashed each time); it is not "
                   f"started again (ML_ASSETS_CELERY_MAX_DELIVERIES={limit})")
        run = instance.get_run_by_id(step_args.run_id)
        if run is not None:  # the step's own record of why it ends here
            instance.report_engine_event(message, run, step_key=keys[0])
    raise StepDeliveryLimitError(message)


def prepare_worker(name: str, home: Path, concurrency: int, loglevel: str = "INFO") -> tuple[list[str], dict[str, str]]:
    """The worker's files under home/celery (its YAML, the config module's folder) and its argv and env."""
    folder = home / "celery"
    config_yaml = folder / f"{name}.yaml"
    module_dir = folder / "app_config"
    module_dir.mkdir(parents=True, exist_ok=True)
    config_yaml.write_text(worker_yaml(celery_settings()))
    (module_dir / "dagster_celery_config.py").write_text(CONFIG_MODULE_SOURCE)
    env = dict(os.environ)
    env[WORKER_YAML_VAR] = str(config_yaml)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(module_dir), env.get("PYTHONPATH", "")) if p)
    # This environment's `celery`, not another one on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return worker_command(name, concurrency, loglevel), env


def ping(settings: CelerySettings, names: list[str], timeout: float = 2.0) -> set[str]:
    """Node names among `names` that answer a broadcast ping within `timeout` s."""
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app

    app = make_app(CeleryExecutor.for_cli(broker=settings.broker_url, backend=settings.backend_url,
                                          config_source=celery_app_settings(settings)).app_args())
    try:
        replies = app.control.ping(destination=[nodename(n) for n in names], timeout=timeout) or []
    finally:
        app.close()
    answered = {node for reply in replies for node in reply}
    return {n for n in names if nodename(n) in answered}


def _worker(args: argparse.Namespace) -> int:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        print("error: DAGSTER_HOME is not set: the worker writes its config there", file=sys.stderr)
        return 2
    concurrency = args.concurrency or celery_settings().worker_concurrency
    argv, env = prepare_worker(args.name, Path(home), concurrency, args.loglevel)
    sys.stdout.flush()
    os.execve(argv[0], argv, env)  # same PID and process group: stopping this process stops the worker
    return 1  # not reached


def _ping(args: argparse.Namespace) -> int:
    answered = ping(celery_settings(), [args.name], timeout=args.timeout)
    if args.name in answered:
        print(f"healthy: {nodename(args.name)}")
        return 0
    print(f"unhealthy: {nodename(args.name)} did not answer within {args.timeout:.0f} s", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_assets.defs.celery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run one Celery worker in the foreground")
    worker.add_argument("--name", required=True, help="worker name, unique in the cluster (node name <name>@<host>)")
    worker.add_argument("--concurrency", type=int, help="steps at once (default ML_ASSETS_CELERY_WORKER_CONCURRENCY)")
    worker.add_argument("--loglevel", default="INFO")
    check = sub.add_parser("ping", help="exit 0 when the named worker on this host answers")
    check.add_argument("--name", required=True)
    check.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    return {"worker": _worker, "ping": _ping}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
