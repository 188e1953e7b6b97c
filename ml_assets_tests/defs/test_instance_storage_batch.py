"""Batched event writes (DAGSTER_EVENT_BATCH_SIZE) through the tuned SQLite storage store what Dagster's own
SQLite storage stores one event at a time: every read of the instance API below gives the same answers."""

import sqlite3
import threading
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from ml_assets.defs.checks.per_day import day_evaluations, range_days
from ml_assets.defs.instance_storage import TunedSqliteEventLogStorage, tuned
from ml_assets.defs.raw_state import DATA_VERSION_TAG

DAYS = dg.DailyPartitionsDefinition(start_date="2013-01-01", end_date="2013-01-11")
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
RAW, FEAT = dg.AssetKey("raw"), dg.AssetKey("feat")
BAD_DAY = "2013-01-07"
CHECKS = [dg.AssetCheckKey(RAW, "rows"), dg.AssetCheckKey(FEAT, "feat_ok")]
T = dg.DagsterEventType
FAILED, SUCCEEDED = AssetCheckExecutionRecordStatus.FAILED, AssetCheckExecutionRecordStatus.SUCCEEDED
INDEXED = [T.ASSET_MATERIALIZATION, T.ASSET_OBSERVATION, T.ASSET_MATERIALIZATION_PLANNED, T.ASSET_FAILED_TO_MATERIALIZE,
           T.ASSET_CHECK_EVALUATION, T.ASSET_CHECK_EVALUATION_PLANNED]


@dg.multi_asset(outs={"raw": dg.AssetOut(key=RAW, is_required=False, code_version="1")}, partitions_def=DAYS,
                backfill_policy=dg.BackfillPolicy.single_run(), can_subset=True,
                check_specs=[dg.AssetCheckSpec("rows", asset=RAW, blocking=True, partitions_def=DAYS)])
def raw(context: dg.AssetExecutionContext) -> Iterator:
    """Like the project's raw range run: each good day materialized and observed, a verdict per day, a bad day fails."""
    days = range_days(context) or [context.partition_key]
    for day in days:
        if day != BAD_DAY:
            yield dg.AssetMaterialization(asset_key=RAW, partition=day, metadata={"rows": len(day)},
                                          tags={DATA_VERSION_TAG: f"v-{day}"})
            context.log_event(dg.AssetObservation(asset_key=RAW, partition=day, metadata={"seen": day}))
    yield from day_evaluations(context.instance, RAW, {day: [dg.AssetCheckResult(
        check_name="rows", passed=day != BAD_DAY, metadata={"day": day})] for day in days})
    if BAD_DAY in days:
        raise dg.Failure(description=f"{BAD_DAY} is bad", allow_retries=False)


@dg.multi_asset(outs={"feat": dg.AssetOut(key=FEAT, code_version="1")}, partitions_def=DAYS, can_subset=True,
                backfill_policy=dg.BackfillPolicy.single_run(),
                check_specs=[dg.AssetCheckSpec("feat_ok", asset=FEAT, partitions_def=DAYS)])
def feat(context: dg.AssetExecutionContext) -> Iterator:
    """A plain range materialization (one per day from one result) with a verdict per day."""
    days = list(context.partition_keys)
    yield dg.MaterializeResult(asset_key=FEAT, metadata={"days": len(days)})
    yield from day_evaluations(context.instance, FEAT, {day: [dg.AssetCheckResult(
        check_name="feat_ok", passed=day.endswith(("2", "4", "6", "8")))] for day in days}, blocking=False)


def _runs(instance: dg.DagsterInstance) -> None:
    job = dg.Definitions(assets=[raw, feat]).resolve_implicit_global_asset_job_def()
    for start, end, ok in (("2013-01-02", "2013-01-05", True), ("2013-01-04", "2013-01-09", False)):
        result = job.execute_in_process(run_config=QUIET, instance=instance, raise_on_error=False, tags={
            "dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end})
        assert result.success is ok
    instance.report_runless_asset_event(dg.AssetMaterialization(RAW, partition="2013-01-10"))


def _data(entry: dg.EventLogEntry, run: dict) -> object:
    """The event's data; a check evaluation's target without its timestamp, its run as the run's order."""
    if entry.dagster_event is None:
        return entry.user_message
    data = entry.dagster_event.event_specific_data
    if isinstance(data, dg.AssetCheckEvaluation):
        target = data.target_materialization_data
        return (data.asset_key, data.check_name, data.passed, data.metadata, data.severity, data.description,
                data.blocking, data.partition, target and (target.storage_id, run.get(target.run_id)))
    return data


def _record(record: dg.EventLogRecord | None, run: dict) -> tuple | None:
    if record is None:
        return None
    entry = record.event_log_entry
    return (record.storage_id, run.get(entry.run_id, entry.run_id), entry.dagster_event_type,
            entry.dagster_event.partition if entry.dagster_event else None, _data(entry, run))


def _check_record(record, run: dict) -> tuple | None:
    if record is None:
        return None
    return record.id, run.get(record.run_id), record.status, record.partition, record.event and _data(record.event, run)


def _snapshot(instance: dg.DagsterInstance) -> dict:
    """What the instance API reads back, with run ids as the runs' order (storage ids kept: fresh instances)."""
    runs = list(reversed(instance.get_runs()))
    run = {r.run_id: i for i, r in enumerate(runs)}
    storage = instance.event_log_storage
    snap: dict = {"runs": [(r.status, sorted(r.asset_selection or [])) for r in runs]}
    snap["logs"] = [[(e.dagster_event_type, e.step_key, e.dagster_event.asset_key if e.dagster_event else None,
                      e.dagster_event.partition if e.dagster_event else None) for e in instance.all_logs(r.run_id)]
                    for r in runs]
    snap["indexed"] = {t: [_record(r, run) for r in storage.get_event_records(
        dg.EventRecordsFilter(event_type=t), limit=1000, ascending=True)] for t in INDEXED}
    for key in (RAW, FEAT):
        snap[key, "materialized"] = sorted(instance.get_materialized_partitions(key))
        snap[key, "latest_by_partition"] = storage.get_latest_storage_id_by_partition(key, T.ASSET_MATERIALIZATION)
        snap[key, "planned"] = [
            (p, *((info.storage_id, run.get(info.run_id)) if (info := storage.get_latest_planned_materialization_info(
                key, p)) else ())) for p in DAYS.get_partition_keys()]
        snap[key, "tags"] = storage.get_event_tags_for_asset(key)
        snap[key, "materializations"] = [_record(r, run) for r in instance.fetch_materializations(key, limit=100).records]
        snap[key, "observations"] = [_record(r, run) for r in instance.fetch_observations(key, limit=100).records]
        (entry,) = [r.asset_entry for r in instance.get_asset_records([key])]
        snap[key, "entry"] = (_record(entry.last_materialization_record, run), run.get(entry.last_run_id),
                              _record(entry.last_observation_record, run), entry.last_planned_materialization_storage_id,
                              run.get(entry.last_planned_materialization_run_id),
                              _record(entry.last_failed_to_materialize_record, run))
    for check in CHECKS:
        snap[check, "history"] = [_check_record(r, run) for r in storage.get_asset_check_execution_history(check, 100)]
        summary = storage.get_asset_check_summary_records([check])[check]
        snap[check, "summary"] = (_check_record(summary.last_check_execution_record, run), run.get(summary.last_run_id),
                                  _check_record(summary.last_completed_check_execution_record, run))
        for day in DAYS.get_partition_keys():
            latest = storage.get_latest_asset_check_execution_by_key([check], PartitionKeyFilter(key=day))
            snap[check, day] = _check_record(latest.get(check), run)
    return snap


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """Dagster's own SqliteEventLogStorage, one event at a time."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
        with dg.DagsterInstance.local_temp(str(tmp_path_factory.mktemp("plain"))) as instance:
            assert type(instance.event_log_storage).__name__ == "SqliteEventLogStorage"
            _runs(instance)
            return _snapshot(instance)


@pytest.mark.parametrize("batch_size", [None, "100"])
def test_tuned_storage_stores_what_dagsters_sqlite_storage_stores(reference, tmp_path, monkeypatch, batch_size):
    batches: list[list[dg.DagsterEventType]] = []
    store_batch = TunedSqliteEventLogStorage.store_event_batch

    def spy(self, events):
        batches.append([e.dagster_event_type for e in events])
        return store_batch(self, events)

    monkeypatch.setattr(TunedSqliteEventLogStorage, "store_event_batch", spy)
    if batch_size is None:
        monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    else:
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", batch_size)
    with dg.DagsterInstance.local_temp(str(tmp_path)) as default, tuned(default) as instance:
        assert isinstance(instance.event_log_storage, TunedSqliteEventLogStorage)
        _runs(instance)
        snapshot = _snapshot(instance)
    if batch_size:  # planned events at run creation, a range's materializations: several events per batch
        kinds = {t for batch in batches if len(batch) > 1 for t in batch}
        assert {T.ASSET_MATERIALIZATION_PLANNED, T.ASSET_CHECK_EVALUATION_PLANNED, T.ASSET_MATERIALIZATION} <= kinds
    else:  # store_event is the batch of one
        assert batches and all(len(batch) == 1 for batch in batches)
    assert snapshot.keys() == reference.keys()
    for key, value in reference.items():
        assert snapshot[key] == value, key
    # The scenario is the one meant: a failed day planned but not materialized, failed and passed checks.
    days = DAYS.get_partition_keys()
    assert reference[RAW, "materialized"] == [d for d in days[1:10] if d != BAD_DAY]
    assert reference[FEAT, "materialized"] == days[1:9]
    assert reference[RAW, "planned"][6][::2] == (BAD_DAY, 1)  # planned by the second run
    assert [reference[CHECKS[0], day][2] for day in (BAD_DAY, "2013-01-08")] == [FAILED, SUCCEEDED]
    assert [reference[CHECKS[1], day][2] for day in ("2013-01-03", "2013-01-04")] == [FAILED, SUCCEEDED]
    assert reference[CHECKS[1], "2013-01-10"] is None


def test_threads_writing_batches_and_reading_at_once_finish(tmp_path, monkeypatch):
    """A batch keeps the index connection it opened for its own nested writes; other threads wait for it."""
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "100")
    job = dg.Definitions(assets=[raw, feat]).resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.local_temp(str(tmp_path)) as default, tuned(default) as instance:
        def run(start: str, end: str) -> None:
            job.execute_in_process(run_config=QUIET, instance=instance, asset_selection=[FEAT], tags={
                "dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end})

        threads = [threading.Thread(target=run, args=days) for days in
                   (("2013-01-01", "2013-01-05"), ("2013-01-06", "2013-01-10"))]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            instance.get_latest_materialization_event(FEAT)
            instance.event_log_storage.get_asset_check_summary_records([CHECKS[1]])
            for thread in threads:
                thread.join(timeout=0.05)
        assert sorted(instance.get_materialized_partitions(FEAT)) == DAYS.get_partition_keys()[:10]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in instance.get_runs())


def test_a_failed_batch_stores_nothing_and_dagsters_event_by_event_retry_stores_each_event_once(
        tmp_path, monkeypatch, capfd):
    """The index write of the first batch of several events fails (a locked database, say): Dagster then stores
    the batch's events one by one. Each event must be in the run's log once, as in the same run without failure."""
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "100")
    store_asset_entries = TunedSqliteEventLogStorage._store_asset_entries
    failed: list[int] = []

    def fail_first_batch(self, conn, assets):
        # Inside the batch's index transaction, after its event rows: the transaction rolls back.
        if len(assets) > 1 and not failed:
            failed.append(len(assets))
            raise sqlite3.OperationalError("database is locked")
        return store_asset_entries(self, conn, assets)

    job = dg.Definitions(assets=[raw, feat]).resolve_implicit_global_asset_job_def()
    tags = {"dagster/asset_partition_range_start": "2013-01-02", "dagster/asset_partition_range_end": "2013-01-05"}
    logs, indexed = [], []
    for home, inject in ((tmp_path / "clean", False), (tmp_path / "failing", True)):
        home.mkdir()
        if inject:
            monkeypatch.setattr(TunedSqliteEventLogStorage, "_store_asset_entries", fail_first_batch)
        with dg.DagsterInstance.local_temp(str(home)) as default, tuned(default) as instance:
            result = job.execute_in_process(run_config=QUIET, instance=instance, tags=tags)
            assert result.success
            logs.append(sorted((e.dagster_event_type or "", e.step_key or "", str(e.dagster_event and e.dagster_event.asset_key),
                                str(e.dagster_event and e.dagster_event.partition)) for e in instance.all_logs(result.run_id)))
            indexed.append({t: len(instance.event_log_storage.get_event_records(dg.EventRecordsFilter(event_type=t)))
                            for t in INDEXED})
            assert sorted(instance.get_materialized_partitions(RAW)) == ["2013-01-02", "2013-01-03", "2013-01-04",
                                                                         "2013-01-05"]
    assert failed and failed[0] > 1
    assert "Falling back to storing multiple single-event storage requests" in capfd.readouterr().err
    assert logs[1] == logs[0]
    assert indexed[1] == indexed[0]
    assert indexed[0][T.ASSET_MATERIALIZATION_PLANNED] == 8  # raw and feat, 4 days each, once
