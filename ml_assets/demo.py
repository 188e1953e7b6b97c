"""The main job on embedded defaults: land days, let the platform bring every asset up to date."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import dagster as dg

from ml_assets.defs.assets.raw import raw_asset_key
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.sensors.landed_blobs import landed_blobs_sensor
from ml_assets.examples import load_example
from ml_assets.landing import days_between, land

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass
class DemoReport:
    days: list[str]
    raw_failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def contiguous_ranges(keys: list[str]) -> list[tuple[str, str]]:
    """Sorted day keys grouped into runs of consecutive days."""
    ranges: list[tuple[str, str]] = []
    for key in sorted(keys):
        day = dt.date.fromisoformat(key)
        if ranges and dt.date.fromisoformat(ranges[-1][1]) + dt.timedelta(days=1) == day:
            ranges[-1] = (ranges[-1][0], key)
        else:
            ranges.append((key, key))
    return ranges


def run_demo(defs: dg.Definitions, instance: dg.DagsterInstance, start: dt.date, end: dt.date,
             log=print) -> DemoReport:
    resources = defs.resources
    store = resources["blob_store"].blob_store()
    report = DemoReport(days=[d.isoformat() for d in days_between(start, end)])
    job = defs.resolve_implicit_global_asset_job_def()

    began = time.perf_counter()
    frames = load_example(SPEC.example_data) if SPEC.example_data else {}
    landed = land(store, SPEC, frames, days_between(start, end), progress=True)
    report.seconds["land"] = time.perf_counter() - began
    log(f"landed {len(landed)} blobs for {start}..{end} into {store.location}")

    # The landed_blobs sensor decides what to materialize, exactly as the daemon would.
    began = time.perf_counter()
    with dg.build_sensor_context(instance=instance, resources=resources, definitions=defs) as context:
        tick = landed_blobs_sensor(context)
    requests = [r for r in tick.run_requests or [] if r.partition_key in report.days]
    ok_days = []
    for request in requests:
        result = job.execute_in_process(
            instance=instance, partition_key=request.partition_key,
            asset_selection=list(request.asset_selection), tags=request.tags, raise_on_error=False,
        )
        if result.success:
            ok_days.append(request.partition_key)
        else:
            report.raw_failed[request.partition_key] = _failure_message(result)
    report.seconds["raw"] = time.perf_counter() - began
    log(f"raw: {len(ok_days)} day(s) materialized, {len(report.raw_failed)} failed")
    for day, message in sorted(report.raw_failed.items()):
        log(f"  {day}: {message}")

    began = time.perf_counter()
    for first, last in contiguous_ranges(ok_days):
        _run_range(job, instance, ["features", "labels"], first, last)
    report.seconds["features_labels"] = time.perf_counter() - began

    began = time.perf_counter()
    result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("cluster_model")])
    _raise_unless(result, "cluster_model")
    for first, last in contiguous_ranges(ok_days):
        _run_range(job, instance, ["clusters"], first, last)
    report.seconds["clusters"] = time.perf_counter() - began
    return report


def _run_range(job, instance, assets: list[str], first: str, last: str) -> None:
    result = job.execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey(a) for a in assets],
        tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
    )
    _raise_unless(result, f"{assets} {first}..{last}")


def _raise_unless(result: dg.ExecuteInProcessResult, what: str) -> None:
    if not result.success:
        raise RuntimeError(f"run for {what} failed: {_failure_message(result)}")


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    failed_checks = [e for e in result.get_asset_check_evaluations() if not e.passed]
    if failed_checks:
        return "; ".join(
            f"check {e.asset_key.to_user_string()}.{e.check_name} failed: {e.description}" for e in failed_checks
        )
    for event in result.all_events:
        if event.is_step_failure:
            user_failure = event.step_failure_data.user_failure_data
            if user_failure is not None and user_failure.description:
                return user_failure.description
            return event.step_failure_data.error.message.strip().splitlines()[0]
    return "run failed"


def summary_rows(instance: dg.DagsterInstance, days: list[str]) -> list[dict]:
    """Per day: rows stored by each daily asset, from the latest materialization metadata."""
    rows = []
    keys = [*(raw_asset_key(s) for s in SPEC.sources), dg.AssetKey("features"),
            dg.AssetKey("labels"), dg.AssetKey("clusters")]
    latest = {key: _rows_by_partition(instance, key) for key in keys}
    for day in days:
        rows.append({"day": day, **{key.to_user_string(): latest[key].get(day) for key in keys}})
    return rows


def _rows_by_partition(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, int]:
    found: dict[str, int] = {}
    records = instance.fetch_materializations(key, limit=2000).records
    for record in reversed(records):
        materialization = record.asset_materialization
        if materialization is None:
            continue
        metadata = materialization.metadata
        if "rows_per_partition" in metadata:
            found.update(metadata["rows_per_partition"].value)
        elif "rows" in metadata and materialization.partition:
            found[materialization.partition] = metadata["rows"].value
    return found
