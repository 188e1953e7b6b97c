"""Daemon-mode harness: an Azurite we can stop and restart, the Dagster processes, and what the
tests read back from the instance (materialization counts, runs, Spark step intervals, a dump).

Everything here talks to real processes; nothing ticks a sensor in process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SPEC_PATH = Path(__file__).resolve().parent / "flights_e2e.yaml"
HOST = "127.0.0.1"
ACCOUNT_NAME = "devstoreaccount1"
# The documented, public development key every Azurite instance accepts.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# Small Spark for a 2-core machine: one JVM per run process.
SPARK_CONF = {"spark.driver.memory": "1g", "spark.sql.shuffle.partitions": "2", "spark.master": "local[2]"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 60) -> str:
    if not path.exists():
        return f"--- {path}: (no file) ---"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {path} (last {len(text)} lines) ---\n" + "\n".join(text)


def wait_until(ready: Callable[[], object], *, what: str, timeout: float, interval: float = 1.0,
               dump: Callable[[], str] | None = None):
    """Poll `ready()` until it returns something truthy (returned); on timeout raise with a dump."""
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + ("\n" + dump() if dump else ""))
        time.sleep(interval)


def _own_group() -> None:
    # Own process group, so that stop() reaches the run workers the code server spawns; and the
    # default signal handlers even when started from a background job (SIGINT ignored there).
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def spawn(argv: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(env) if env is not None else None, cwd=REPO, preexec_fn=_own_group)


def stop_group(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL it if anything is left after `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGCONT)  # a frozen (SIGSTOPped) process cannot exit
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


# ----------------------------------------------------------------------------------------------
# Azurite that can go away and come back on the same port, with the same data
# ----------------------------------------------------------------------------------------------


def find_azurite_blob() -> str:
    configured = os.environ.get("AZURITE_BLOB_BIN")
    local = REPO / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    if configured:
        return configured
    if local.is_file():
        return str(local)
    from shutil import which

    found = which("azurite-blob")
    if found is None:
        raise RuntimeError("Azurite (azurite-blob) not found: run `make tools`, or set AZURITE_BLOB_BIN")
    return found


@dataclass
class AzuriteServer:
    """One azurite-blob process on a fixed port and data folder; stop/start keeps both."""

    location: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def account_url(self) -> str:
        return f"http://{HOST}:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.account_url};")

    def start(self) -> None:
        self.location.mkdir(parents=True, exist_ok=True)
        self.process = spawn([find_azurite_blob(), "--location", str(self.location), "--blobHost", HOST,
                              "--blobPort", str(self.port), "--disableTelemetry", "--loose",
                              "--skipApiVersionCheck"], self.log_path)
        process = self.process
        wait_until(lambda: port_answers(self.port) or process.poll() is not None,
                   what=f"Azurite on port {self.port}", timeout=30, interval=0.1,
                   dump=lambda: tail(self.log_path))
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited with code {process.returncode}\n{tail(self.log_path)}")

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process, timeout=10)
            self.process = None
        wait_until(lambda: not port_answers(self.port), what=f"port {self.port} to close", timeout=15,
                   interval=0.2)


# ----------------------------------------------------------------------------------------------
# DAGSTER_HOME, environment and the three Dagster processes
# ----------------------------------------------------------------------------------------------


def write_dagster_home(home: Path, storage_yaml: str | None = None) -> Path:
    """The repo's dagster.yaml, plus a storage section (e.g. the PostgreSQL profile) when given."""
    home.mkdir(parents=True, exist_ok=True)
    text = (REPO / "dagster.yaml").read_text()
    if storage_yaml:
        text += "\n" + storage_yaml
    (home / "dagster.yaml").write_text(text)
    return home


def stack_env(*, home: Path, workdir: Path, connection_string: str, container: str,
              spec_path: Path = SPEC_PATH, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of every process (code server, daemon, runs, webserver, `ml-assets serve`)."""
    env = dict(os.environ)
    for name in ("AZURE_STORAGE_ACCOUNT_URL", "AZURE_STORAGE_KEY", "ML_ASSETS_STORE_ROOT", "SMTP_HOST"):
        env.pop(name, None)
    env.update({
        "DAGSTER_HOME": str(home),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "ML_ASSETS_ENV": "azure",
        "AZURE_STORAGE_CONNECTION_STRING": connection_string,
        "ML_ASSETS_CONTAINER": container,
        "ML_ASSETS_SPEC": str(spec_path),
        "ML_ASSETS_CACHE_DIR": str(workdir / "cache"),
        "ML_ASSETS_OUTBOX_DIR": str(workdir / "outbox"),
        "ML_ASSETS_SPARK_CONF": json.dumps(SPARK_CONF),
        "SPARK_LOCAL_IP": HOST,
        "PYSPARK_PYTHON": sys.executable,
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


@dataclass
class DagsterStack:
    """Code server (gRPC), `dagster-daemon run` and optionally `dagster-webserver`, each its own
    process, started as a team deploys them (ml_assets.services)."""

    home: Path
    env: dict[str, str]
    logs: Path
    webserver: bool = False
    services: object | None = None

    @property
    def webserver_url(self) -> str:
        return self.services.webserver_url

    def start(self) -> DagsterStack:
        from ml_assets.services import start

        roles = ("code-server", "daemon", "webserver") if self.webserver else ("code-server", "daemon")
        self.services = start(self.home, env=self.env, roles=roles, log_dir=self.logs)
        return self

    def check_alive(self) -> None:
        exited = self.services.exited()
        if exited:
            raise AssertionError(f"Dagster process(es) exited: {exited}\n{self.log_tails()}")

    def stop(self) -> None:
        if self.services is not None:
            self.services.stop()
            self.services = None

    def log_tails(self, lines: int = 60) -> str:
        return "\n".join(tail(p, lines) for p in sorted(self.logs.glob("*.log")))


@contextlib.contextmanager
def open_instance(env: Mapping[str, str]) -> Iterator:
    """The DagsterInstance of the stack's DAGSTER_HOME (env vars of its storage config set meanwhile)."""
    import dagster as dg

    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            yield instance
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ----------------------------------------------------------------------------------------------
# Reading the instance back
# ----------------------------------------------------------------------------------------------


def materializations(instance, keys: Iterable, restated: bool = False) -> Counter:
    """How many times each (asset, partition) was materialized; partition None if unpartitioned.

    A backfill of a stored raw day restates it (metadata unchanged=true, same data version): those
    events are counted instead of the real ones when `restated` is true."""
    import dagster as dg

    counts: Counter = Counter()
    for key in keys:
        cursor = None
        while True:
            result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1000,
                                                     cursor=cursor, ascending=True)
            for record in result.records:
                flag = record.asset_materialization.metadata.get("unchanged")
                if bool(flag.value if flag is not None else False) == restated:
                    counts[(key.to_user_string(), record.asset_materialization.partition)] += 1
            if not result.has_more:
                break
            cursor = result.cursor
    return counts


def materialized_partitions(instance, key) -> set[str]:
    return set(instance.get_materialized_partitions(key))


def runs_table(instance, limit: int = 200) -> str:
    lines = []
    for run in reversed(instance.get_runs(limit=limit)):
        stats = instance.get_run_stats(run.run_id)
        tags = {k: v for k, v in run.tags.items() if not k.startswith(".dagster")}
        started = dt.datetime.fromtimestamp(stats.start_time).strftime("%H:%M:%S") if stats.start_time else "-"
        lines.append(f"{run.run_id[:8]} {run.status.value:9} start={started} job={run.job_name} "
                     f"assets={sorted(k.to_user_string() for k in run.asset_selection or [])} tags={tags}")
    return "runs (oldest first):\n" + "\n".join(lines)


def failure_messages(instance, limit: int = 20) -> str:
    import dagster as dg
    from dagster._core.events import DagsterEventType

    lines = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]), limit=limit):
        for entry in instance.all_logs(run.run_id, of_type={DagsterEventType.STEP_FAILURE,
                                                            DagsterEventType.RUN_FAILURE}):
            message = entry.message or ""
            info = entry.dagster_event.event_specific_data if entry.dagster_event else None
            error = getattr(info, "error", None)
            if error is not None:
                message += " | " + error.message.strip().splitlines()[-1][:300]
            lines.append(f"{run.run_id[:8]} {entry.step_key or '-'}: {message[:500]}")
    return "failures:\n" + "\n".join(lines)


def sensor_ticks(instance, names: Iterable[str], limit: int = 3) -> str:
    from dagster._core.scheduler.instigation import InstigatorType

    lines = []
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name not in names:
            continue
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=limit):
            error = tick.error.message.strip().splitlines()[-1][:300] if tick.error else ""
            lines.append(f"{state.name}: {tick.status.value} at "
                         f"{dt.datetime.fromtimestamp(tick.timestamp).strftime('%H:%M:%S')} "
                         f"runs={len(tick.run_ids)} skip={tick.skip_reason!r} {error}")
    return "sensor ticks (newest first):\n" + "\n".join(lines)


SENSORS = ("landed_blobs", "data_automation", "retrain_on_drift", "retrain_on_performance")


def dump(instance, stack: DagsterStack | None, counts: Counter | None = None) -> str:
    parts = []
    for part in (lambda: runs_table(instance), lambda: failure_messages(instance),
                 lambda: sensor_ticks(instance, SENSORS)):
        try:
            parts.append(part())
        except Exception as exc:  # a broken dump must not hide the real failure
            parts.append(f"(dump failed: {exc!r})")
    if counts is not None:
        parts.append("materializations: " + json.dumps(sorted(f"{k}[{p}]x{n}" for (k, p), n in counts.items())))
    if stack is not None:
        parts.append(stack.log_tails())
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------------------------
# Spark concurrency, from the event log
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepInterval:
    run_id: str
    step_key: str
    start: float
    end: float


def step_intervals(instance, step_names: set[str]) -> list[StepInterval]:
    """STEP_START .. STEP_SUCCESS/FAILURE (or the run's end) of the named steps in every run."""
    from dagster._core.events import DagsterEventType

    kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE,
             DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED}
    intervals = []
    for run in instance.get_runs(limit=10_000):
        started: dict[str, float] = {}
        run_end = None
        for entry in instance.all_logs(run.run_id, of_type=kinds):
            event = entry.dagster_event.event_type
            if entry.step_key and entry.step_key.split("[")[0] in step_names:
                if event == DagsterEventType.STEP_START:
                    started[entry.step_key] = entry.timestamp
                elif entry.step_key in started:
                    intervals.append(StepInterval(run.run_id, entry.step_key, started.pop(entry.step_key),
                                                  entry.timestamp))
            elif entry.step_key is None and event in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE,
                                                      DagsterEventType.RUN_CANCELED):
                run_end = entry.timestamp
        for step_key, start in started.items():  # a step that never ended holds Spark until its run ended
            intervals.append(StepInterval(run.run_id, step_key, start, run_end or time.time()))
    return sorted(intervals, key=lambda i: i.start)


def overlaps(intervals: list[StepInterval]) -> list[tuple[StepInterval, StepInterval]]:
    """Pairs of intervals of different runs that overlap in time."""
    found = []
    for index, first in enumerate(intervals):
        for second in intervals[index + 1:]:
            if second.start >= first.end:
                break
            if second.run_id != first.run_id:
                found.append((first, second))
    return found


def spark_step_names() -> set[str]:
    """Ops that use Spark: in the Spark pool, needing the pyspark resource, or loading an input
    through the Spark IO manager (a Spark DataFrame)."""

    from ml_assets.definitions import defs

    by_key = defs.get_repository_def().assets_defs_by_key
    names = set()
    for assets_def in by_key.values():
        op = assets_def.node_def
        loaded = [key for name, key in assets_def.keys_by_input_name.items()
                  if not op.input_def_named(name).dagster_type.is_nothing and key in by_key]
        if (getattr(op, "pool", None) == "spark" or "pyspark" in assets_def.required_resource_keys
                or any(by_key[key].get_io_manager_key_for_asset_key(key) == "spark_io" for key in loaded)):
            names.add(op.name)
    return names


def write_postgres_home(home: Path) -> Path:
    """DAGSTER_HOME with the production profile (deploy/dagster.postgres.yaml: PostgreSQL storage
    from the DAGSTER_POSTGRES_* env vars)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((REPO / "deploy" / "dagster.postgres.yaml").read_text())
    return home


# ----------------------------------------------------------------------------------------------
# Waiting for the daemon to have nothing left to do; backfills through the webserver
# ----------------------------------------------------------------------------------------------


def active_work(instance) -> str | None:
    """What is still queued, running or being backfilled; None when nothing is."""
    import dagster as dg
    from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

    running = instance.get_runs(filters=dg.RunsFilter(statuses=[
        dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]))
    if running:
        return f"{len(running)} run(s) not finished"
    backfills = instance.get_backfills(filters=BulkActionsFilter(
        statuses=[BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING, BulkActionStatus.FAILING]))
    if backfills:
        return f"{len(backfills)} backfill(s) in progress"
    return None


def quiet(instance, sensors: Iterable[str] = SENSORS) -> bool:
    """Nothing runs, and every sensor has ticked since the last run ended without requesting a run:
    the daemon has nothing left to do until something new lands."""
    from dagster._core.scheduler.instigation import InstigatorType

    if active_work(instance):
        return False
    records = instance.get_run_records(limit=1, order_by="update_timestamp", ascending=False)
    last_change = records[0].update_timestamp.timestamp() if records else 0.0
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name not in sensors:
            continue
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
        if not ticks or ticks[0].timestamp <= last_change or ticks[0].run_ids or ticks[0].status.value == "STARTED":
            return False
    return not active_work(instance)


LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
  }
}"""


def launch_asset_backfill(webserver_url: str, asset_keys: list[str], partitions: list[str]) -> str:
    """An asset backfill as the UI launches it (GraphQL launchPartitionBackfill); its id."""
    params = {"partitionNames": partitions, "assetSelection": [{"path": [key]} for key in asset_keys],
              "fromFailure": False, "tags": []}
    body = json.dumps({"query": LAUNCH_BACKFILL, "variables": {"params": params}}).encode()
    request = urllib.request.Request(f"{webserver_url}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    result = (answer.get("data") or {}).get("launchPartitionBackfill") or {}
    if result.get("__typename") != "LaunchBackfillSuccess":
        raise AssertionError(f"launchPartitionBackfill failed: {answer}")
    return result["backfillId"]


def http_json(url: str, payload: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def start_model_server(env: Mapping[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """`ml-assets serve` on a free port, as a user starts it; (process, base URL)."""
    port = free_port()
    process = spawn([str(BIN / "ml-assets"), "serve", "--host", HOST, "--port", str(port),
                     "--poll-interval", "1"], log_path, env)
    return process, f"http://{HOST}:{port}"
