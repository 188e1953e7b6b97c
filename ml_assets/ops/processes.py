"""Child processes in their own process groups: start, wait until ready, stop with no orphans."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _new_group_with_default_signals() -> None:
    # A child of a background shell job inherits SIGINT=ignored, and Dagster's CLIs then ignore
    # SIGTERM as well (they map it onto the SIGINT handler): restore the defaults before exec.
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def spawn(
    argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
) -> subprocess.Popen:
    """Start `argv` as the leader of a new session/process group, output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None, cwd=cwd,
            preexec_fn=_new_group_with_default_signals,
        )


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an exited child its parent has not reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def _living_processes() -> list[tuple[int, int, int]]:
    """(pid, ppid, pgrp) of every process but zombies, read from /proc."""
    living = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # Fields after the parenthesised command: state ppid pgrp ...
        state, ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if state != "Z":
            living.append((int(entry.name), int(ppid), int(pgrp)))
    return living


def group_members(pgid: int) -> list[int]:
    """PIDs (zombies excluded) whose process group is `pgid`."""
    return [pid for pid, _, pgrp in _living_processes() if pgrp == pgid]


def descendants(pid: int) -> list[int]:
    """Living (non-zombie) descendants of `pid`, whatever their process group."""
    children: dict[int, list[int]] = {}
    for child, parent, _ in _living_processes():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def stop_groups(processes: Sequence[subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGTERM every process's group, wait up to `timeout` s, then SIGKILL whatever is left."""
    for process in processes:
        _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    # Grand-children (e.g. the code server's `dagster api grpc` child or run workers) share the
    # group: give them the rest of the time, then kill the group outright.
    while time.monotonic() < deadline and any(group_members(p.pid) for p in processes):
        time.sleep(0.1)
    for process in processes:
        if group_members(process.pid) or process.poll() is None:
            _signal_group(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def wait_until(
    ready: Callable[[], bool], *, what: str, timeout: float, process: subprocess.Popen | None = None,
    log_path: Path | None = None, interval: float = 0.2,
) -> None:
    """Poll `ready()` until true; raise naming `what` (with the log's tail) on exit or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        problem = None
        if process is not None and process.poll() is not None:
            problem = f"exited with code {process.returncode}"
        elif time.monotonic() > deadline:
            problem = f"was not ready within {timeout:.0f} s"
        if problem:
            tail = ""
            if log_path is not None and log_path.exists():
                tail = "\n--- " + str(log_path) + " (last lines) ---\n" + "\n".join(
                    log_path.read_text(errors="replace").splitlines()[-40:]
                )
            raise RuntimeError(f"{what} {problem}{tail}")
        time.sleep(interval)
