"""Dagster's SQLite instance storage with commits that do not wait for the disk.

Dagster's SQLite storages open a connection for each statement batch and close it after: in WAL
mode every commit then restarts the WAL (a synced header) and every close of the last connection
checkpoints it into the database (two more fsyncs), 5-12 ms per batch on this project's machines
whatever ``synchronous`` says. A run writes each event in the run's own database and mirrors its
asset and check events in the index database, so a daily range run of a few assets spent most of
its Dagster time waiting for the disk. These subclasses keep Dagster's files, schema and WAL journal
and change these things:

- each database keeps one open connection between uses (a pool of one per file), with
  ``synchronous=NORMAL``: in WAL mode a commit is then durable against a crash of the process and
  only an OS crash or power loss can drop the last commits - never corrupt the database
  (https://www.sqlite.org/pragma.html#pragma_synchronous); SQLite checkpoints the WAL by itself
  every 1000 pages;
- a run's database is checkpointed at most every CHECKPOINT_SECONDS while the run writes and
  closed when the run ends, so the webserver's live run view (it watches the run's ``.db`` file)
  still follows a run as it goes, and a finished run's files are what Dagster leaves;
- a new run's database is created as Dagster creates it (same tables, WAL, alembic head revision)
  with the migration scripts read once per process instead of once per run (0.3-0.9 s each): a copy
  of one made once per process;
- with DAGSTER_EVENT_BATCH_SIZE > 0 a batch of events is written in one transaction per database, and
  Dagster's per-event schema probes answer from memory once positive (event_log_batch).

The files are ordinary Dagster SQLite storage: the webserver and daemon read them with Dagster's own
classes or these. The repository's dagster.yaml (the embedded profile) selects it for every process
with ``instance_class: TunedSqliteInstance``: a DagsterInstance whose only change is the default
storage, this one on the instance's own folder (DAGSTER_HOME, or the folder an instance is loaded
from), so no path is written in the file. A ``storage:`` section (PostgreSQL) still wins.
``tuned(instance)`` / ``tuned_instance`` apply it to an instance on Dagster's default SQLite storage,
on that instance's own files (the replay, ``make demo``, on any home). It can also be configured as
a storage, with base_dir required (a custom storage cannot learn which home it was loaded from)::

    storage:
      custom:
        module: ml_assets.defs.instance_storage
        class: TunedSqliteStorage
        config:
          base_dir: /path/to/dagster_home
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache

import dagster as dg
import sqlalchemy as db
import yaml
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.schema import SqlEventLogStorageMetadata
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sql import get_alembic_config
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy import exc as db_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool, QueuePool

from ml_assets.defs.event_log_batch import BatchWriter

SYNCHRONOUS = "NORMAL"
# A running run's database is checkpointed (so its .db file changes for the UI's live view) at most this often.
CHECKPOINT_SECONDS = 1.0
# Run databases whose connection is kept (recent runs; an older one reconnects on its next use).
RUN_ENGINES_KEPT = 8
# Events per batch written by TunedSqliteInstance when DAGSTER_EVENT_BATCH_SIZE is not set (as `make up`).
DEFAULT_EVENT_BATCH_SIZE = 100
MODULE = __name__
STORAGE_CLASS = "TunedSqliteStorage"


def _on_connect(dbapi_connection, _record) -> None:
    dbapi_connection.execute(f"PRAGMA synchronous={SYNCHRONOUS}")


def tuned_engine(conn_string: str, timeout: float = SQLITE_BUSY_TIMEOUT_SECONDS) -> Engine:
    """An engine keeping one open connection to the file between uses (more only while several threads
    use it at once), whose commits do not wait for fsync."""
    engine = db.create_engine(conn_string, poolclass=QueuePool, pool_size=1, max_overflow=8,
                              connect_args={"timeout": timeout, "check_same_thread": False})
    db.event.listen(engine, "connect", _on_connect)
    return engine


@cache
def _event_log_scripts() -> ScriptDirectory:
    """Dagster's event-log migration scripts, read once: Dagster reads (compiles) them again for every
    new run database, ~0.3-0.9 s per run here."""
    script = ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__))
    script.as_revision_number("head")  # loads the revision map now
    return script


def _create_run_shard(connection: Connection) -> None:
    """A run database as Dagster's _initdb makes it: WAL journal, the tables, stamped at the head revision."""
    connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    SqlEventLogStorageMetadata.create_all(connection)
    MigrationContext.configure(connection).stamp(_event_log_scripts(), "head")
    connection.commit()


@cache
def _run_shard_template() -> str:
    """A fresh run database made once per process (in a temporary folder removed at exit), checkpointed."""
    folder, pid = tempfile.mkdtemp(prefix="ml-assets-run-shard-"), os.getpid()
    atexit.register(lambda: os.getpid() == pid and shutil.rmtree(folder, ignore_errors=True))  # not a fork's exit
    path = os.path.join(folder, "run.db")
    engine = db.create_engine(f"sqlite:///{path}", poolclass=NullPool)
    with engine.connect() as connection:
        _create_run_shard(connection)
    engine.dispose()  # closing the only connection checkpoints the WAL into run.db
    return path


def _copy_new_run_shard(path: str) -> bool:
    """Creates a new run's database as a copy of the template (creating the tables costs ~25 ms a run,
    a copy ~1 ms); False when the file exists (another process made it: Dagster's path checks it)."""
    if os.path.exists(path):
        return False
    staged = f"{path}.{os.getpid()}-{threading.get_ident()}.new"  # not *.db: never taken for a run
    try:
        shutil.copyfile(_run_shard_template(), staged)
    except OSError:  # the template went away (a cleaned temp folder): made again next time, Dagster's path now
        _run_shard_template.cache_clear()
        with contextlib.suppress(OSError):
            os.unlink(staged)
        return False
    try:
        os.link(staged, path)  # fails rather than replace a file created meanwhile
    except OSError:
        return False
    finally:
        os.unlink(staged)
    return True


@contextmanager
def _transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


class TunedSqliteEventLogStorage(BatchWriter):
    """Dagster's run-sharded SQLite event log (a database per run plus the index), kept connections,
    batched writes and remembered schema probes (event_log_batch)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._checkpointed: dict[str, float] = {}
        # Run shards written since their last checkpoint, each with a timer that checkpoints it later.
        self._pending: dict[str, threading.Timer] = {}
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> TunedSqliteEventLogStorage:  # ty: ignore[invalid-method-override]
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        """The shard's engine (under self._db_lock); the least recently used run shard beyond
        RUN_ENGINES_KEPT is closed (the index shard is never the least recent for long)."""
        engine = self._engines.get(shard)
        if engine is None:
            engine = self._engines[shard] = tuned_engine(self.conn_string_for_shard(shard))
            if len(self._engines) > RUN_ENGINES_KEPT + 1:
                oldest = next(s for s in self._engines if s != INDEX_SHARD_NAME)
                self._engines.pop(oldest).dispose()
        self._engines.move_to_end(shard)
        return engine

    def _initdb(self, engine: Engine, for_index_shard: bool = False) -> None:
        # A new run database as Dagster creates it (tables, WAL, stamped at the head revision) with the
        # migration scripts read once; anything else (the index, an older layout, a concurrent
        # initialisation) goes through Dagster's own _initdb and its retries.
        if not for_index_shard:
            try:
                if self._init_run_shard(engine):
                    return
            except (db_exc.DatabaseError, sqlite3.DatabaseError, sqlite3.OperationalError):
                pass
        super()._initdb(engine, for_index_shard)

    @staticmethod
    def _init_run_shard(engine: Engine) -> bool:
        """True when the run database is initialised (now or already); False to leave it to Dagster."""
        if engine.url.database and _copy_new_run_shard(engine.url.database):
            return True
        with engine.connect() as connection:
            if MigrationContext.configure(connection).get_current_revision() is not None:
                return True
            if db.inspect(connection).get_table_names():
                return False
            _create_run_shard(connection)
        return True

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # Dagster's _connect (same lock, same first-use initialisation) through the shard's kept engine;
        # inside a batch this thread's index connections are the batch's open one.
        batch = self.batch_connection() if shard == INDEX_SHARD_NAME else None
        if batch is not None:
            yield batch
            return
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn
                if shard != INDEX_SHARD_NAME:
                    if time.monotonic() - self._checkpointed.get(shard, 0.0) > CHECKPOINT_SECONDS:
                        self._checkpoint(conn, shard)
                    elif shard not in self._pending:
                        # The UI's live view wakes on changes of the .db file only: the last events before
                        # a quiet spell (a long step) would wait in the WAL for the next write otherwise.
                        timer = self._pending[shard] = threading.Timer(CHECKPOINT_SECONDS, self._late_checkpoint,
                                                                       (shard,))
                        timer.daemon = True
                        timer.start()

    def _checkpoint(self, conn: Connection, shard: str) -> None:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        self._checkpointed[shard] = time.monotonic()
        self._cancel_checkpoints(shard)

    def _late_checkpoint(self, shard: str) -> None:
        with self._db_lock:
            if self._pending.get(shard) is not threading.current_thread():
                return  # checkpointed meanwhile, or the run ended (its database closed)
            del self._pending[shard]
            engine = self._engines.get(shard)
            if engine is not None:
                with contextlib.suppress(db_exc.DBAPIError), engine.connect() as conn:
                    self._checkpoint(conn, shard)

    def _cancel_checkpoints(self, shard: str | None = None) -> None:
        """Under self._db_lock: the pending late checkpoints of `shard` (all when None) cancelled."""
        for name in [shard] if shard is not None else list(self._pending):
            timer = self._pending.pop(name, None)
            if timer is not None:
                timer.cancel()

    def run_ended(self, run_id: str) -> None:
        # Closing the run's only connection checkpoints its WAL into the .db file and removes it.
        with self._db_lock:
            engine = self._engines.pop(run_id, None)
            self._checkpointed.pop(run_id, None)
            self._cancel_checkpoints(run_id)
            if engine is not None:
                engine.dispose()

    def _close_engines(self) -> None:
        with self._db_lock:
            self._cancel_checkpoints()
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()

    def wipe(self) -> None:
        self._close_engines()  # the run files are deleted: no connection may keep them
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._close_engines()


class _KeptConnection:
    """connect() through one kept, tuned engine (run and schedule storage: a single database file)."""

    _conn_string: str
    _tuned: Engine | None = None

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        if self._tuned is None:
            self._tuned = tuned_engine(self._conn_string)
        with _transaction(self._tuned) as conn:
            yield conn

    def dispose(self) -> None:
        super().dispose()  # type: ignore[misc]
        if self._tuned is not None:
            self._tuned.dispose()


class TunedSqliteRunStorage(_KeptConnection, SqliteRunStorage):
    """Dagster's SQLite run storage (runs.db), kept connection."""

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> TunedSqliteRunStorage:  # ty: ignore[invalid-method-override]
        return cls.from_local(inst_data=inst_data, **config_value)


class TunedSqliteScheduleStorage(_KeptConnection, SqliteScheduleStorage):
    """Dagster's SQLite schedule and sensor storage (schedules.db), kept connection."""

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> TunedSqliteScheduleStorage:  # ty: ignore[invalid-method-override]
        return cls.from_local(inst_data=inst_data, **config_value)


class TunedSqliteStorage(DagsterSqliteStorage):
    """Dagster's default SQLite storage layout under ``base_dir`` (history/runs.db, history/runs/*.db,
    schedules/schedules.db) through the tuned run, event-log and schedule storages."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self.base_dir = base_dir
        self._run_storage = TunedSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = TunedSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = TunedSqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        DagsterStorage.__init__(self)

    @classmethod
    def config_type(cls):
        return {"base_dir": dg.Field(dg.StringSource, description="folder of the SQLite files: history/, schedules/ "
                                                                  "(Dagster's default SQLite storage uses DAGSTER_HOME)")}

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> TunedSqliteStorage:  # ty: ignore[invalid-method-override]
        return cls.from_local(config_value["base_dir"], inst_data=inst_data)


class TunedSqliteInstance(dg.DagsterInstance):
    """Dagster's instance with TunedSqliteStorage as its default storage, in the instance's folder
    where Dagster's default SQLite storage would be (``instance_class`` in dagster.yaml)."""

    @classmethod
    def config_schema(cls) -> dict:
        return {}

    def _get_event_batch_size(self) -> int:
        # Dagster reads DAGSTER_EVENT_BATCH_SIZE (default 0: every event its own write). This storage
        # writes a batch in one transaction per database, so a range run's planned and per-day events
        # are batched by default, whoever starts the run (daemon, UI, CLI); the variable still wins.
        return int(os.getenv("DAGSTER_EVENT_BATCH_SIZE", str(DEFAULT_EVENT_BATCH_SIZE)))

    @staticmethod
    def config_defaults(base_dir: str) -> dict[str, ConfigurableClassData | None]:
        defaults = dict(InstanceRef.config_defaults(base_dir))
        defaults["storage"] = ConfigurableClassData(MODULE, STORAGE_CLASS, yaml.dump({"base_dir": base_dir}))
        return defaults


def _default_sqlite_base_dir(ref: InstanceRef) -> str | None:
    """The base_dir of Dagster's default SQLite storage in `ref`, None for any other storage."""
    data = ref.storage_data
    if data is None or (data.module_name, data.class_name) != ("dagster._core.storage.sqlite_storage",
                                                              "DagsterSqliteStorage"):
        return None
    return yaml.safe_load(data.config_yaml)["base_dir"]


def tuned_instance(instance: dg.DagsterInstance) -> dg.DagsterInstance:
    """An instance on the same files as `instance` with the tuned SQLite storage when `instance` uses
    Dagster's default SQLite storage (the embedded profile); `instance` itself otherwise (PostgreSQL,
    an already tuned or any other storage). The caller disposes the instance it got when it differs."""
    ref = instance.get_ref()
    base_dir = _default_sqlite_base_dir(ref)
    if base_dir is None:
        return instance
    storage_data = ConfigurableClassData(MODULE, STORAGE_CLASS, yaml.dump({"base_dir": base_dir}))
    return dg.DagsterInstance.from_ref(ref._replace(storage_data=storage_data, run_storage_data=None,
                                                    event_storage_data=None, schedule_storage_data=None))


def tuned(instance: dg.DagsterInstance) -> AbstractContextManager[dg.DagsterInstance]:
    """``with tuned(instance) as fast:`` - tuned_instance(instance), disposed on exit when it is a new one."""
    fast = tuned_instance(instance)
    return nullcontext(instance) if fast is instance else fast
