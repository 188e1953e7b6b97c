"""Range backfills from the command line, planned by Dagster's backfill daemon like a UI request.

`dagster job backfill` queues one run PER PARTITION, whatever the assets' backfill policy: for the
Spark assets that is one JVM per day. `dagster asset materialize --partition-range` is one run, but
executes in the calling process and skips the run queue (and its Spark pool). This stores the same
asset backfill the UI's "Launch backfill" (GraphQL launchPartitionBackfill with a range) stores;
the daemon then launches one run per contiguous range (every daily asset is single-run: raw,
features, labels, clusters), through the queue. In a range run each raw day is still parsed,
judged and stored on its own (ml_assets/defs/assets/raw.py `_range_run`): a bad day is not stored,
the good days are, and the run fails naming the bad days.
"""

from __future__ import annotations

import datetime as dt
import time

import dagster as dg


class BackfillRequestError(ValueError):
    """The requested assets or days cannot be backfilled; the message says which and why."""


def launch_range_backfill(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    assets: list[str],
    start: dt.date,
    end: dt.date,
    title: str | None = None,
) -> str:
    """Store an asset backfill of assets over start..end (inclusive); returns its id."""
    from dagster._core.definitions.selector import (
        PartitionRangeSelector,
        PartitionsByAssetSelector,
        PartitionsSelector,
    )
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    graph = defs.resolve_asset_graph()
    known = {key.to_user_string(): key for key in graph.materializable_asset_keys}
    unknown = sorted(set(assets) - set(known))
    if unknown or not assets:
        raise BackfillRequestError(f"no such asset(s) {unknown or assets}; partitioned assets: "
                                   f"{sorted(a for a, k in known.items() if graph.get(k).is_partitioned)}")
    unpartitioned = sorted(a for a in assets if not graph.get(known[a]).is_partitioned)
    if unpartitioned:
        raise BackfillRequestError(f"asset(s) {unpartitioned} are not partitioned by day: nothing to backfill")
    if end < start:
        raise BackfillRequestError(f"--end {end} is before --start {start}")
    first, last = start.isoformat(), end.isoformat()
    for asset in assets:
        days = graph.get(known[asset]).partitions_def.get_partition_keys()
        if first not in days or last not in days:
            raise BackfillRequestError(
                f"{asset} has no partition {first if first not in days else last}: its days are "
                f"{days[0]}..{days[-1]} (up to the last complete day)"
            )
    backfill = PartitionBackfill.from_partitions_by_assets(
        backfill_id=make_new_backfill_id(),
        asset_graph=graph,
        backfill_timestamp=time.time(),
        tags={},
        dynamic_partitions_store=instance,
        partitions_by_assets=[
            PartitionsByAssetSelector(
                asset_key=known[asset],
                partitions=PartitionsSelector(ranges=[PartitionRangeSelector(start=first, end=last)]),
            )
            for asset in assets
        ],
        title=title or f"{','.join(assets)} {first}..{last}",
        description="ml-assets backfill",
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id
