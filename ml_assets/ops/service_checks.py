"""Is a Dagster service up? Console scripts, HTTP and gRPC probes, the services running here.

Split out of ml_assets/services.py (plain module: dagster only ever runs as child processes); the
`health` command (the Docker image's HEALTHCHECK) and `start()` use these.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from ml_assets.ops.processes import descendants, port_answers


def script(name: str) -> str:
    """A console script of this interpreter's environment (the venv or the image), else PATH."""
    beside = Path(sys.executable).with_name(name)
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"`{name}` not found beside {sys.executable} nor on PATH: "
                                "install the project (make venv / pip install .)")
    return found


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def grpc_serving(host: str, port: int, env: Mapping[str, str]) -> bool:
    if not port_answers(host, port):
        return False
    result = subprocess.run(
        [script("dagster"), "api", "grpc-health-check", "-h", host, "-p", str(port)],
        capture_output=True, env=dict(env), stdin=subprocess.DEVNULL, timeout=60,
    )
    return result.returncode == 0


def option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg in names:
            return argv[i + 1]
    for arg in argv:
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def running_roles(under: int | None = None) -> dict[str, tuple[int, list[str]]]:
    """The Dagster services running here (or under PID `under`): role -> (pid, command line)."""
    found: dict[str, tuple[int, list[str]]] = {}
    allowed = set(descendants(under)) if under is not None else None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if allowed is not None and int(entry.name) not in allowed:
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        names = [Path(a).name for a in argv[:3]]
        pid = int(entry.name)
        if "dagster-webserver" in names or "dagster_webserver" in argv[:3]:
            found.setdefault("webserver", (pid, argv))
        elif "dagster-daemon" in names and "run" in argv:
            found.setdefault("daemon", (pid, argv))
        elif "code-server" in argv and "start" in argv:
            found.setdefault("code-server", (pid, argv))
    return found


def environ_of(pid: int) -> dict[str, str]:
    """The process's environment (DAGSTER_HOME, storage settings), else ours."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return dict(os.environ)
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def check_role(role: str, argv: list[str], env: Mapping[str, str]) -> str | None:
    """None when the service answers, else what is wrong."""
    host = option(argv, "-h", "--host") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if role == "webserver":
        port = int(option(argv, "-p", "--port") or 3000)
        url = f"http://{host}:{port}/server_info"
        return None if http_ok(url) else f"webserver: GET {url} failed"
    if role == "code-server":
        port = int(option(argv, "-p", "--port") or 4000)
        ok = grpc_serving(host, port, env)
        return None if ok else f"code server: gRPC health check on {host}:{port} failed"
    result = subprocess.run([script("dagster-daemon"), "liveness-check"], capture_output=True,
                            text=True, env=dict(env), stdin=subprocess.DEVNULL, timeout=60)
    last = (result.stdout + result.stderr).strip().splitlines()[-1:] or [""]
    return None if result.returncode == 0 else f"daemon: liveness-check failed: {last[0]}"
