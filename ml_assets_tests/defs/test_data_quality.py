"""The features' blocking unique-keys check on a real Spark run: duplicated stored flights fail the day."""

import tempfile
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster._core.event_api import PartitionKeyFilter

from ml_assets_tests.conftest import FIRST_DAY
from ml_assets_tests.fixtures.dagster import land_days, make_resources, materialize, materialize_raw

pytestmark = pytest.mark.spark

DAY = "2013-01-01"


def _double_stored_flights(store, day: str = DAY) -> None:
    """Store raw_flights with every row twice, as the raw parser before its unique_keys check did."""
    datasets = store.datasets()
    [path] = datasets.local_paths("raw_flights", [day])
    table = pq.read_table(path)
    with tempfile.TemporaryDirectory() as staging:
        pq.write_table(pa.concat_tables([table, table]), Path(staging) / "part-00000.parquet")
        datasets.publish("raw_flights", day, Path(staging))


def test_features_unique_keys_names_the_duplicated_keys(
    local_resource, spark_resource, instance, example_frames
):
    land_days(local_resource, example_frames, FIRST_DAY, FIRST_DAY)
    resources = make_resources(local_resource, spark_resource)
    assert materialize_raw(resources, instance, [DAY])[DAY].success
    # (The clean days' passing verdict is asserted by test_features: every check passes there.)
    _double_stored_flights(local_resource)
    result = materialize(resources, instance, ["features"], partition_key=DAY, raise_on_error=False)

    assert not result.success  # blocking: nothing downstream of features runs on this day
    [verdict] = [e for e in result.get_asset_check_evaluations() if e.check_name == "features_unique_keys"]
    assert not verdict.passed and verdict.partition == DAY
    assert verdict.metadata["failing_days"].value == [DAY]
    duplicates = verdict.metadata["duplicates"].value[DAY]
    assert duplicates["duplicated_keys"] == duplicates["extra_rows"] == 842  # every flight of the day
    first = duplicates["first"][0]
    assert set(first) == {"carrier", "flight", "origin", "time_hour", "count"} and first["count"] == 2
    assert verdict.description.startswith(
        f"{DAY}: {duplicates['duplicated_keys']} key(s) of ['carrier', 'flight', 'origin', 'time_hour'] "
        "occur more than once")
    assert f"carrier={first['carrier']}, flight={first['flight']}, origin={first['origin']}" in verdict.description

    # The three features checks share one step; selecting one of them runs only that one.
    only = dg.AssetSelection.assets("features").without_checks() | dg.AssetSelection.checks(
        dg.AssetCheckKey(dg.AssetKey("features"), "features_unique_keys"))
    result = materialize(resources, instance, only, partition_key=DAY, raise_on_error=False)
    assert not result.success
    [again] = result.get_asset_check_evaluations()
    assert (again.check_name, again.passed, again.partition) == ("features_unique_keys", False, DAY)
    assert again.metadata["duplicates"].value == verdict.metadata["duplicates"].value


def test_a_range_run_judges_each_day_on_its_own(local_resource, spark_resource, instance, example_frames):
    """Three days of features in ONE run, day 2 with doubled flights: only day 2 fails, each verdict has its day."""
    days = ["2013-01-01", "2013-01-02", "2013-01-03"]
    land_days(local_resource, example_frames, FIRST_DAY, FIRST_DAY.replace(day=3))
    resources = make_resources(local_resource, spark_resource)
    assert materialize(resources, instance, ["raw_flights", "raw_weather"], partition_range=(days[0], days[-1])).success
    _double_stored_flights(local_resource, days[1])

    result = materialize(resources, instance, ["features", "labels"], partition_range=(days[0], days[-1]),
                         raise_on_error=False)

    assert not result.success  # a blocking verdict failed: nothing downstream runs in this run
    verdicts = {(e.check_name, e.partition): e for e in result.get_asset_check_evaluations()}
    assert {p: verdicts["features_unique_keys", p].passed for p in days} == {
        days[0]: True, days[1]: False, days[2]: True}
    assert verdicts["features_unique_keys", days[1]].metadata["duplicated_keys"].value == 943  # flights of 01-02
    assert all(verdicts[name, p].passed for name in ["features_schema", "features_quality", "label_rate"] for p in days)
    assert len(verdicts) == 12  # no verdict without a day
    # The verdicts are current (they target each day's materialization): automation holds back day 2 only.
    records = {p: instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("features"), "features_unique_keys"), limit=1,
        partition_filter=PartitionKeyFilter(key=p))[0] for p in days}
    assert {p: r.status.value for p, r in records.items()} == {
        days[0]: "SUCCEEDED", days[1]: "FAILED", days[2]: "SUCCEEDED"}
    latest = {p: instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("features"), asset_partitions=[p]), limit=1).records[0].storage_id for p in days}
    assert {p: r.evaluation.target_materialization_data.storage_id for p, r in records.items()} == latest
