"""A throw-away PostgreSQL server from Debian's binaries (dev and test helper, no dagster import).

`PostgresServer.start()` runs `initdb` + `pg_ctl start` in a temporary directory on a free loopback
port; as root it runs them as the `postgres` OS user, since initdb refuses root. Local (socket)
connections are trusted, for administration from this process; TCP connections need a password
(scram-sha-256), as in production. The test fixture and bench/bench_run_overhead.py both use it.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ml_assets.ops.processes import free_port

INSTALL_HINT = (
    "install Debian's `postgresql` package: `make services-deps` (or `make test`, which runs it), "
    "or set PG_BIN_DIR to a folder holding initdb and pg_ctl"
)
# Unix socket paths are limited to ~107 bytes: keep the temporary directory short.
_TMP_ROOT = "/tmp"


class PostgresNotFoundError(RuntimeError):
    """The PostgreSQL server binaries (initdb, pg_ctl) are not installed."""


def find_bin_dir() -> Path:
    """PG_BIN_DIR, `pg_config --bindir`, the newest /usr/lib/postgresql/*/bin, or initdb on PATH."""
    candidates: list[Path] = []
    if os.environ.get("PG_BIN_DIR"):
        candidates.append(Path(os.environ["PG_BIN_DIR"]))
    if shutil.which("pg_config"):
        # libpq-dev's pg_config may name a bindir without the server binaries: checked below.
        result = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))

    def version(path: str) -> int:
        match = re.search(r"/postgresql/(\d+)/bin$", path)
        return int(match.group(1)) if match else 0

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise PostgresNotFoundError(
        f"PostgreSQL server binaries (initdb, pg_ctl) not found (looked in: "
        f"{', '.join(map(str, candidates)) or 'nothing'}): {INSTALL_HINT}"
    )


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _server_user_ids() -> tuple[int, int] | None:
    """(uid, gid) the server runs as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresNotFoundError(
            f"running as root, but there is no `postgres` OS user to run initdb as: {INSTALL_HINT}"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _run(argv: list[str], what: str, log_path: Path | None = None) -> None:
    result = subprocess.run(
        argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"},
    )
    if result.returncode != 0:
        log = ""
        if log_path is not None and log_path.exists():
            log = "\n--- server log ---\n" + log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(
            f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n"
            f"{result.stdout}{result.stderr}{log}"
        )


@dataclass
class PostgresServer:
    bin_dir: Path
    base_dir: Path
    host: str
    port: int
    durable: bool = True
    running: bool = field(default=False, init=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir

    @property
    def log_path(self) -> Path:
        return self.base_dir / "server.log"

    @classmethod
    def start(cls, *, host: str = "127.0.0.1", port: int | None = None, durable: bool = True,
              start_timeout_s: int = 60) -> PostgresServer:
        """initdb a temporary cluster and start it; `durable=False` turns fsync off (tests)."""
        bin_dir = find_bin_dir()
        ids = _server_user_ids()
        base_dir = Path(tempfile.mkdtemp(prefix="pg-", dir=_TMP_ROOT))
        if ids is not None:
            os.chown(base_dir, *ids)
        server = cls(bin_dir=bin_dir, base_dir=base_dir, host=host, port=port or free_port(host),
                     durable=durable)
        try:
            server._initdb()
            server._pg_ctl_start(start_timeout_s)
        except BaseException:
            server.stop()
            raise
        return server

    def _initdb(self) -> None:
        _run(_as_server_user([
            str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
            "--no-instructions",
        ]), "initdb")

    def _pg_ctl_start(self, timeout_s: int) -> None:
        options = [f"-p {self.port}", f"-k {self.socket_dir}", f"-c listen_addresses={self.host}"]
        if not self.durable:
            # Throw-away test data: no fsync makes schema creation per test database cheap.
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        # The port may have been taken since free_port() picked it: pg_ctl then fails, say why.
        _run(_as_server_user([
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path),
            "-o", " ".join(options), "-w", "-t", str(timeout_s), "start",
        ]), f"starting PostgreSQL on {self.host}:{self.port}", self.log_path)
        self.running = True

    def admin_connect(self, dbname: str = "postgres"):
        """A psycopg2 connection as the superuser over the Unix socket (autocommit)."""
        import psycopg2

        conn = psycopg2.connect(host=str(self.socket_dir), port=self.port, user="postgres",
                                dbname=dbname)
        conn.autocommit = True
        return conn

    def create_user(self, user: str, password: str) -> None:
        from psycopg2 import sql

        conn = self.admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(
                    sql.Identifier(user)), (password,))
        finally:
            conn.close()

    def create_database(self, name: str, owner: str) -> None:
        from psycopg2 import sql

        conn = self.admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(owner)))
        finally:
            conn.close()

    def stop(self) -> None:
        """`pg_ctl stop -m fast`, then remove the temporary directory."""
        try:
            if self.running:
                _run(_as_server_user([
                    str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w",
                    "stop",
                ]), "stopping PostgreSQL", self.log_path)
                self.running = False
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)


def new_password() -> str:
    return secrets.token_urlsafe(18)
