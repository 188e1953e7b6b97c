"""store_gc_job runs `collect_garbage` through the blob-store resource; its schedule is off."""

from pathlib import Path

import dagster as dg

from ml_assets.defs.gc import store_gc_job, store_gc_schedule
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.storage import LocalBlobStore


def test_schedule_is_stopped_by_default():
    assert store_gc_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert store_gc_schedule.job_name == "store_gc_job"


def test_job_deletes_debris_past_the_grace_period(tmp_path: Path):
    blobs = LocalBlobStore(tmp_path / "store")
    blobs.put("models/flights/1/.reserved", b"{}")
    blobs.put("models/flights/1/model.bin", b"x" * 700)
    resource = BlobStoreResource(local_root=str(tmp_path / "store"), cache_dir=str(tmp_path / "cache"))

    def run(**config):
        result = store_gc_job.execute_in_process(
            resources={"blob_store": resource},
            run_config={"ops": {"collect_store_garbage": {"config": config}}},
        )
        assert result.success
        return result.output_for_node("collect_store_garbage")

    assert run() == 0  # default grace period: 24 h
    assert run(grace_hours=0, dry_run=True) == 700
    assert blobs.exists("models/flights/1/model.bin")
    assert run(grace_hours=0) == 700
    assert not blobs.exists("models/flights/1/model.bin")
    assert blobs.exists("models/flights/1/.reserved")  # the number stays claimed
