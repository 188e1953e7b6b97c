"""Celery worker processes of the cluster profile: command line, start, readiness (no dagster import).

A worker is `python -m ml_assets.defs.celery worker --name <name>`, which writes its config YAML
from the environment and becomes the Celery worker `dagster-celery worker start ... -n <name>` would run
(node `<name>@<host>`), without that command's plaintext copy of the broker URL.
`ml_assets.services` (make up), the test fixture and bench/bench_celery.py start them through here;
docker-compose.yml runs the same command (a test compares them).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ml_assets.ops.processes import spawn, stop_groups, wait_until

WORKER_MODULE = "ml_assets.defs.celery"
ROLE_PREFIX = "celery-"
# A worker imports Celery, Dagster and the code location before it says "ready".
READY_TIMEOUT_S = 180.0


def worker_names(count: int) -> list[str]:
    """worker-1 .. worker-<count>: distinct node names on one host."""
    if count < 0:
        raise ValueError(f"celery worker count must be >= 0, got {count}")
    return [f"worker-{index}" for index in range(1, count + 1)]


def worker_command(name: str, python: str = sys.executable) -> list[str]:
    return [python, "-m", WORKER_MODULE, "worker", "--name", name]


def nodename(name: str) -> str:
    return f"{name}@{socket.gethostname()}"


def ready_in_log(log_path: Path, name: str) -> bool:
    """Celery logs `<node> ready.` once the worker consumes from the broker."""
    try:
        return f"{nodename(name)} ready." in log_path.read_text(errors="replace")
    except OSError:
        return False


def start_workers(names: Sequence[str], *, env: Mapping[str, str], log_dir: Path, cwd: Path | str | None = None,
                  ready_timeout: float = READY_TIMEOUT_S) -> dict[str, subprocess.Popen]:
    """Start one worker per name (each its own process group), wait until each is ready."""
    started: dict[str, subprocess.Popen] = {}
    try:
        for name in names:
            log = log_dir / f"{ROLE_PREFIX}{name}.log"
            log.unlink(missing_ok=True)  # readiness is read from this run's log only
            started[name] = spawn(worker_command(name), log_path=log, env=env, cwd=cwd)
        for name, process in started.items():
            log = log_dir / f"{ROLE_PREFIX}{name}.log"
            wait_until(lambda n=name, p=log: ready_in_log(p, n), what=f"celery worker {nodename(name)}",
                       timeout=ready_timeout, process=process, log_path=log, interval=0.5)
    except BaseException:
        stop_groups(list(started.values()))
        raise
    return started
