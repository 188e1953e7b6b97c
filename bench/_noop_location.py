"""A code location for bench_run_overhead.py: the real ml_assets import cost, a no-op raw-like job.

Importing ml_assets.definitions makes every run worker pay what a real raw run pays to load the
code location; the job itself is one daily-partitioned asset with a blocking check and no data
work, so the timing is Dagster's per-run overhead, not Spark's.
"""

import dagster as dg

import ml_assets.definitions  # noqa: F401  (load cost of the real code location)

days = dg.DailyPartitionsDefinition(start_date="2013-01-01", end_date="2014-01-01")


@dg.asset(partitions_def=days, check_specs=[dg.AssetCheckSpec("noop_rows", asset="raw_noop",
                                                               blocking=True)])
def raw_noop(context: dg.AssetExecutionContext):
    """A raw-shaped day with no data work."""
    yield dg.MaterializeResult(metadata={"day": context.partition_key})
    yield dg.AssetCheckResult(passed=True, check_name="noop_rows")


raw_noop_job = dg.define_asset_job("raw_noop_job", selection=[raw_noop])

defs = dg.Definitions(assets=[raw_noop], jobs=[raw_noop_job])
