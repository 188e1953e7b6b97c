"""What the Dagster instance knows about each raw partition: its stored version, and who is on it.

Shared by the ``landed_blobs`` sensor (which days to request) and the raw assets (whether to
skip a day), so that a day is materialized once per landed version whichever of the sensor, a
backfill, a job run or a run retry gets to it first.
"""

from collections.abc import Iterable

import dagster as dg

DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
WILL_RETRY_TAG = "dagster/will_retry"
AUTO_RETRY_RUN_ID_TAG = "dagster/auto_retry_run_id"
# Jobs whose runs without an explicit asset selection materialize every raw asset.
RAW_JOBS = {"raw_job", "__ASSET_JOB"}
UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
EXECUTING = {dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING}


def stored_data_versions(instance: dg.DagsterInstance, key: dg.AssetKey, days: Iterable[str]) -> dict[str, str]:
    """The data version of each day's latest materialization (days never materialized are absent)."""
    tags = instance.event_log_storage.get_latest_tags_by_partition(
        key, dg.DagsterEventType.ASSET_MATERIALIZATION, [DATA_VERSION_TAG], asset_partitions=list(days),
    )
    return {day: t[DATA_VERSION_TAG] for day, t in tags.items() if DATA_VERSION_TAG in t}


def stored_versions(instance: dg.DagsterInstance, key: dg.AssetKey, day: str) -> tuple[str | None, str | None]:
    """(data version, code version) of the day's latest materialization; (None, None) if there is none."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1).records
    if not records:
        return None, None
    tags = records[0].asset_materialization.tags or {}
    return tags.get(DATA_VERSION_TAG), tags.get(CODE_VERSION_TAG)


def latest_materializations(instance: dg.DagsterInstance, key: dg.AssetKey,
                             days: Iterable[str]) -> dict[str, dg.EventLogRecord]:
    """Each day's latest materialization record, in two queries whatever the number of days."""
    latest = instance.event_log_storage.get_latest_storage_id_by_partition(
        key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(days))
    if not latest:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, storage_ids=list(latest.values())), limit=len(latest)).records
    by_id = {r.storage_id: r for r in records}
    return {day: by_id[sid] for day, sid in latest.items() if sid in by_id}


def stored_versions_by_day(instance: dg.DagsterInstance, key: dg.AssetKey,
                           days: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
    """stored_versions for many days in two queries (a range run asks for all its days at once)."""
    tags = {day: record.asset_materialization.tags or {}
            for day, record in latest_materializations(instance, key, days).items()}
    return {day: (tag.get(DATA_VERSION_TAG), tag.get(CODE_VERSION_TAG)) for day, tag in tags.items()}


def run_days(run: dg.DagsterRun) -> list[str]:
    """The days a run materializes: its partition, or every day of its single-run range."""
    if (day := run.tags.get(PARTITION_TAG)) is not None:
        return [day]
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if start is None or end is None:
        return []
    from ml_assets.defs.partitions import daily_partitions

    return list(daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(start, end)))


def _raw_keys_of(run: dg.DagsterRun, keys: set[dg.AssetKey]) -> set[dg.AssetKey]:
    if run.asset_selection is not None:
        return set(run.asset_selection) & keys
    return set(keys) if run.job_name in RAW_JOBS else set()


def runs_on(instance: dg.DagsterInstance, keys: set[dg.AssetKey]) -> dict[tuple[dg.AssetKey, str], str]:
    """{(raw key, day): run id} for every run that will or may still materialize that partition.

    Queued or running runs from any source (sensor, backfill, UI, run retry), and failed runs
    whose automatic retry the run-retry daemon has decided on but not created yet.
    """
    owners: dict[tuple[dg.AssetKey, str], str] = {}
    unfinished = instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED), limit=1000)
    awaiting_retry = [
        run for run in instance.get_runs(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], tags={WILL_RETRY_TAG: "true"}), limit=200)
        if AUTO_RETRY_RUN_ID_TAG not in run.tags
    ]
    for run in [*unfinished, *awaiting_retry]:
        raw_keys = _raw_keys_of(run, keys)
        for day in run_days(run) if raw_keys else []:
            for key in raw_keys:
                owners.setdefault((key, day), run.run_id)
    return owners


def backfills_on(instance: dg.DagsterInstance, keys: set[dg.AssetKey]) -> dict[tuple[dg.AssetKey, str], str]:
    """{(raw key, day): backfill id} for partitions a running backfill has yet to materialize or fail."""
    # Dagster internals, imported here: loading the code location should not pay for them.
    from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

    owners: dict[tuple[dg.AssetKey, str], str] = {}
    for backfill in instance.get_backfills(filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED])):
        data = backfill.asset_backfill_data
        if data is not None:
            for item in data.get_targeted_partitions_without_materialization_status().iterate_asset_partitions():
                if item.asset_key in keys and item.partition_key is not None:
                    owners.setdefault((item.asset_key, item.partition_key), backfill.backfill_id)
        elif backfill.partition_names and backfill.job_name in RAW_JOBS:
            for day in backfill.partition_names:
                for key in keys:
                    owners.setdefault((key, day), backfill.backfill_id)
    return owners


def earlier_run_executing(instance: dg.DagsterInstance, key: dg.AssetKey, day: str, run_id: str) -> str | None:
    """The id of a run created before `run_id` that is executing the same raw partition, if any.

    Of two runs executing one day at once, the later one steps aside; if the earlier one fails,
    the landed_blobs sensor requests the day again.
    """
    return earlier_runs_executing(instance, key, [day], run_id).get(day)


def earlier_runs_executing(instance: dg.DagsterInstance, key: dg.AssetKey, days: Iterable[str],
                           run_id: str) -> dict[str, str]:
    """{day: run id} for the days of `days` that an earlier executing run (one day or a range) holds."""
    mine = instance.get_run_record_by_id(run_id)
    if mine is None:
        return {}
    wanted, owners = set(days), {}
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=list(EXECUTING)), limit=200):
        run = record.dagster_run
        if run.run_id == run_id or record.create_timestamp >= mine.create_timestamp or key not in _raw_keys_of(run, {key}):
            continue
        for day in wanted.intersection(run_days(run)):
            owners.setdefault(day, run.run_id)
    return owners


def latest_check_results(instance: dg.DagsterInstance, key: dg.AssetKey, checks: Iterable[str],
                         day: str) -> list[dg.AssetCheckResult]:
    """The day's latest verdict of each check, to restate when the day is skipped as unchanged.

    A run that plans a blocking check and records no verdict leaves the check without a result
    for the day, and automation then holds back everything downstream; unchanged data keeps its
    verdict, so the skipping run records it again (this adds no materialization).
    """
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._core.storage.asset_check_execution_record import (
        COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
    )

    results = []
    for name in checks:
        history = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(key, name), limit=1, status=set(COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES), partition_filter=PartitionKeyFilter(key=day))
        evaluation = history[0].evaluation if history else None
        if evaluation is not None:
            results.append(dg.AssetCheckResult(
                asset_key=key, check_name=name, passed=evaluation.passed, severity=evaluation.severity,
                description=evaluation.description,
                metadata={**evaluation.metadata, "restated_from_run": dg.MetadataValue.dagster_run(history[0].run_id)},
            ))
    return results
