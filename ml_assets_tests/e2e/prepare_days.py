"""Build raw, features and labels of landed days in one process, on the instance of DAGSTER_HOME.

`python -m ml_assets_tests.e2e.prepare_days FIRST LAST` (ISO days), run with a deployment's
environment (its spec, store and instance): the set-up of the Celery tests, which are about how
later steps run, not about how the first days were built. Raw runs one day at a time (as the
landed_blobs sensor requests it); features and labels as one range (their single-run policy).
"""

from __future__ import annotations

import datetime as dt
import sys


def main(first: str, last: str) -> None:
    import dagster as dg

    from ml_assets.definitions import defs

    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    days = [(start + dt.timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]
    with dg.DagsterInstance.get() as instance:
        raw_job = defs.resolve_job_def("raw_job")
        for day in days:
            raw_job.execute_in_process(instance=instance, partition_key=day)
        defs.resolve_job_def("feature_job").execute_in_process(instance=instance, tags={
            "dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]})


if __name__ == "__main__":
    main(*sys.argv[1:3])
