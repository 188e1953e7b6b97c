"""The split services (code server, daemon, webserver) as real processes, and their clean stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ml_assets.ops.processes import descendants, free_port, group_members, is_running
from ml_assets.services import start

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration

STATUS_QUERY = """{
  workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } }
  locationStatusesOrError { ... on WorkspaceLocationStatusEntries { entries { name loadStatus } } }
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
}"""


def graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    assert "errors" not in body, body
    return body["data"]


def dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def wait_for_healthy_stack(url: str, deadline_s: float = 120) -> dict:
    """Poll until the location is loaded and every required daemon reports healthy."""
    deadline = time.monotonic() + deadline_s
    while True:
        data = graphql(url, STATUS_QUERY)
        daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        required = [d for d in daemons if d["required"]]
        if (required and all(d["healthy"] for d in required)) or time.monotonic() > deadline:
            return data
        time.sleep(2)


@pytest.mark.parametrize("stop_with", ["SIGTERM", "SIGINT", "down"])
def test_up_serves_the_location_from_the_code_server_and_stops_cleanly(tmp_path, stop_with):
    home = dagster_home(tmp_path)
    port, grpc_port = free_port(), free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "ml_assets.services", "up", "--home", str(home),
         "--port", str(port), "--grpc-port", str(grpc_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env={**os.environ, "DAGSTER_HOME": str(home)},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(up.stdout), daemon=True)
    reader.start()
    tree: list[int] = []
    try:
        while not any(line.startswith("{") for line in lines):
            assert up.poll() is None, "".join(lines)
            time.sleep(0.2)
        info = json.loads(next(line for line in lines if line.startswith("{")))
        assert info["webserver"] == f"http://127.0.0.1:{port}"
        assert set(info["pids"]) == {"code-server", "daemon", "webserver"}

        data = wait_for_healthy_stack(info["webserver"])
        entries = data["workspaceOrError"]["locationEntries"]
        assert [(e["name"], e["loadStatus"]) for e in entries] == [("ml_assets", "LOADED")], entries
        assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation"
        statuses = data["locationStatusesOrError"]["entries"]
        assert [(s["name"], s["loadStatus"]) for s in statuses] == [("ml_assets", "LOADED")]
        daemons = {d["daemonType"]: d["healthy"] for d in
                   data["instance"]["daemonHealth"]["allDaemonStatuses"] if d["required"]}
        assert {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR", "ASSET"} <= set(daemons)
        assert all(daemons.values()), daemons

        # The image's HEALTHCHECK command, restricted to this stack.
        health = subprocess.run([sys.executable, "-m", "ml_assets.services", "health", "--under",
                                 str(up.pid)], capture_output=True, text=True, timeout=120)
        assert health.returncode == 0, health.stdout + health.stderr
        assert health.stdout.strip() == "healthy: code-server, daemon, webserver"

        # The whole tree, e.g. the code server's `dagster api grpc` child, before the stop.
        tree = descendants(up.pid)
        assert set(info["pids"].values()) <= set(tree)
        if stop_with == "down":
            # What `make down` runs, from another process.
            down = subprocess.run([sys.executable, "-m", "ml_assets.services", "down", "--home",
                                   str(home)], capture_output=True, text=True, timeout=60)
            assert down.returncode == 0, down.stdout + down.stderr
            assert f"stopped ml_assets services (pid {up.pid})" in down.stdout
        else:
            up.send_signal(getattr(signal, stop_with))
        assert up.wait(timeout=60) == 0, "".join(lines)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    reader.join(timeout=10)
    assert not [pid for pid in tree if is_running(pid)], "".join(lines)
    assert not any(group_members(pid) for pid in info["pids"].values())
    expected = "SIGTERM" if stop_with == "down" else stop_with
    assert f"{expected} received" in "".join(lines)
    health = subprocess.run([sys.executable, "-m", "ml_assets.services", "health", "--under",
                             str(os.getpid())], capture_output=True, text=True, timeout=60)
    assert health.returncode == 1
    assert "no Dagster service process running here" in health.stderr
    assert not (home / "services.pid").exists()


def test_down_while_starting_stops_what_was_started(tmp_path):
    home = dagster_home(tmp_path)
    up = subprocess.Popen(
        [sys.executable, "-m", "ml_assets.services", "up", "--home", str(home),
         "--port", str(free_port()), "--grpc-port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    tree: set[int] = set()
    try:
        # Stop once the code server is spawned but before everything answers.
        while not (home / "logs" / "code-server.log").exists():
            assert up.poll() is None, up.stdout.read()
            time.sleep(0.05)
        tree |= set(descendants(up.pid))
        down = subprocess.run([sys.executable, "-m", "ml_assets.services", "down", "--home",
                               str(home)], capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stdout + down.stderr
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    output = up.stdout.read()
    assert "SIGTERM received while starting: stopped" in output, output
    assert tree and not [pid for pid in tree if is_running(pid)]
    assert not (home / "services.pid").exists()


def test_start_without_webserver_and_stop_reaps_every_group(tmp_path):
    home = dagster_home(tmp_path)
    with start(home, roles=("code-server", "daemon"), log_dir=tmp_path / "logs") as services:
        assert services.webserver_url is None
        pids = services.pids
        assert set(pids) == {"code-server", "daemon"}
        groups_before = {role: group_members(pid) for role, pid in pids.items()}
        # The code server is a proxy with a `dagster api grpc` child in its group.
        assert len(groups_before["code-server"]) >= 2, groups_before
        assert not services.exited()
    assert not any(group_members(pid) for pid in pids.values())
    assert (tmp_path / "logs" / "code-server.log").read_text()


def test_start_names_a_home_without_dagster_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"has no dagster.yaml: run `make home`"):
        start(tmp_path)
    with pytest.raises(ValueError, match="unknown service role"):
        start(dagster_home(tmp_path), roles=("webserver", "scheduler"))
