"""The features' blocking unique-keys check on a real Spark run: duplicated stored flights fail the day."""

import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml_assets_tests.conftest import FIRST_DAY
from ml_assets_tests.fixtures.dagster import land_days, make_resources, materialize, materialize_raw

pytestmark = pytest.mark.spark

DAY = "2013-01-01"


def _double_stored_flights(store) -> None:
    """Store raw_flights with every row twice, as the raw parser before its unique_keys check did."""
    datasets = store.datasets()
    [path] = datasets.local_paths("raw_flights", [DAY])
    table = pq.read_table(path)
    with tempfile.TemporaryDirectory() as staging:
        pq.write_table(pa.concat_tables([table, table]), Path(staging) / "part-00000.parquet")
        datasets.publish("raw_flights", DAY, Path(staging))


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
