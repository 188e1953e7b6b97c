"""Blocking data-quality checks on features and labels (raw checks run inside the raw assets)."""

import dagster as dg

from ml_assets.defs.assets.features import features, labels
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import SPARK_POOL, STORE_RETRY
from ml_assets.defs.partitions import daily_partitions
from ml_assets.ml.features import daily_profile, expected_feature_types, schema_problems
from ml_assets.ml.raw import PARTITION_COLUMN
from ml_assets.ml.unique_keys import spark_duplicate_keys
from ml_assets.resources.spark import SparkDataFrame


@dg.asset_check(asset=features, blocking=True, partitions_def=daily_partitions,
                pool=SPARK_POOL, retry_policy=STORE_RETRY,
                description="Every spec feature is present with its type")
def features_schema(features: SparkDataFrame) -> dg.AssetCheckResult:
    expected = expected_feature_types(SPEC)
    problems = schema_problems(features, expected)
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) or None,
        metadata={"expected": dg.MetadataValue.json(expected), "problems": dg.MetadataValue.json(problems)},
    )


@dg.asset_check(asset=features, blocking=True, partitions_def=daily_partitions,
                pool=SPARK_POOL, retry_policy=STORE_RETRY,
                description="Each day has enough rows and each feature's null rate is within bounds")
def features_quality(features: SparkDataFrame) -> dg.AssetCheckResult:
    profile = daily_profile(features, SPEC.features.names)
    failures = {}
    for day, stats in sorted(profile.items()):
        problems = []
        if stats["rows"] < SPEC.quality.min_rows:
            problems.append(f"{stats['rows']} rows < {SPEC.quality.min_rows}")
        problems += [
            f"{name} null rate {stats[name]:.3f} > {SPEC.quality.null_bound(name)}"
            for name in SPEC.features.names
            if stats[name] > SPEC.quality.null_bound(name)
        ]
        if problems:
            failures[day] = problems
    return dg.AssetCheckResult(
        passed=bool(profile) and not failures,
        description=None if profile and not failures else f"failing days: {sorted(failures) or 'no rows at all'}",
        metadata={
            "days": len(profile),
            "rows": sum(int(stats["rows"]) for stats in profile.values()),
            "failures": dg.MetadataValue.json(failures),
        },
    )


@dg.asset_check(asset=features, blocking=True, partitions_def=daily_partitions,
                pool=SPARK_POOL, retry_policy=STORE_RETRY,
                description="The spec's key_columns are unique within each day (a join fanning out fails it)")
def features_unique_keys(features: SparkDataFrame) -> dg.AssetCheckResult:
    # A range run records one verdict for the range: the failing days are named in it.
    reports = spark_duplicate_keys(features, SPEC.key_columns, PARTITION_COLUMN)
    return dg.AssetCheckResult(
        passed=not reports,
        description="; ".join(f"{day}: {r.describe()}" for day, r in sorted(reports.items())) or None,
        metadata={
            "key_columns": dg.MetadataValue.json(SPEC.key_columns),
            "failing_days": dg.MetadataValue.json(sorted(reports)),
            "duplicates": dg.MetadataValue.json({day: {"duplicated_keys": r.duplicated_keys,
                                                       "extra_rows": r.extra_rows, "first": r.first}
                                                 for day, r in sorted(reports.items())}),
        },
    )


@dg.asset_check(asset=labels, blocking=True, partitions_def=daily_partitions,
                pool=SPARK_POOL, retry_policy=STORE_RETRY,
                description="Each day's label rate is within quality.label_rate")
def label_rate(labels: SparkDataFrame) -> dg.AssetCheckResult:
    from pyspark.sql import functions as F

    bounds = SPEC.quality.label_rate
    rates = {
        str(row["date"]): (row["rate"], row["rows"])
        for row in labels.groupBy("date")
        .agg(F.avg(F.col(SPEC.label.name)).alias("rate"), F.count(F.lit(1)).alias("rows"))
        .collect()
    }
    out = {day: round(rate, 4) for day, (rate, _) in rates.items() if not bounds.min <= rate <= bounds.max}
    return dg.AssetCheckResult(
        # With a label feed a day without rows is one whose outcomes have not landed yet, not a bad day.
        passed=(bool(rates) or SPEC.label_feed is not None) and not out,
        description=None if (rates or SPEC.label_feed is not None) and not out
        else f"label rate out of [{bounds.min}, {bounds.max}]: {out or 'no rows'}",
        metadata={
            "label_rate_by_day": dg.MetadataValue.json({d: round(r, 4) for d, (r, _) in sorted(rates.items())}),
            "bounds": dg.MetadataValue.json({"min": bounds.min, "max": bounds.max}),
        },
    )
