"""The three Dagster services as a team deploys them, each its own process (no `dagster dev`).

- code server: `dagster code-server start -m ml_assets.definitions` (gRPC; loads the code location
  and launches the runs);
- daemon: `dagster-daemon run -w deploy/workspace.yaml` (sensors, schedules, run queue, automation);
- webserver: `dagster-webserver -w deploy/workspace.yaml` (UI and GraphQL);
- cluster profile only: Celery workers, `python -m ml_assets.defs.celery worker --name worker-N`
  (`up --celery-workers 2`; ml_assets/ops/celery_workers.py), which run the steps.

`start()` launches them in their own process groups and waits until they answer;
`python -m ml_assets.services up` runs them in the foreground (`make up`) and stops all three on
SIGTERM/SIGINT. Plain module: dagster is only ever run as child processes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ml_assets.ops.celery_workers import ROLE_PREFIX, start_workers, worker_names
from ml_assets.ops.processes import (
    descendants,
    free_port,
    is_running,
    spawn,
    stop_groups,
    wait_until,
)
from ml_assets.ops.service_checks import (
    check_role,
    environ_of,
    grpc_serving,
    http_ok,
    running_roles,
    script,
)

__all__ = ["ROLES", "Services", "child_env", "running_roles", "service_commands", "start", "workspace_file"]

ROLES = ("code-server", "daemon", "webserver")
LOCATION_NAME = "ml_assets"
DEFINITIONS_MODULE = "ml_assets.definitions"
WORKSPACE = Path(__file__).resolve().parents[1] / "deploy" / "workspace.yaml"
# Env vars deploy/workspace.yaml reads to find the code server.
HOST_VAR, PORT_VAR = "ML_ASSETS_CODE_SERVER_HOST", "ML_ASSETS_CODE_SERVER_PORT"
# Loading the code location takes a few seconds; far more on a loaded 2-core machine.
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 8.0
# `up` writes its PID there, so `down` (make down) can stop it from another shell.
PID_FILE = "services.pid"


def workspace_file() -> Path:
    """ML_ASSETS_WORKSPACE, else deploy/workspace.yaml of the source tree."""
    path = Path(os.environ.get("ML_ASSETS_WORKSPACE", WORKSPACE))
    if not path.is_file():
        raise FileNotFoundError(f"workspace file {path} not found (set ML_ASSETS_WORKSPACE)")
    return path


@dataclass
class Services:
    host: str
    grpc_port: int
    webserver_port: int | None
    workspace: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    @property
    def webserver_url(self) -> str | None:
        return None if self.webserver_port is None else f"http://{self.host}:{self.webserver_port}"

    @property
    def pids(self) -> dict[str, int]:
        return {role: process.pid for role, process in self.processes.items()}

    def exited(self) -> dict[str, int]:
        """Roles whose process has exited, with the exit code."""
        return {role: p.returncode for role, p in self.processes.items() if p.poll() is not None}

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM each process group, SIGKILL what is left after `timeout` s; reap everything."""
        # The webserver and daemon first would be politer, but in parallel the whole stop fits
        # in one timeout; runs in flight (children of the code server) are killed with it.
        stop_groups(list(self.processes.values()), timeout=timeout)

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def service_commands(host: str, grpc_port: int, webserver_port: int, workspace: Path | str,
                     script: Callable[[str], str] = str,
                     definitions: str = DEFINITIONS_MODULE) -> dict[str, list[str]]:
    """Each role's command line; docker-compose.yml runs the same ones (a test compares them).

    `definitions` is a module name, or a .py file (bench/ serves a no-op location that way).
    """
    target = ["-f", definitions] if definitions.endswith(".py") else ["-m", definitions]
    return {
        "code-server": [script("dagster"), "code-server", "start", *target,
                        "-h", host, "-p", str(grpc_port), "--location-name", LOCATION_NAME],
        "daemon": [script("dagster-daemon"), "run", "-w", str(workspace)],
        "webserver": [script("dagster-webserver"), "-w", str(workspace), "-h", host,
                      "-p", str(webserver_port)],
    }


def child_env(home: Path, host: str, grpc_port: int, env: Mapping[str, str] | None) -> dict[str, str]:
    merged = {**os.environ, **(env or {})}
    merged.update({"DAGSTER_HOME": str(home), HOST_VAR: host, PORT_VAR: str(grpc_port)})
    merged.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    return merged


def start(
    home: Path | str, *, env: Mapping[str, str] | None = None, host: str = "127.0.0.1",
    webserver_port: int | None = None, grpc_port: int | None = None,
    roles: Iterable[str] = ROLES, log_dir: Path | str | None = None,
    ready_timeout: float = READY_TIMEOUT_S, definitions: str = DEFINITIONS_MODULE,
    celery_workers: int = 0,
) -> Services:
    """Start the given roles on DAGSTER_HOME=`home`; free ports when None; wait until they answer.

    Without the code-server role, `grpc_port` names an already running code server.
    `celery_workers` > 0 also starts that many Celery workers (worker-1..N; the cluster profile,
    ML_ASSETS_EXECUTOR=celery with the broker URL in `env`), roles `celery-worker-1`...
    """
    home = Path(home).resolve()
    roles = tuple(roles)
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown service role(s) {sorted(unknown)}; choose from {list(ROLES)}")
    if not (home / "dagster.yaml").is_file():
        raise FileNotFoundError(f"DAGSTER_HOME {home} has no dagster.yaml: run `make home` "
                                "(or copy dagster.yaml / deploy/dagster.postgres.yaml there)")
    if "code-server" not in roles and grpc_port is None:
        raise ValueError("grpc_port is required when the code-server role is not started here")
    grpc_port = grpc_port or free_port(host)
    webserver_port = (webserver_port or free_port(host)) if "webserver" in roles else None
    logs = Path(log_dir) if log_dir is not None else home / "logs"
    workspace = workspace_file()
    run_env = child_env(home, host, grpc_port, env)
    services = Services(host=host, grpc_port=grpc_port, webserver_port=webserver_port,
                        workspace=workspace)
    commands = service_commands(host, grpc_port, webserver_port or 0, workspace, script=script,
                                definitions=definitions)
    try:
        names = worker_names(celery_workers)
        for name in names:  # they load Dagster while the code server starts; ready-checked below
            services.logs[ROLE_PREFIX + name] = logs / f"{ROLE_PREFIX}{name}.log"
        for role in ROLES:
            if role not in roles:
                continue
            services.logs[role] = logs / f"{role}.log"
            services.processes[role] = spawn(commands[role], log_path=services.logs[role],
                                             env=run_env, cwd=home)
            if role == "code-server":
                # The daemon and webserver would come up with the location in error otherwise.
                wait_until(lambda: grpc_serving(host, grpc_port, run_env),
                           what=f"code server on {host}:{grpc_port}", timeout=ready_timeout,
                           process=services.processes[role], log_path=services.logs[role],
                           interval=0.5)
        if "webserver" in roles:
            wait_until(lambda: http_ok(f"{services.webserver_url}/server_info"),
                       what=f"webserver on {services.webserver_url}", timeout=ready_timeout,
                       process=services.processes["webserver"], log_path=services.logs["webserver"])
        if "daemon" in roles and services.processes["daemon"].poll() is not None:
            wait_until(lambda: False, what="dagster-daemon", timeout=0,
                       process=services.processes["daemon"], log_path=services.logs["daemon"])
        if names:
            workers = start_workers(names, env=run_env, log_dir=logs, cwd=home, ready_timeout=ready_timeout)
            services.processes |= {ROLE_PREFIX + name: process for name, process in workers.items()}
    except BaseException:
        services.stop()
        raise
    return services


class _StopDuringStart(Exception):
    """SIGTERM/SIGINT arrived while the services were still starting."""


def _up(args: argparse.Namespace) -> int:
    home = Path(args.home or os.environ.get("DAGSTER_HOME", ""))
    if not str(home):
        print("error: DAGSTER_HOME is not set and --home not given (run `make up`)", file=sys.stderr)
        return 2
    stop_requested = threading.Event()
    received: list[str] = []
    starting = True

    def request_stop(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop_requested.set()
        if starting:
            # start() stops what it already started when this propagates through it.
            raise _StopDuringStart(received[-1])

    pid_file = home / PID_FILE
    other = _running_pid(pid_file)
    if other is not None:
        print(f"error: services already up in {home} (pid {other}); `make down` stops them",
              file=sys.stderr)
        return 1
    # Written before starting, so `down` also works while the services are still coming up.
    pid_file.write_text(f"{os.getpid()}\n")
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    services = None
    try:
        services = start(home, host=args.host, webserver_port=args.port, grpc_port=args.grpc_port,
                         roles=args.roles.split(","), log_dir=args.log_dir,
                         celery_workers=args.celery_workers)
        starting = False
    except _StopDuringStart as stop:
        if services is not None:  # the signal came just after start() returned
            services.stop()
        pid_file.unlink(missing_ok=True)
        print(f"{stop} received while starting: stopped", flush=True)
        return 0
    except BaseException:
        pid_file.unlink(missing_ok=True)
        raise
    try:
        print(json.dumps({"webserver": services.webserver_url, "grpc_port": services.grpc_port,
                          "pids": services.pids, "logs": {k: str(v) for k, v in services.logs.items()},
                          "dagster_home": str(home)}), flush=True)
        print(f"ml_assets services up; stop with Ctrl-C or `kill {os.getpid()}`", flush=True)
        while not stop_requested.wait(1.0):
            exited = services.exited()
            if exited:
                print(f"error: service(s) exited on their own: {exited}; stopping the rest "
                      f"(logs: {services.logs})", file=sys.stderr, flush=True)
                return 1
        print(f"{received[0]} received: stopping {', '.join(services.processes)}", flush=True)
        return 0
    finally:
        started = time.monotonic()
        services.stop()
        pid_file.unlink(missing_ok=True)
        leftovers = descendants(os.getpid())
        print(f"stopped in {time.monotonic() - started:.1f} s"
              + (f"; still alive: {leftovers}" if leftovers else ""), flush=True)


def _running_pid(pid_file: Path) -> int | None:
    """The PID in `pid_file` if that process is still an `ml_assets.services up`, else None."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    return pid if b"ml_assets.services" in cmdline and b"up" in cmdline else None


def _down(args: argparse.Namespace) -> int:
    home = Path(args.home or os.environ.get("DAGSTER_HOME", ""))
    pid = _running_pid(home / PID_FILE)
    if pid is None:
        print(f"no ml_assets services up in {home}")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while is_running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if is_running(pid):
        print(f"error: services (pid {pid}) still running after {args.timeout:.0f} s",
              file=sys.stderr)
        return 1
    print(f"stopped ml_assets services (pid {pid})")
    return 0


def _health(args: argparse.Namespace) -> int:
    roles = running_roles(args.under)
    if args.role:
        roles = {r: found for r, found in roles.items() if r == args.role}
    if not roles:
        print(f"unhealthy: no {args.role or 'Dagster service'} process running here", file=sys.stderr)
        return 1
    problems = [problem for role, (pid, argv) in roles.items()
                if (problem := check_role(role, argv, environ_of(pid)))]
    for problem in problems:
        print(f"unhealthy: {problem}", file=sys.stderr)
    if not problems:
        print("healthy: " + ", ".join(sorted(roles)))
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_assets.services", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the services in the foreground until SIGTERM/SIGINT")
    up.add_argument("--home", help="DAGSTER_HOME (default: $DAGSTER_HOME)")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=3000, help="webserver port (default 3000)")
    up.add_argument("--grpc-port", type=int, default=4000, help="code server port (default 4000)")
    up.add_argument("--roles", default=",".join(ROLES), help=f"comma-separated subset of {ROLES}")
    up.add_argument("--log-dir", help="service logs (default: $DAGSTER_HOME/logs)")
    up.add_argument("--celery-workers", type=int, default=0,
                    help="also start N Celery workers (cluster profile: ML_ASSETS_EXECUTOR=celery)")
    down = sub.add_parser("down", help="stop the services that `up` started on this DAGSTER_HOME")
    down.add_argument("--home", help="DAGSTER_HOME (default: $DAGSTER_HOME)")
    down.add_argument("--timeout", type=float, default=15.0)
    health = sub.add_parser("health", help="exit 0 when the services running here answer "
                            "(the Docker image's HEALTHCHECK)")
    health.add_argument("--role", choices=ROLES, help="check only this role")
    health.add_argument("--under", type=int, help="only services started by this PID (e.g. `up`)")
    args = parser.parse_args(argv)
    return {"up": _up, "down": _down, "health": _health}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
