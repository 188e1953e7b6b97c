"""Features: the raw sources joined and transformed in Spark, per the spec (labels: defs/assets/labels.py)."""

import dagster as dg

from ml_assets.defs.assets.labels import labels  # noqa: F401  moved to labels.py; re-exported for module loaders
from ml_assets.defs.assets.raw import raw_asset_key
from ml_assets.defs.automation import on_raw_day_changed
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import SPARK_POOL, STORE_RETRY
from ml_assets.defs.freshness import data_freshness
from ml_assets.defs.partitions import daily_partitions
from ml_assets.ml.features import build_features, joined_frame
from ml_assets.resources.spark import SparkDataFrame

_RAW_INS = {f"raw_{source}": dg.AssetIn(key=raw_asset_key(source)) for source in SPEC.feature_sources}

_SPARK_DAILY = dict(
    partitions_def=daily_partitions,
    # A range of days is one Spark job, not one Spark start-up per day.
    backfill_policy=dg.BackfillPolicy.single_run(),
    io_manager_key="spark_io",
    automation_condition=on_raw_day_changed,
    ins=_RAW_INS,
    code_version="1",
    kinds={"spark", "parquet"},
    pool=SPARK_POOL,
    retry_policy=STORE_RETRY,
)


def _tables(raw_tables: dict[str, SparkDataFrame]) -> dict[str, SparkDataFrame]:
    return {name.removeprefix("raw_"): frame for name, frame in raw_tables.items()}


@dg.asset(group_name="features", description="Model inputs known at scheduling time, one row per example.",
          freshness_policy=data_freshness, **_SPARK_DAILY)
def features(context: dg.AssetExecutionContext, **raw_tables: SparkDataFrame) -> SparkDataFrame:
    context.log.info(f"features for {len(context.partition_keys)} day(s): {context.partition_key_range}")
    return build_features(SPEC, joined_frame(SPEC, _tables(raw_tables)))

