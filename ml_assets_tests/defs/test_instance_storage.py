"""The tuned SQLite instance storage: Dagster's files, readable by Dagster's own classes (the UI and daemon)."""

import shutil
import sqlite3
import time
from contextlib import closing, nullcontext
from pathlib import Path

import dagster as dg
import pytest
import yaml

from ml_assets.defs.instance_storage import (
    TunedSqliteEventLogStorage,
    TunedSqliteRunStorage,
    TunedSqliteScheduleStorage,
    _run_shard_template,
    tuned,
    tuned_instance,
)

DAYS = dg.DailyPartitionsDefinition(start_date="2013-01-01", end_date="2013-01-06")
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
TUNED_YAML = ("telemetry:\n  enabled: false\nstorage:\n  custom:\n    module: ml_assets.defs.instance_storage\n"
              "    class: TunedSqliteStorage\n")


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run(),
          check_specs=[dg.AssetCheckSpec("even_day", asset="daily")])
def daily(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """A range of days in one run (one materialization per day), with a check."""
    return dg.MaterializeResult(metadata={"days": len(context.partition_keys)},
                                check_results=[dg.AssetCheckResult(check_name="even_day", passed=True)])


def _home(tmp_path: Path, text: str = "telemetry:\n  enabled: false\n") -> Path:
    home = tmp_path / "home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(text)
    return home


def _run_range(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = dg.Definitions(assets=[daily]).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(run_config=QUIET, instance=instance, tags={
        "dagster/asset_partition_range_start": "2013-01-02", "dagster/asset_partition_range_end": "2013-01-04"})


def test_tuned_instance_writes_what_dagsters_own_sqlite_classes_read(tmp_path):
    home = _home(tmp_path)
    with dg.DagsterInstance.local_temp(str(home)) as default, tuned(default) as fast:
        assert isinstance(fast.event_log_storage, TunedSqliteEventLogStorage)
        assert isinstance(fast.run_storage, TunedSqliteRunStorage)
        assert isinstance(fast.schedule_storage, TunedSqliteScheduleStorage)
        result = _run_range(fast)
        assert result.success
        fast.report_runless_asset_event(dg.AssetMaterialization("daily", partition="2013-01-05"))
        with fast.event_log_storage.index_connection() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        # The run's database was closed when the run ended: its WAL is checkpointed into the .db file.
        shard = Path(fast.event_log_storage.path_for_shard(result.run_id))
        assert shard.is_file() and not Path(f"{shard}-wal").exists()

    with dg.DagsterInstance.local_temp(str(home)) as reader:  # Dagster's own classes, as the webserver
        assert type(reader.event_log_storage).__name__ == "SqliteEventLogStorage"
        run = reader.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        records = reader.fetch_materializations(dg.AssetKey("daily"), limit=10).records
        assert sorted(r.partition_key for r in records) == ["2013-01-02", "2013-01-03", "2013-01-04", "2013-01-05"]
        logs = reader.all_logs(result.run_id)
        assert any(e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_SUCCESS for e in logs)
        check = reader.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("daily"), "even_day")])
        assert check[dg.AssetCheckKey(dg.AssetKey("daily"), "even_day")].run_id == result.run_id


def test_tuned_storage_from_dagster_yaml_in_dagster_homes_storage_folder(tmp_path):
    home = tmp_path / "home"
    _home(tmp_path, TUNED_YAML + f"    config:\n      base_dir: {home / 'storage'}\n")
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        assert isinstance(instance.event_log_storage, TunedSqliteEventLogStorage)
        assert tuned_instance(instance) is instance  # already tuned: nothing to change
        assert _run_range(instance).success
    assert (home / "storage" / "history" / "runs.db").is_file()
    assert (home / "storage" / "history" / "runs" / "index.db").is_file()


def test_tuned_storage_without_base_dir_is_a_config_error_naming_it(tmp_path):
    home = _home(tmp_path, TUNED_YAML)
    with pytest.raises(dg.DagsterInvalidConfigError, match="base_dir"):
        dg.DagsterInstance.local_temp(str(home))


def _shard_layout(path: str) -> tuple:
    with closing(sqlite3.connect(path)) as conn:
        return (sorted(conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall(), key=str),
                conn.execute("SELECT version_num FROM alembic_version").fetchall(),
                conn.execute("PRAGMA journal_mode").fetchall())


def test_a_run_database_is_created_as_dagster_creates_it(tmp_path):
    layouts = []
    for name, tune in (("default", False), ("tuned", True)):
        home = _home(tmp_path / name)
        with dg.DagsterInstance.local_temp(str(home)) as default, (tuned(default) if tune else nullcontext(default)) \
                as instance:
            result = _run_range(instance)
            assert result.success
            layouts.append(_shard_layout(instance.event_log_storage.path_for_shard(result.run_id)))
    assert layouts[0] == layouts[1]  # same tables, indexes, alembic revision and WAL journal


def test_a_run_database_is_still_made_when_the_template_copy_is_gone(tmp_path):
    """New run databases are copies of one made once per process; without it, made as Dagster makes them."""
    shutil.rmtree(Path(_run_shard_template()).parent)
    home = _home(tmp_path)
    with dg.DagsterInstance.local_temp(str(home)) as default, tuned(default) as instance:
        first = _run_range(instance)  # the template is gone: this run's database is created in place
        second = _run_range(instance)  # a copy of the template made again
        assert first.success and second.success
        assert Path(_run_shard_template()).is_file()
        layouts = [_shard_layout(instance.event_log_storage.path_for_shard(r.run_id)) for r in (first, second)]
        assert layouts[0] == layouts[1]
        assert len(instance.fetch_materializations(dg.AssetKey("daily"), limit=10).records) == 6


def test_dagsters_run_watcher_sees_the_last_event_before_a_quiet_spell(tmp_path):
    """The webserver's live run view (Dagster's SqliteEventLogStorage.watch) wakes on changes of the run's
    .db file only: an event written within CHECKPOINT_SECONDS of the last checkpoint must still reach it
    while the run is quiet (a long step), not only at the next write."""
    import logging
    import threading

    from dagster._core.events.log import EventLogEntry
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    def entry(message: str) -> EventLogEntry:
        return EventLogEntry(error_info=None, level=logging.INFO, user_message=message, run_id="r1",
                             timestamp=time.time(), step_key=None, job_name="j", dagster_event=None)

    writer, reader = TunedSqliteEventLogStorage(str(tmp_path)), SqliteEventLogStorage(str(tmp_path))
    try:
        writer.store_event(entry("first"))
        seen, last = [], threading.Event()
        reader.watch("r1", None, lambda e, _cursor: (seen.append(e.user_message),
                                                     e.user_message == "last" and last.set()))
        writer.store_event(entry("second"))
        writer.store_event(entry("last"))  # right after a checkpoint: only in the WAL at first
        assert last.wait(60), f"the watcher saw only {seen}"
        assert seen[-1] == "last"
    finally:
        reader.dispose()
        writer.dispose()


def test_the_repositorys_dagster_yaml_makes_the_tuned_storage_the_default_in_the_homes_own_folder(
    tmp_path, monkeypatch
):
    """instance_class: TunedSqliteInstance in dagster.yaml: the tuned storage on the folder the instance
    is loaded from (not the process's DAGSTER_HOME), in Dagster's layout, read by Dagster's own classes."""
    repo_yaml = (Path(__file__).parents[2] / "dagster.yaml").read_text()
    home = _home(tmp_path, repo_yaml)
    monkeypatch.setenv("DAGSTER_HOME", str(_home(tmp_path / "elsewhere")))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance).__name__ == "TunedSqliteInstance"
        assert isinstance(instance.event_log_storage, TunedSqliteEventLogStorage)
        assert tuned_instance(instance) is instance  # already tuned: the replay uses it as it is
        result = _run_range(instance)
        assert result.success
        # A run worker gets the instance through its ref: the same class on the same folder.
        ref = instance.get_ref()
        assert yaml.safe_load(ref.storage_data.config_yaml) == {"base_dir": str(home)}
    assert (home / "history" / "runs.db").is_file()
    assert (home / "history" / "runs" / f"{result.run_id}.db").is_file()
    assert not (tmp_path / "elsewhere" / "home" / "history").exists()

    plain = tmp_path / "plain"
    shutil.copytree(home, plain)
    (plain / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(plain)) as reader:  # Dagster's own classes
        assert type(reader.event_log_storage).__name__ == "SqliteEventLogStorage"
        assert reader.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
        records = reader.fetch_materializations(dg.AssetKey("daily"), limit=10).records
        assert sorted(r.partition_key for r in records) == ["2013-01-02", "2013-01-03", "2013-01-04"]


def test_a_storage_section_still_wins_over_the_instance_classs_default(tmp_path):
    home = tmp_path / "home"
    _home(tmp_path, "instance_class:\n  module: ml_assets.defs.instance_storage\n  class: TunedSqliteInstance\n"
                    "telemetry:\n  enabled: false\nstorage:\n  sqlite:\n    base_dir: " + str(tmp_path / "own") + "\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.event_log_storage).__name__ == "SqliteEventLogStorage"
        assert _run_range(instance).success
    assert (tmp_path / "own" / "history" / "runs.db").is_file()


def test_the_instance_class_batches_range_events_unless_the_variable_says_otherwise(tmp_path, monkeypatch):
    home = _home(tmp_path, (Path(__file__).parents[2] / "dagster.yaml").read_text())
    writes = []
    real_batch = TunedSqliteEventLogStorage.store_event_batch
    monkeypatch.setattr(TunedSqliteEventLogStorage, "store_event_batch",
                        lambda self, events: (writes.append(len(events)), real_batch(self, events))[1])
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert _run_range(instance).success
        assert writes and max(writes) >= 3  # the range's three per-day events in one write
        writes.clear()
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
        assert _run_range(instance).success
        assert set(writes) <= {1}  # each event on its own (store_event goes through the batch path)
