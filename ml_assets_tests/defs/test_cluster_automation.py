"""Automation of the clusters group: cluster_model is fitted once and refitted weekly, clusters follow every day."""

import datetime as dt

import dagster as dg

from ml_assets.defs.assets.clusters import AUTOMATION_TAG, cluster_model, clusters
from ml_assets.defs.partitions import daily_partitions
from ml_assets.defs.resources import build_resources
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.resources.spark import LazySparkResource
from ml_assets_tests.fixtures.dagster import land_days, make_resources

FAILING_DAYS: set[str] = set()


@dg.asset(name="features", partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run())
def features_stand_in() -> dg.MaterializeResult:
    return dg.MaterializeResult()


@dg.asset_check(asset=features_stand_in, blocking=True, partitions_def=daily_partitions)
def stand_in_check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=not set(context.partition_keys) & FAILING_DAYS)


# Automation is only evaluated here, never run: neither the store nor Spark is opened.
DEFS = dg.Definitions(
    assets=[features_stand_in, cluster_model, clusters],
    asset_checks=[stand_in_check],
    resources=build_resources(BlobStoreResource(local_root="never-opened"), LazySparkResource(spark_config={})),
)
CLUSTERED = dg.AssetSelection.assets(cluster_model, clusters)


def requested(result) -> dict[str, list[str]]:
    """{asset: requested days} ([] for an unpartitioned asset)."""
    return {r.key.to_user_string(): sorted(r.true_subset.expensively_compute_partition_keys())
            if r.true_subset.is_partitioned else []
            for r in result.results if r.true_subset.size and isinstance(r.key, dg.AssetKey)}


def land(instance, first: str, last: str | None = None) -> None:
    """Features (and their blocking check) of one day, or of first..last in one range run, as automation runs them."""
    if last is None:
        dg.materialize([features_stand_in, stand_in_check], instance=instance, partition_key=first,
                       raise_on_error=False)
        return
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    dg.materialize([features_stand_in, stand_in_check], instance=instance, tags=tags, raise_on_error=False)


def record(instance, asset: str, *days: str) -> None:
    """A materialization as the requested run would record it (the assets themselves need Spark)."""
    for day in days or [None]:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=day))


class Ticks:
    """Successive evaluations of the automation, each with the previous cursor."""

    def __init__(self, instance):
        self.instance, self.cursor = instance, None

    def __call__(self, at: dt.datetime | None = None) -> dict[str, list[str]]:
        result = dg.evaluate_automation_conditions(defs=DEFS, instance=self.instance, asset_selection=CLUSTERED,
                                                   cursor=self.cursor, evaluation_time=at)
        self.cursor = result.cursor
        return requested(result)


def test_fit_then_every_day_then_weekly_refit_reassigns_all_days(instance):
    tick = Ticks(instance)
    land(instance, "2013-01-01", "2013-01-02")  # one range run, as automation runs features
    assert tick() == {}  # the first evaluation only sets the baseline

    land(instance, "2013-01-03")
    # A fit is attempted on each new features day while there is no model (the run itself skips
    # until clustering.window_days are stored); nothing can be assigned without a model.
    assert tick() == {"cluster_model": []}
    assert tick() == {}  # requested once, not on every tick

    record(instance, "cluster_model")
    # A (re)fitted model reassigns every stored day, in one request (a single-run backfill).
    assert tick() == {"clusters": ["2013-01-01", "2013-01-02", "2013-01-03"]}
    record(instance, "clusters", "2013-01-01", "2013-01-02", "2013-01-03")
    assert tick() == {}

    land(instance, "2013-01-04")
    assert tick() == {"clusters": ["2013-01-04"]}  # a new day: its clusters only, no refit
    record(instance, "clusters", "2013-01-04")
    assert tick() == {}

    FAILING_DAYS.add("2013-01-05")
    land(instance, "2013-01-05")
    assert tick() == {}  # a day that failed its blocking check gets no clusters
    FAILING_DAYS.clear()

    # Past the weekly refit tick, with a day landed since the fit: refit, then reassign every day.
    next_week = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)
    assert tick(next_week) == {"cluster_model": []}
    record(instance, "cluster_model")
    assert tick(next_week + dt.timedelta(minutes=1)) == {
        "clusters": ["2013-01-01", "2013-01-02", "2013-01-03", "2013-01-04"]}  # not 01-05


def test_no_refit_on_the_weekly_tick_without_new_days(instance):
    tick = Ticks(instance)
    land(instance, "2013-01-01")
    assert tick() == {}
    record(instance, "cluster_model")
    record(instance, "clusters", "2013-01-01")
    assert tick() == {}
    assert tick(dt.datetime.now(dt.UTC) + dt.timedelta(days=8)) == {}


def test_automated_fit_waits_for_a_full_window_a_manual_fit_does_not(local_resource, spark_resource, instance,
                                                                     example_frames):
    land_days(local_resource, example_frames, dt.date(2013, 1, 1), dt.date(2013, 1, 2))
    resources = make_resources(local_resource, spark_resource)
    # Two days of features stored, as two feature runs would have left them.
    for day in ("2013-01-01", "2013-01-02"):
        assert dg.materialize([*_raw_and_features()], selection=dg.AssetSelection.all(), resources=resources,
                              instance=instance, partition_key=day).success
    automated = dg.materialize([cluster_model], resources=resources, instance=instance, tags={AUTOMATION_TAG: "true"})
    assert automated.success and not automated.get_asset_materialization_events()

    by_hand = dg.materialize([cluster_model], resources=resources, instance=instance)
    [event] = by_hand.get_asset_materialization_events()
    assert event.materialization.metadata["window"].value == "2013-01-01..2013-01-02 (2 days)"


def _raw_and_features():
    from ml_assets.defs.assets import features, raw

    return [*raw.raw_assets, features.features]
