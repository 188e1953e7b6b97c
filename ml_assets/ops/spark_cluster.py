"""A Spark standalone cluster (one master, N workers) from the pip-installed pyspark (no dagster import).

The pyspark wheel ships `bin/spark-class`, not `sbin/start-*.sh`: each daemon is started as
`$SPARK_HOME/bin/spark-class org.apache.spark.deploy.{master.Master,worker.Worker} ...` with
SPARK_HOME = the pyspark package folder, in its own process group, on free loopback ports. Each
worker offers a bounded number of cores and memory and has its own work, local (shuffle) and
temp folders. `start()` returns once the master's web UI (`/json/`) lists every worker as ALIVE.

`hide` (tests): folders the workers must not see. Each worker then runs under
`unshare --mount --propagation private` with an empty private tmpfs mounted over each of those
folders, so an executor that opens a path only the driver can see fails with "file not found"
instead of quietly reading the driver's copy (needs root, as mount namespaces do).

CLI for users (`make spark-up` / `make spark-down`):
    python -m ml_assets.ops.spark_cluster up   [--dir .data/spark] [--workers 2] [--cores 1] [--memory 1g]
    python -m ml_assets.ops.spark_cluster down [--dir .data/spark]
`up` prints the master URL (set ML_ASSETS_SPARK_MASTER to it) and records the PIDs in
<dir>/cluster.json; `down` stops those process groups.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ml_assets.ops.processes import free_port, group_members, spawn, stop_groups, wait_until

MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
STATE_FILE = "cluster.json"
# Heap of each daemon (master, worker); executors get their own heap within the worker's memory.
DAEMON_MEMORY = "256m"


def spark_home() -> Path:
    """The installed pyspark package folder, which holds bin/spark-class and jars/."""
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise RuntimeError("pyspark is not installed in this Python: cannot start a Spark standalone cluster")
    home = Path(spec.origin).parent
    if not (home / "bin" / "spark-class").is_file():
        raise RuntimeError(f"{home}/bin/spark-class is missing: this pyspark install cannot run daemons")
    return home


@dataclass
class SparkStandalone:
    """A running master and its workers; `stop()` ends every process group it started."""

    base_dir: Path
    host: str = "127.0.0.1"
    workers: int = 2
    cores: int = 1
    memory: str = "1g"
    hide: Sequence[Path] = ()
    master_port: int = 0
    webui_port: int = 0
    processes: list[subprocess.Popen] = field(default_factory=list, repr=False)

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.master_port}"

    @property
    def webui_url(self) -> str:
        return f"http://{self.host}:{self.webui_port}"

    def spark_conf(self, executor_memory: str = "512m") -> dict[str, str]:
        """Driver settings that use every worker: one executor per worker, one core each."""
        return {
            "spark.master": self.master_url,
            "spark.executor.cores": str(self.cores),
            "spark.cores.max": str(self.cores * self.workers),
            "spark.executor.memory": executor_memory,
            # Tables live on a shared store, not on the workers' disks: there is no data locality
            # to wait for, and the default 3 s wait per locality level stalls every stage.
            "spark.locality.wait": "0s",
        }

    def _env(self, name: str) -> dict[str, str]:
        home = spark_home()
        scratch = self.base_dir / name
        for sub in ("work", "local", "tmp", "logs"):
            (scratch / sub).mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "SPARK_HOME": str(home),
            "SPARK_LOCAL_IP": self.host,
            "SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
            "SPARK_LOG_DIR": str(scratch / "logs"),
            "SPARK_WORKER_DIR": str(scratch / "work"),
            # Executors inherit these: shuffle/spill files and temp files stay in this worker's folders.
            "SPARK_LOCAL_DIRS": str(scratch / "local"),
            "TMPDIR": str(scratch / "tmp"),
            "SPARK_WORKER_OPTS": f"-Djava.io.tmpdir={scratch / 'tmp'}",
        }
        env.setdefault("PYSPARK_PYTHON", sys.executable)
        return env

    def _class_argv(self, main: str, *args: str) -> list[str]:
        return [str(spark_home() / "bin" / "spark-class"), main, *args]

    def _isolated(self, argv: list[str]) -> list[str]:
        if not self.hide:
            return argv
        if os.geteuid() != 0:
            raise RuntimeError("hiding folders from Spark workers needs a mount namespace: run as root")
        if shutil.which("unshare") is None:
            raise RuntimeError("hiding folders from Spark workers needs `unshare` (util-linux)")
        mounts = " && ".join(f"mount -t tmpfs -o size=16m,mode=0700 ml-assets-hidden {shlex.quote(str(p))}"
                             for p in self.hide)
        script = f"{mounts} && exec {shlex.join(argv)}"
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]

    def start(self, timeout_s: float = 120.0) -> SparkStandalone:
        self.base_dir = Path(self.base_dir).resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for path in self.hide:
            Path(path).mkdir(parents=True, exist_ok=True)
        self.master_port = self.master_port or free_port(self.host)
        self.webui_port = self.webui_port or free_port(self.host)
        try:
            master_log = self.base_dir / "master" / "logs" / "master.out"
            master = spawn(
                self._class_argv(MASTER_CLASS, "--host", self.host, "--port", str(self.master_port),
                                 "--webui-port", str(self.webui_port)),
                log_path=master_log, env=self._env("master"),
            )
            self.processes.append(master)
            wait_until(lambda: self._status() is not None, what=f"Spark master {self.master_url}",
                       timeout=timeout_s, process=master, log_path=master_log)
            logs = []
            for index in range(self.workers):
                name = f"worker-{index + 1}"
                log = self.base_dir / name / "logs" / "worker.out"
                env = self._env(name)
                argv = self._class_argv(
                    WORKER_CLASS, self.master_url, "--host", self.host, "--port", str(free_port(self.host)),
                    "--webui-port", str(free_port(self.host)), "--cores", str(self.cores),
                    "--memory", self.memory, "--work-dir", env["SPARK_WORKER_DIR"],
                )
                self.processes.append(spawn(self._isolated(argv), log_path=log, env=env))
                logs.append(log)
            for process, log in zip(self.processes[1:], logs, strict=True):
                wait_until(lambda: self.alive_workers() >= self.workers,
                           what=f"{self.workers} Spark workers registered at {self.master_url}",
                           timeout=timeout_s, process=process, log_path=log)
        except BaseException:
            self.stop()
            raise
        return self

    def _status(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"{self.webui_url}/json/", timeout=2) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def alive_workers(self) -> int:
        status = self._status() or {}
        return int(status.get("aliveworkers", 0))

    def stop(self) -> None:
        """Workers first (their executors go with them), then the master."""
        stop_groups(self.processes[1:][::-1], timeout=20)
        stop_groups(self.processes[:1], timeout=20)
        self.processes.clear()

    def __enter__(self) -> SparkStandalone:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _stop_recorded(pgids: list[int], timeout: float = 20.0) -> None:
    """SIGTERM each recorded process group, SIGKILL what is left after `timeout` s."""
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(group_members(p) for p in pgids):
        time.sleep(0.2)
    for pgid in pgids:
        if group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_assets.ops.spark_cluster",
                                     description="Start or stop a local Spark standalone cluster.")
    parser.add_argument("command", choices=("up", "down"))
    parser.add_argument("--dir", default=".data/spark", help="state, logs and worker folders")
    parser.add_argument("--host", default="127.0.0.1", help="address the master and workers bind to")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1, help="cores per worker")
    parser.add_argument("--memory", default="1g", help="memory per worker (executors share it)")
    parser.add_argument("--port", type=int, default=7077, help="master port (0: a free one)")
    parser.add_argument("--webui-port", type=int, default=8080, help="master web UI port (0: a free one)")
    args = parser.parse_args(argv)
    base = Path(args.dir).resolve()
    state = base / STATE_FILE
    if args.command == "down":
        if not state.exists():
            print(f"no cluster recorded in {state}")
            return 0
        _stop_recorded(json.loads(state.read_text())["pids"])
        state.unlink()
        print("Spark standalone cluster stopped")
        return 0
    if state.exists():
        recorded = json.loads(state.read_text())
        if any(group_members(p) for p in recorded["pids"]):
            print(f"already running: {recorded['master_url']} (stop it with `down --dir {args.dir}`)",
                  file=sys.stderr)
            return 1
    cluster = SparkStandalone(base, host=args.host, workers=args.workers, cores=args.cores,
                              memory=args.memory, master_port=args.port, webui_port=args.webui_port)
    cluster.start()
    state.write_text(json.dumps({"master_url": cluster.master_url, "webui_url": cluster.webui_url,
                                 "pids": [p.pid for p in cluster.processes]}, indent=2))
    print(f"Spark master {cluster.master_url} (web UI {cluster.webui_url}), {args.workers} workers x "
          f"{args.cores} core(s), {args.memory}")
    print(f"export ML_ASSETS_SPARK_MASTER={cluster.master_url}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
