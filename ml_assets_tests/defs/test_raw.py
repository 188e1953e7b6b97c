"""Raw assets in Dagster runs: landed days parsed and stored, malformed blobs fail only their day."""

import dagster as dg
import pyarrow.parquet as pq
import pytest

from ml_assets.defs.assets.raw import NULL_RATES_CHECK, ROW_COUNT_CHECK, raw_asset_key
from ml_assets_tests.conftest import FIRST_DAY
from ml_assets_tests.fixtures.dagster import land_days, make_resources, materialize_raw

DAYS = ["2013-01-01", "2013-01-02", "2013-01-03"]
FLIGHTS_BLOB = "raw/flights/date=2013-01-02/flights.csv"


def _stored_rows(store, table: str, day: str) -> int:
    paths = store.datasets().local_paths(table, [day])
    return sum(pq.ParquetFile(p).metadata.num_rows for path in paths for p in _parquet_files(path))


def _parquet_files(path):
    from pathlib import Path

    return sorted(Path(path).glob("*.parquet"))


def _step_failure(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure)
    data = failure.step_failure_data
    return data.user_failure_data.description if data.user_failure_data else data.error.message


def test_landed_days_materialize_with_blob_versions(store_resource, spark_resource, instance, example_frames):
    landed = land_days(store_resource, example_frames, FIRST_DAY, FIRST_DAY.replace(day=3))
    resources = make_resources(store_resource, spark_resource)
    results = materialize_raw(resources, instance, DAYS)

    for day in DAYS:
        assert results[day].success
        flights = next(b for b in landed if b.source == "flights" and b.day.isoformat() == day)
        record = instance.get_latest_materialization_event(raw_asset_key("flights"))
        assert record is not None
        assert _stored_rows(store_resource, "raw_flights", day) == flights.rows
    evaluations = [e for r in results.values() for e in r.get_asset_check_evaluations()]
    assert {e.check_name for e in evaluations} == {ROW_COUNT_CHECK, NULL_RATES_CHECK}
    assert all(e.passed for e in evaluations)
    materialization = results["2013-01-03"].asset_materializations_for_node("raw_flights")[0]
    assert materialization.metadata["rows"].value == _stored_rows(store_resource, "raw_flights", "2013-01-03")
    assert materialization.tags["dagster/data_version"]


def test_a_day_without_blob_is_missing(local_resource, spark_resource, instance, example_frames):
    land_days(local_resource, example_frames, FIRST_DAY, FIRST_DAY)
    results = materialize_raw(make_resources(local_resource, spark_resource), instance,
                              ["2013-01-01", "2013-01-02"], raise_on_error=False)
    assert results["2013-01-01"].success
    assert not results["2013-01-02"].success
    message = _step_failure(results["2013-01-02"])
    assert "no blob landed" in message and "raw/flights/date=2013-01-02/" in message


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _rename_column(data: bytes) -> bytes:
    return data.replace(b"carrier", b"airline", 1)


def _wrong_type(data: bytes) -> bytes:
    lines = data.split(b"\n")
    fields = lines[3].split(b",")
    fields[4] = b"noon"  # sched_dep_time is an int
    lines[3] = b",".join(fields)
    return b"\n".join(lines)


def _bad_encoding(data: bytes) -> bytes:
    return data.replace(b",UA,", b",\xff\xfe,", 1)


def _empty(data: bytes) -> bytes:
    return b""


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (_truncate, "truncated"),
        (_rename_column, "missing column(s) ['carrier']"),
        (_wrong_type, "column 'sched_dep_time' (data row 3)"),
        (_bad_encoding, "not valid UTF-8"),
        (_empty, "empty blob"),
    ],
    ids=["truncated", "wrong-columns", "wrong-types", "bad-encoding", "empty"],
)
def test_malformed_blob_fails_its_day_only_and_keeps_stored_data(
    corrupt, expected, local_resource, spark_resource, instance, example_frames
):
    land_days(local_resource, example_frames, FIRST_DAY, FIRST_DAY.replace(day=3))
    resources = make_resources(local_resource, spark_resource)
    assert all(r.success for r in materialize_raw(resources, instance, DAYS).values())
    stored_before = local_resource.datasets().current("raw_flights", "2013-01-02")
    rows_before = _stored_rows(local_resource, "raw_flights", "2013-01-02")

    blobs = local_resource.blob_store()
    blobs.put(FLIGHTS_BLOB, corrupt(blobs.get(FLIGHTS_BLOB)))
    results = materialize_raw(resources, instance, DAYS, raise_on_error=False)

    assert results["2013-01-01"].success and results["2013-01-03"].success
    assert not results["2013-01-02"].success
    message = _step_failure(results["2013-01-02"])
    assert FLIGHTS_BLOB in message
    assert expected in message
    # The day's previously stored data is untouched.
    assert local_resource.datasets().current("raw_flights", "2013-01-02") == stored_before
    assert _stored_rows(local_resource, "raw_flights", "2013-01-02") == rows_before


def test_failed_quality_check_blocks_the_day(local_resource, spark_resource, instance, example_frames):
    land_days(local_resource, example_frames, FIRST_DAY, FIRST_DAY)
    blobs = local_resource.blob_store()
    key = "raw/flights/date=2013-01-01/flights.csv"
    header, *rows = blobs.get(key).decode().splitlines()
    blobs.put(key, "\n".join([header, *rows[:10]]).encode() + b"\n")  # 10 rows < min_rows 100

    result = materialize_raw(make_resources(local_resource, spark_resource), instance, ["2013-01-01"],
                             raise_on_error=False)["2013-01-01"]
    assert not result.success
    row_count = next(e for e in result.get_asset_check_evaluations() if e.check_name == ROW_COUNT_CHECK)
    assert not row_count.passed
    assert row_count.metadata["rows"].value == 10
