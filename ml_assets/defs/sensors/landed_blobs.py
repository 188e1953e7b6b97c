"""Request raw partitions for days whose landed blobs are new or changed since the last tick."""

import json
from collections import defaultdict

import dagster as dg

from ml_assets.defs.assets.raw import day_version, raw_asset_key
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.partitions import daily_partitions
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.storage import BlobStore


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


@dg.sensor(
    name="landed_blobs",
    target=[raw_asset_key(source) for source in SPEC.sources],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Materializes the raw partitions of newly landed or re-landed days.",
)
def landed_blobs_sensor(context: dg.SensorEvaluationContext, blob_store: BlobStoreResource):
    seen: dict[str, dict[str, str]] = json.loads(context.cursor) if context.cursor else {}
    current = landed_day_versions(blob_store.blob_store())
    valid_days = set(daily_partitions.get_partition_keys())
    requests = []
    for day in sorted(current):
        if day not in valid_days:
            context.log.warning(f"landed day {day} is outside the partitions of the spec; ignored")
            continue
        changed = sorted(s for s, v in current[day].items() if seen.get(day, {}).get(s) != v)
        if changed:
            run_key = f"{day}:" + ",".join(f"{s}={current[day][s]}" for s in changed)
            requests.append(
                dg.RunRequest(
                    run_key=run_key,
                    partition_key=day,
                    asset_selection=[raw_asset_key(s) for s in changed],
                    tags={"ml_assets/trigger": "landed_blobs"},
                )
            )
    cursor = json.dumps(current, sort_keys=True)
    if not requests:
        return dg.SensorResult(skip_reason=f"no new or changed blobs in {len(current)} landed day(s)", cursor=cursor)
    context.log.info(f"{len(requests)} day(s) landed or changed: {[r.partition_key for r in requests]}")
    return dg.SensorResult(run_requests=requests, cursor=cursor)

