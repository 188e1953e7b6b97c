"""A throw-away Redis server from Debian's `redis-server` (dev and test helper, no dagster import).

`RedisServer.start()` runs `redis-server` on a free loopback port with its own temporary directory
(working dir, log, no persistence: a test broker needs none), waits until it answers PING, and
`stop()` ends it (SHUTDOWN NOSAVE, then the process group) and removes the directory. It is the
Celery broker and result backend of the cluster profile's tests (ml_assets_tests/fixtures/redis.py)
and of bench/bench_celery.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ml_assets.ops.processes import free_port, spawn, stop_groups, wait_until

INSTALL_HINT = (
    "install Debian's `redis-server` package: `make services-deps` (or `make test`, which runs "
    "it), or set REDIS_SERVER_BIN to a redis-server binary"
)


class RedisNotFoundError(RuntimeError):
    """The redis-server binary is not installed."""


def find_redis_server() -> Path:
    """REDIS_SERVER_BIN, redis-server on PATH, or Debian's /usr/bin/redis-server."""
    candidates = [os.environ.get("REDIS_SERVER_BIN"), shutil.which("redis-server"), "/usr/bin/redis-server"]
    for candidate in filter(None, candidates):
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise RedisNotFoundError(f"redis-server not found (looked at REDIS_SERVER_BIN, PATH, "
                             f"/usr/bin/redis-server): {INSTALL_HINT}")


def ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING on host:port (RESP spoken by hand: no client needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _command(host: str, port: int, *args: str, timeout: float = 2.0) -> bytes:
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(payload)
        try:
            return sock.recv(256)
        except OSError:
            return b""  # SHUTDOWN closes the connection without a reply


@dataclass
class RedisServer:
    binary: Path
    base_dir: Path
    host: str
    port: int
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Base URL; add /<db> (e.g. url + "/0") to pick a database."""
        return f"redis://{self.host}:{self.port}"

    def db_url(self, db: int) -> str:
        return f"{self.url}/{db}"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "redis.log"

    @classmethod
    def start(cls, *, host: str = "127.0.0.1", port: int | None = None,
              start_timeout_s: float = 30.0) -> RedisServer:
        """A new redis-server in a temporary directory, bound to `host` only, protected mode on."""
        binary = find_redis_server()
        base_dir = Path(tempfile.mkdtemp(prefix="redis-"))
        server = cls(binary=binary, base_dir=base_dir, host=host, port=port or free_port(host))
        try:
            # No RDB/AOF: a broker for tests and benchmarks starts empty and is thrown away.
            server.process = spawn([
                str(binary), "--bind", host, "--port", str(server.port), "--dir", str(base_dir),
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", "",
            ], log_path=server.log_path, cwd=base_dir)
            # The port may have been taken since free_port() picked it: the process then exits.
            wait_until(lambda: ping(host, server.port), what=f"redis-server on {host}:{server.port}",
                       timeout=start_timeout_s, process=server.process, log_path=server.log_path)
        except BaseException:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        """SHUTDOWN NOSAVE (a clean exit), SIGTERM/SIGKILL the group if needed, remove the directory."""
        try:
            if self.process is not None:
                if self.process.poll() is None:
                    with contextlib.suppress(OSError):
                        _command(self.host, self.port, "SHUTDOWN", "NOSAVE")
                stop_groups([self.process], timeout=5.0)
                self.process = None
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
