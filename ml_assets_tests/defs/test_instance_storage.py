"""The tuned SQLite instance storage: Dagster's files, readable by Dagster's own classes (the UI and daemon)."""

import shutil
import sqlite3
from contextlib import closing, nullcontext
from pathlib import Path

import dagster as dg
import pytest

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
