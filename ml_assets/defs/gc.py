"""Store clean-up as a Dagster job, and its nightly schedule (stopped until turned on)."""

import dagster as dg
from pydantic import Field

from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.storage.model_gc import DEFAULT_GRACE_HOURS, collect_garbage, describe


class StoreGcConfig(dg.Config):
    grace_hours: float = Field(
        DEFAULT_GRACE_HOURS,
        ge=0,
        description="Only debris untouched this long is removed (longer than any publish takes)",
    )
    dry_run: bool = Field(
        False,
        description="Report what would be removed without deleting (the CLI's default; the "
        "scheduled job deletes, since turning its schedule on is the opt-in)",
    )


@dg.op(description="Remove incomplete model versions and stale temp files past the grace period.")
def collect_store_garbage(
    context: dg.OpExecutionContext, config: StoreGcConfig, blob_store: BlobStoreResource
) -> int:
    """Bytes freed (or, on a dry run, that would be); never a version the pointer names."""
    report = collect_garbage(
        blob_store.models(), grace_seconds=config.grace_hours * 3600, apply=not config.dry_run
    )
    context.log.info(describe(report))
    context.add_output_metadata(
        {"bytes": report.bytes, "items": len(report.debris), "applied": report.applied}
    )
    return report.bytes


@dg.job(description="`ml-assets gc --apply` as a job: reclaim what killed publishes left behind.")
def store_gc_job() -> None:
    collect_store_garbage()


# Off by default: deleting is an operator's decision; turn it on in the UI or with
# `dagster schedule start store_gc_schedule`.
store_gc_schedule = dg.ScheduleDefinition(
    name="store_gc_schedule",
    job=store_gc_job,
    cron_schedule="30 3 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly store clean-up (stopped by default).",
)
