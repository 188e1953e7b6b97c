"""Request the raw partitions of landed days that are not stored at their landed version.

Every tick compares the blobs in the store with what the instance knows, so nothing depends on
what earlier ticks requested (the cursor only summarises the last tick for the UI):

- a (day, source) whose latest raw materialization carries the day's current blob version is done;
- one that a queued or running run, a run awaiting its automatic retry, or a running backfill
  will materialize is left to it (whoever launched it);
- otherwise it is requested, once per landed version, and after a failed attempt again with
  backoff (RETRY_BACKOFF_SECONDS doubling up to RETRY_BACKOFF_MAX_SECONDS), at most
  MAX_ATTEMPTS times; then the sensor says so in its skip reason and waits for the blobs to
  change (a new version starts a new count) or for someone to run the day by hand.
"""

import datetime as dt
import json
from collections import defaultdict

import dagster as dg

from ml_assets.defs.assets.raw import day_version, raw_asset_key
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import ensure_pool_limits
from ml_assets.defs.partitions import daily_partitions
from ml_assets.defs.raw_state import backfills_on, runs_on, stored_data_versions
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.storage import BlobStore

TRIGGER_TAG = "ml_assets/trigger"
DAY_TAG = "ml_assets/landed_day"
VERSIONS_TAG = "ml_assets/landed_versions"
ATTEMPT_TAG = "ml_assets/attempt"
# Attempts per landed version of a day: a store outage longer than a step's own retries
# (execution.STORE_RETRY, ~2 min) costs one attempt; five span an outage of an hour or so.
MAX_ATTEMPTS = 5
RETRY_BACKOFF_SECONDS = 120
RETRY_BACKOFF_MAX_SECONDS = 1800


def landed_day_versions(store: BlobStore) -> dict[str, dict[str, str]]:
    """{day: {source: version}} of every landed blob, from listings only (no blob is read)."""
    days: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for source, source_spec in SPEC.sources.items():
        for blob in store.list(source_spec.prefix + "/"):
            folder = blob.key[len(source_spec.prefix) + 1 :].split("/", 1)[0]
            if folder.startswith("date="):
                days[folder.removeprefix("date=")][source].append(blob)
    return {
        day: {source: day_version(blobs) for source, blobs in sources.items()}
        for day, sources in days.items()
    }


def versions_tag(versions: dict[str, str]) -> str:
    return ",".join(f"{source}={version}" for source, version in sorted(versions.items()))


def _attempts(records: list[dg.RunRecord], source: str, version: str) -> list[dg.RunRecord]:
    """This sensor's finished runs for a day that covered `source` at `version` (retries of a run excluded)."""
    return [
        r for r in records
        if r.dagster_run.parent_run_id is None
        and r.dagster_run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
                                     dg.DagsterRunStatus.CANCELED)
        and f"{source}={version}" in r.dagster_run.tags.get(VERSIONS_TAG, "").split(",")
    ]


def retry_at(attempts: list[dg.RunRecord]) -> dt.datetime | None:
    """When the next attempt may start: the last one's end plus a backoff doubling per attempt."""
    if not attempts:
        return None
    last = max(attempts, key=lambda r: r.end_time or 0)
    delay = min(RETRY_BACKOFF_SECONDS * 2 ** (len(attempts) - 1), RETRY_BACKOFF_MAX_SECONDS)
    return dt.datetime.fromtimestamp((last.end_time or last.update_timestamp.timestamp()) + delay, dt.UTC)


@dg.sensor(
    name="landed_blobs",
    target=[raw_asset_key(source) for source in SPEC.sources],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Materializes the raw partitions of landed days not yet stored at their landed version; "
                f"retries a failed day with backoff, at most {MAX_ATTEMPTS} times per version.",
)
def landed_blobs_sensor(context: dg.SensorEvaluationContext, blob_store: BlobStoreResource):
    instance = context.instance
    if unlimited := ensure_pool_limits(instance):
        context.log.warning(f"pools {unlimited} have no limit on this instance: their steps (Spark sessions, "
                            "candidate fits) may overlap without bound (set concurrency.pools.default_limit "
                            "in dagster.yaml)")
    landed = landed_day_versions(blob_store.blob_store())
    valid_days = set(daily_partitions.get_partition_keys())
    for day in sorted(set(landed) - valid_days):
        context.log.warning(f"landed day {day} is outside the partitions of the spec; ignored")
    days = sorted(set(landed) & valid_days)
    keys = {raw_asset_key(source) for source in SPEC.sources}
    stored = {key: stored_data_versions(instance, key, days) for key in keys}
    owners = {**backfills_on(instance, keys), **runs_on(instance, keys)}
    now = dt.datetime.now(dt.UTC)

    requests, status, history = [], defaultdict(list), {}
    for day in days:
        todo: dict[str, tuple[str, int]] = {}
        for source, version in sorted(landed[day].items()):
            key = raw_asset_key(source)
            if stored[key].get(day) == version:
                status["stored"].append(f"{day} {source}")
            elif (key, day) in owners:
                status[f"in flight ({owners[key, day][:8]})"].append(f"{day} {source}")
            else:
                if day not in history:
                    history[day] = list(instance.get_run_records(
                        filters=dg.RunsFilter(tags={DAY_TAG: day, TRIGGER_TAG: "landed_blobs"})))
                attempts = _attempts(history[day], source, version)
                if len(attempts) >= MAX_ATTEMPTS:
                    status[f"given up after {MAX_ATTEMPTS} attempts at their landed version "
                           "(re-land the blobs or run raw_job for the day)"].append(f"{day} {source}")
                elif (at := retry_at(attempts)) is not None and at > now:
                    status[f"waiting to retry (attempt {len(attempts) + 1} after {at:%H:%M:%S} UTC)"].append(
                        f"{day} {source}")
                else:
                    todo[source] = (version, len(attempts) + 1)
        if todo:
            versions = {source: version for source, (version, _) in todo.items()}
            attempt = max(n for _, n in todo.values())
            requests.append(dg.RunRequest(
                run_key=f"{day}:{versions_tag(versions)}:attempt-{attempt}",
                partition_key=day,
                asset_selection=[raw_asset_key(s) for s in sorted(todo)],
                tags={TRIGGER_TAG: "landed_blobs", DAY_TAG: day, VERSIONS_TAG: versions_tag(versions),
                      ATTEMPT_TAG: str(attempt)},
            ))
    summary = {label: len(set(items)) if label == "stored" else sorted(set(items)) for label, items in status.items()}
    cursor = json.dumps({"landed_days": len(days), "requested": [r.partition_key for r in requests], **summary},
                        sort_keys=True)
    waiting = "; ".join(f"{label}: {', '.join(items)}" for label, items in summary.items() if label != "stored")
    if not requests:
        return dg.SensorResult(
            skip_reason=f"{len(days)} landed day(s), {summary.get('stored', 0)} source-day(s) stored at their "
                        f"landed version{'; ' + waiting if waiting else ''}",
            cursor=cursor,
        )
    context.log.info(f"requesting {[r.run_key for r in requests]}{'; ' + waiting if waiting else ''}")
    return dg.SensorResult(run_requests=requests, cursor=cursor)
