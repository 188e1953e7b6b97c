"""Blocking data-quality checks on features and labels (raw checks run inside the raw assets)."""

from collections.abc import Callable, Iterator

import dagster as dg

from ml_assets.defs.assets.features import features, labels
from ml_assets.defs.checks.per_day import day_evaluations, range_days
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import SPARK_POOL, STORE_RETRY
from ml_assets.defs.partitions import daily_partitions
from ml_assets.ml.features import daily_profile, expected_feature_types, schema_problems
from ml_assets.ml.labels import settled_days
from ml_assets.ml.unique_keys import KeyReport
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.resources.spark import SparkDataFrame

# The checks' inputs shadow the asset names: their keys, for the per-day verdicts.
FEATURES, LABELS = features.key, labels.key


def _verdicts(context: dg.AssetCheckExecutionContext, key: dg.AssetKey, whole: dg.AssetCheckResult,
              by_day: Callable[[str], dg.AssetCheckResult]) -> Iterator:
    """One day: `whole` (Dagster gives it the day). A range run: one evaluation per day (by_day),
    so one bad day fails only itself; the step still fails if any blocking verdict failed."""
    if (days := range_days(context)) is None:
        yield whole
        return
    yield from day_evaluations(context.instance, key, {day: [by_day(day)] for day in days})
    yield dg.Output(None)


def _result(name: str, problems: list[str], metadata: dict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=name, passed=not problems, description="; ".join(problems) or None,
                               metadata=metadata)


def _day_quality(stats: dict | None) -> list[str]:
    if stats is None:
        return ["no rows"]
    problems = [f"{stats['rows']} rows < {SPEC.quality.min_rows}"] if stats["rows"] < SPEC.quality.min_rows else []
    return problems + [
        f"{name} null rate {stats[name]:.3f} > {SPEC.quality.null_bound(name)}"
        for name in SPEC.features.names
        if stats[name] > SPEC.quality.null_bound(name)
    ]


def _feature_check(name: str, description: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=features, blocking=True, partitions_def=daily_partitions,
                             description=description)


FEATURE_CHECKS = [
    _feature_check("features_schema", "Every spec feature is present with its type"),
    _feature_check("features_quality", "Each day has enough rows and each feature's null rate is within bounds"),
    _feature_check("features_unique_keys",
                   "The spec's key_columns are unique within each day (a join fanning out fails it)"),
]


def _schema_verdicts(frame: SparkDataFrame) -> tuple[dg.AssetCheckResult, Callable[[str], dg.AssetCheckResult]]:
    expected = expected_feature_types(SPEC)
    problems = schema_problems(frame, expected)
    result = _result("features_schema", problems, {"expected": dg.MetadataValue.json(expected),
                                                   "problems": dg.MetadataValue.json(problems)})
    # One frame, one schema: every day of a range shares the verdict.
    return result, lambda day: result


def _quality_verdicts(profile: dict) -> tuple[dg.AssetCheckResult, Callable[[str], dg.AssetCheckResult]]:
    failures = {day: problems for day, stats in sorted(profile.items()) if (problems := _day_quality(stats))}
    whole = dg.AssetCheckResult(
        check_name="features_quality",
        passed=bool(profile) and not failures,
        description=None if profile and not failures else f"failing days: {sorted(failures) or 'no rows at all'}",
        metadata={
            "days": len(profile),
            "rows": sum(int(stats["rows"]) for stats in profile.values()),
            "failures": dg.MetadataValue.json(failures),
        },
    )
    return whole, lambda day: _result("features_quality", _day_quality(profile.get(day)),
                                      {"rows": int(profile[day]["rows"]) if day in profile else 0})


def _unique_keys_verdicts(reports: dict[str, KeyReport]) -> tuple[dg.AssetCheckResult,
                                                                  Callable[[str], dg.AssetCheckResult]]:
    whole = dg.AssetCheckResult(
        check_name="features_unique_keys",
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
    return whole, lambda day: _result(
        "features_unique_keys", [reports[day].describe()] if day in reports else [],
        {"duplicated_keys": reports[day].duplicated_keys if day in reports else 0,
         "first": dg.MetadataValue.json(reports[day].first if day in reports else [])})


@dg.multi_asset_check(specs=FEATURE_CHECKS, can_subset=True, pool=SPARK_POOL, retry_policy=STORE_RETRY,
                      description="The features' blocking checks (schema, quality, unique keys) on one load")
def features_checks(context: dg.AssetCheckExecutionContext, features: SparkDataFrame) -> Iterator:
    # One step loads the frame once, and quality and unique keys share one Spark aggregation;
    # each check keeps its own verdicts (per day in a range run). Only the selected checks run.
    selected = {key.name for key in context.selected_asset_check_keys}
    verdicts = []
    if "features_schema" in selected:
        verdicts.append(_schema_verdicts(features))
    if selected & {"features_quality", "features_unique_keys"}:
        keyed = "features_unique_keys" in selected
        profile, reports = daily_profile(features, SPEC.features.names, SPEC.key_columns if keyed else None)
        if "features_quality" in selected:
            verdicts.append(_quality_verdicts(profile))
        if keyed:
            verdicts.append(_unique_keys_verdicts(reports))
    if (days := range_days(context)) is None:
        for whole, _ in verdicts:
            yield whole  # Dagster gives each its day
        return
    yield from day_evaluations(context.instance, FEATURES,
                               {day: [by_day(day) for _, by_day in verdicts] for day in days})
    for spec in FEATURE_CHECKS:
        if spec.name in selected:
            yield dg.Output(None, output_name=spec.get_python_identifier())


@dg.asset_check(asset=labels, blocking=True, partitions_def=daily_partitions,
                pool=SPARK_POOL, retry_policy=STORE_RETRY,
                description="Each day's label rate is within quality.label_rate")
def label_rate(context: dg.AssetCheckExecutionContext, labels: SparkDataFrame,
               blob_store: BlobStoreResource) -> Iterator:
    from pyspark.sql import functions as F

    bounds = SPEC.quality.label_rate
    rates = {
        str(row["date"]): (row["rate"], row["rows"])
        for row in labels.groupBy("date")
        .agg(F.avg(F.col(SPEC.label.name)).alias("rate"), F.count(F.lit(1)).alias("rows"))
        .collect()
    }
    # With a label feed a day still filling up is a biased sample (orders: returns resolve before
    # non-returns): only days whose outcomes reached label_feed.min_coverage are judged.
    settled = set(settled_days(SPEC, blob_store.datasets(), sorted(rates)))
    unsettled = {day for day in rates if day not in settled}
    out = {day: round(rate, 4) for day, (rate, _) in rates.items()
           if day not in unsettled and not bounds.min <= rate <= bounds.max}
    # With a label feed a day without rows is one whose outcomes have not landed yet, not a bad day.
    feed = SPEC.label_feed is not None
    whole = dg.AssetCheckResult(
        check_name="label_rate",
        passed=(bool(rates) or feed) and not out,
        description=None if (rates or feed) and not out
        else f"label rate out of [{bounds.min}, {bounds.max}]: {out or 'no rows'}",
        metadata={
            "label_rate_by_day": dg.MetadataValue.json({d: round(r, 4) for d, (r, _) in sorted(rates.items())}),
            "bounds": dg.MetadataValue.json({"min": bounds.min, "max": bounds.max}),
        },
    )

    def by_day(day: str) -> dg.AssetCheckResult:
        rate = rates.get(day, (None, 0))[0]
        problem = ("no rows" if rate is None and not feed else
                   f"label rate {rate:.4f} out of [{bounds.min}, {bounds.max}]" if day in out else None)
        return _result("label_rate", [problem] if problem else [],
                       {"label_rate": round(rate, 4) if rate is not None else None, "rows": rates.get(day, (0, 0))[1],
                        "settled": day not in unsettled})

    yield from _verdicts(context, LABELS, whole, by_day)
