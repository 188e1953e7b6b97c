"""Features, labels and clusters on a real local SparkSession, over both storage backends."""

import pytest

from ml_assets.defs.dataset import SPEC
from ml_assets.ml.features import expected_feature_types
from ml_assets_tests.conftest import FIRST_DAY
from ml_assets_tests.fixtures.dagster import land_days, make_resources, materialize, materialize_raw

pytestmark = pytest.mark.spark

DAYS = ["2013-01-01", "2013-01-02", "2013-01-03"]
LEAKY = {"dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"}


def _load(spark, store, table, days):
    return spark.read.parquet(*store.datasets().local_paths(table, days))


def _raw_ready(store, spark_resource, instance, frames) -> dict:
    land_days(store, frames, FIRST_DAY, FIRST_DAY.replace(day=3))
    resources = make_resources(store, spark_resource)
    assert all(r.success for r in materialize_raw(resources, instance, DAYS).values())
    return resources


@pytest.fixture
def raw_ready(store_resource, spark_resource, instance, example_frames):
    """Three landed, materialized raw days on the local store or on Azurite."""
    return _raw_ready(store_resource, spark_resource, instance, example_frames)


@pytest.fixture
def local_raw_ready(local_resource, spark_resource, instance, example_frames):
    return _raw_ready(local_resource, spark_resource, instance, example_frames)


def test_range_backfill_is_one_run_that_writes_each_partition(
    raw_ready, store_resource, spark, instance, example_frames
):
    result = materialize(raw_ready, instance, ["features", "labels"], partition_range=(DAYS[0], DAYS[-1]))

    assert result.success
    assert len(instance.get_runs()) == len(DAYS) + 1  # one run per raw day, one for the range
    for asset in ("features", "labels"):
        partitions = sorted(m.partition for m in result.asset_materializations_for_node(asset))
        assert partitions == DAYS
        assert store_resource.datasets().partitions(asset) == DAYS
    checks = result.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {"features_schema", "features_quality", "features_unique_keys",
                                              "label_rate"}
    assert all(c.passed for c in checks)

    features = _load(spark, store_resource, "features", DAYS)
    types = {f.name: f.dataType.simpleString() for f in features.schema.fields}
    for name, kind in expected_feature_types(SPEC).items():
        assert types[name] == kind
    assert not LEAKY & set(features.columns)

    flights = example_frames["flights"]
    in_days = flights[(flights.month == 1) & flights.day.isin([1, 2, 3])]
    by_day = {str(r["date"]): r["count"] for r in features.groupBy("date").count().collect()}
    assert by_day == {d: int((in_days.day == int(d[-2:])).sum()) for d in DAYS}

    labels = _load(spark, store_resource, "labels", DAYS).toPandas()
    expected = in_days.dropna(subset=["arr_delay"])
    assert len(labels) == len(expected)
    assert labels[SPEC.label.name].sum() == int((expected.arr_delay > 15).sum())


def test_features_join_weather_of_the_scheduled_hour(local_raw_ready, local_resource, spark, instance,
                                                     example_frames):
    materialize(local_raw_ready, instance, ["features"], partition_key="2013-01-02")
    flights = example_frames["flights"]
    flight = flights[(flights.month == 1) & (flights.day == 2) & (flights.origin == "LGA")].iloc[0]
    row = _load(spark, local_resource, "features", ["2013-01-02"]).where(
        f"carrier = '{flight.carrier}' AND flight = {flight.flight} AND origin = 'LGA' "
        f"AND time_hour = timestamp'{flight.time_hour.replace('T', ' ').rstrip('Z')}'"
    ).toPandas()
    weather = example_frames["weather"]
    hour = weather[(weather.origin == "LGA") & (weather.time_hour == flight.time_hour)]
    assert len(row) == 1
    assert row.temp.iloc[0] == pytest.approx(hour.temp.iloc[0])
    assert row.sched_dep_hour.iloc[0] == flight.sched_dep_time // 100
    assert row.weekday.iloc[0] == "4"  # Spark's dayofweek: Sunday=1, so Wednesday 2 January is 4


def test_clusters_assign_every_row_from_one_model(raw_ready, store_resource, spark, instance):
    assert materialize(raw_ready, instance, ["features"], partition_range=(DAYS[0], DAYS[-1])).success
    fitted = materialize(raw_ready, instance, ["cluster_model"])
    meta = fitted.asset_materializations_for_node("cluster_model")[0].metadata
    assert meta["window"].value.startswith(f"{DAYS[0]}..{DAYS[-1]}")
    assert len(meta["cluster_sizes"].value) == SPEC.clustering.k

    assigned = materialize(raw_ready, instance, ["clusters"], partition_range=(DAYS[0], DAYS[-1]))
    assert assigned.success
    clusters = _load(spark, store_resource, "clusters", DAYS)
    features = _load(spark, store_resource, "features", DAYS)
    assert clusters.count() == features.count()
    ids = {r["cluster_id"] for r in clusters.select("cluster_id").distinct().collect()}
    assert ids <= set(range(SPEC.clustering.k)) and len(ids) > 1
    # Assignments agree with the sizes k-means reported for the same window.
    sizes = {r["cluster_id"]: r["count"] for r in clusters.groupBy("cluster_id").count().collect()}
    assert [sizes.get(i, 0) for i in range(SPEC.clustering.k)] == meta["cluster_sizes"].value


def test_failed_range_leaves_stored_partitions_untouched(local_raw_ready, local_resource, instance):
    raw_ready = local_raw_ready
    assert materialize(raw_ready, instance, ["features"], partition_range=(DAYS[0], DAYS[1])).success
    before = {d: local_resource.datasets().current("features", d) for d in DAYS[:2]}
    # Day 3's raw data is gone from the store: the range run fails before publishing anything.
    local_resource.blob_store().delete_prefix("tables/raw_weather/date=2013-01-03/")
    result = materialize(raw_ready, instance, ["features"], partition_range=(DAYS[0], DAYS[2]),
                         raise_on_error=False)
    assert not result.success
    assert {d: local_resource.datasets().current("features", d) for d in DAYS[:2]} == before
    assert local_resource.datasets().current("features", DAYS[2]) is None
    error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    text = error.message + (error.cause.message if error.cause else "")
    assert "raw_weather has no data for partition 2013-01-03" in text
