"""Fixtures of the daemon-mode tests: PostgreSQL, Azurite and the Dagster processes, all real."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ml_assets.landing import days_between, land
from ml_assets.spec import load_spec
from ml_assets.storage import AzureBlobStore
from ml_assets_tests.e2e.harness import (
    SPEC_PATH,
    AzuriteServer,
    DagsterStack,
    dump,
    materializations,
    open_instance,
    stack_env,
    write_postgres_home,
)


@dataclass
class Deployment:
    """The stack of one test: its environment, processes, blob container and instance."""

    env: dict[str, str]
    stack: DagsterStack
    store: AzureBlobStore
    workdir: Path

    def land(self, frames, first: dt.date, last: dt.date | None = None) -> list[str]:
        days = days_between(first, last or first)
        land(self.store, load_spec(SPEC_PATH), frames, days)
        return [day.isoformat() for day in days]

    def instance(self):
        return open_instance(self.env)

    def dump(self, instance, keys=()) -> str:
        counts = materializations(instance, keys) if keys else None
        return dump(instance, self.stack, counts)


@contextlib.contextmanager
def deployment(tmp_path: Path, connection_string: str, postgres_env: dict[str, str],
               webserver: bool = False) -> Iterator[Deployment]:
    workdir = tmp_path / "deployment"
    home = write_postgres_home(workdir / "dagster_home")
    container = f"e2e-{uuid.uuid4().hex[:12]}"
    env = stack_env(home=home, workdir=workdir, connection_string=connection_string, container=container,
                    extra=postgres_env)
    store = AzureBlobStore(container, connection_string=connection_string)
    stack = DagsterStack(home=home, env=env, logs=workdir / "logs", webserver=webserver)
    try:
        stack.start()
        yield Deployment(env=env, stack=stack, store=store, workdir=workdir)
    finally:
        stack.stop()
        store.close()


@pytest.fixture
def daemon_deployment(tmp_path, azurite, postgres) -> Iterator[Deployment]:
    """The three Dagster processes (code server, daemon, webserver) on the session's Azurite and a
    fresh PostgreSQL database."""
    with deployment(tmp_path, azurite.connection_string, postgres.fresh_db(), webserver=True) as deployed:
        yield deployed


@pytest.fixture
def own_azurite(tmp_path) -> Iterator[AzuriteServer]:
    """An Azurite of this test alone, which it may stop and start again (same port, same data)."""
    server = AzuriteServer(location=tmp_path / "azurite", log_path=tmp_path / "azurite.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
