"""Labels: each example's outcome, from the base source's own columns or, with a label feed, joined by key
from the outcomes landed so far (re-materialized when late outcomes land)."""

from collections.abc import Iterator

import dagster as dg

from ml_assets.defs.assets.raw import raw_asset_key
from ml_assets.defs.automation import no_failed_blocking_check_upstream, on_raw_day_changed
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import SPARK_POOL, STORE_RETRY
from ml_assets.defs.freshness import data_freshness
from ml_assets.defs.partitions import daily_partitions
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.resources.spark import LazySparkResource, SparkDataFrame

FEED = SPEC.label_feed
LABELS_GROUP = "labels"
_DESCRIPTION = "The label of each example whose outcome is known."

_COMMON = dict(
    group_name=LABELS_GROUP,
    partitions_def=daily_partitions,
    # A range of days is one Spark job, not one Spark start-up per day (features and labels run together).
    backfill_policy=dg.BackfillPolicy.single_run(),
    io_manager_key="spark_io",
    kinds={"spark", "parquet"},
    pool=SPARK_POOL,
    retry_policy=STORE_RETRY,
    freshness_policy=data_freshness,
)


def _in_blob_labels() -> dg.AssetsDefinition:
    """Today's labels: the label expressions over the joined raw sources of the same day."""
    ins = {f"raw_{source}": dg.AssetIn(key=raw_asset_key(source)) for source in SPEC.feature_sources}

    @dg.asset(name="labels", description=_DESCRIPTION, ins=ins, automation_condition=on_raw_day_changed,
              code_version="1", **_COMMON)
    def labels(context: dg.AssetExecutionContext, **raw_tables: SparkDataFrame) -> SparkDataFrame:
        from ml_assets.ml.features import build_labels, joined_frame

        context.log.info(f"labels for {len(context.partition_keys)} day(s): {context.partition_key_range}")
        return build_labels(SPEC, joined_frame(SPEC, {k.removeprefix("raw_"): v for k, v in raw_tables.items()}))

    return labels


def _feed_labels() -> dg.AssetsDefinition:
    base_key, feed_key = raw_asset_key(SPEC.join.base), raw_asset_key(FEED.source)
    # Event day D reads the feed days D .. D+max_delay_days; days past the partitions' end are allowed.
    feed_window = dg.TimeWindowPartitionMapping(start_offset=0, end_offset=FEED.max_delay_days,
                                                allow_nonexistent_upstream_partitions=True)
    # A new version of the day's examples or of any feed day in reach rebuilds the day. Feed days
    # not landed yet are expected (outcomes come later): only the day's examples must exist. Unlike
    # eager(), not limited to the latest day: late outcomes are about earlier days.
    on_examples_or_outcomes_changed = (
        dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed()).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing().allow(dg.AssetSelection.assets(base_key))
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & no_failed_blocking_check_upstream
    ).with_label("the day's examples or an outcome feed day in reach landed or changed, and checks passed")

    @dg.asset(name="labels", description=_DESCRIPTION, ins={"examples": dg.AssetIn(key=base_key)},
              deps=[dg.AssetDep(feed_key, partition_mapping=feed_window)],
              automation_condition=on_examples_or_outcomes_changed, output_required=False,
              code_version="feed-1", **_COMMON)
    def labels(context: dg.AssetExecutionContext, examples: SparkDataFrame, blob_store: BlobStoreResource,
               pyspark: LazySparkResource) -> Iterator[dg.MaterializeResult]:
        """The day's examples joined by key with every outcome landed so far; unchanged days are not republished."""
        yield from _materialize_from_feed(context, examples, blob_store, pyspark)

    return labels


def _materialize_from_feed(context: dg.AssetExecutionContext, examples: SparkDataFrame,
                           blob_store: BlobStoreResource, pyspark: LazySparkResource) -> Iterator[dg.MaterializeResult]:
    from ml_assets.ml.labels import (
        LABELS_TABLE,
        DayLabelStats,
        content_digest,
        feed_days_for,
        feed_labels,
        stored_label_stats,
        write_label_stats,
    )
    from ml_assets.ml.raw import PARTITION_COLUMN
    from ml_assets.resources.spark_io import _write_split, read_tables, store_for_spark

    days = list(context.partition_keys)
    spark = pyspark.spark_session
    datasets = store_for_spark(spark, blob_store)
    feed_table = raw_asset_key(FEED.source).path[-1]
    landed = [d for d in feed_days_for(days, FEED.max_delay_days) if datasets.current(feed_table, d) is not None]
    feed = read_tables(spark, blob_store, feed_table, landed) if landed else None
    frame, counts = feed_labels(SPEC, examples, feed)
    frame = frame.cache()
    rows = frame.toPandas()
    day_of = rows[PARTITION_COLUMN].astype(str) if len(rows) else rows[PARTITION_COLUMN]
    examples_by_day = {str(r[PARTITION_COLUMN]): r for r in counts.collect()}
    changed, summary = [], {}
    for day in days:
        row = examples_by_day.get(day)
        day_rows = rows[day_of == day]
        examples_n = int(row["examples"]) if row else 0
        stats = DayLabelStats(
            day=day, examples=examples_n, outcomes=int(row["outcomes"]) if row else 0,
            labelled=int(row["labelled"]) if row else 0,
            feed_days=[d for d in landed if day <= d <= feed_days_for([day], FEED.max_delay_days)[-1]],
            digest=content_digest(day_rows.drop(columns=[PARTITION_COLUMN]), SPEC.key_columns, examples_n))
        stored = stored_label_stats(datasets, day)
        if stored is None or stored.get("digest") != stats.digest:
            changed.append(day)
        summary[day] = stats
    if changed:
        from pyspark.sql import functions as F

        subset = frame.where(F.date_format(F.col(PARTITION_COLUMN), "yyyy-MM-dd").isin(changed))
        _write_split(subset, datasets, LABELS_TABLE, changed)
    for day, stats in summary.items():
        version = write_label_stats(datasets, stats) if day in changed else datasets.require(LABELS_TABLE, day).version
        context.add_asset_metadata({**_metadata(stats), "changed": day in changed, "stored_version": version},
                                   partition_key=day)
    frame.unpersist()
    context.log.info(f"labels of {len(days)} day(s) from {len(landed)} feed day(s): "
                     + ", ".join(f"{d} {s.coverage:.0%}{'' if d in changed else ' (unchanged)'}" for d, s in summary.items()))
    if not changed:
        # Nothing new: no materialization, so nothing downstream re-judges the same labels.
        return
    single = summary[days[0]] if len(days) == 1 else None
    yield dg.MaterializeResult(data_version=dg.DataVersion(single.digest) if single else None,
                               metadata={"days_changed": len(changed), "feed_days_read": len(landed)})


def _metadata(stats) -> dict:
    return {"coverage": stats.coverage, "labelled_share": stats.labelled_share, "examples": stats.examples,
            "outcomes": stats.outcomes, "labelled": stats.labelled, "digest": stats.digest,
            "feed_days": dg.MetadataValue.json(stats.feed_days)}


labels = _in_blob_labels() if FEED is None else _feed_labels()
