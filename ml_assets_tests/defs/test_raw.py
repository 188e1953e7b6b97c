"""Raw assets in Dagster runs: landed days parsed and stored, malformed blobs fail only their day."""

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ml_assets.defs.assets.raw import (
    CLOCK_CHECK,
    NULL_RATES_CHECK,
    ROW_COUNT_CHECK,
    UNIQUE_KEYS_CHECK,
    raw_asset_key,
)
from ml_assets_tests.conftest import FIRST_DAY
from ml_assets_tests.fixtures.dagster import land_days, make_resources, materialize, materialize_raw

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
    assert {e.check_name for e in evaluations} == {ROW_COUNT_CHECK, NULL_RATES_CHECK, UNIQUE_KEYS_CHECK, CLOCK_CHECK}
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


# --- keys, copies, markers and clocks (issue 11) ----------------------------------------------

DAY1 = "2013-01-01"
DAY1_BLOB = f"raw/flights/date={DAY1}/flights.csv"
DAY1_ROWS = 842  # flights of 2013-01-01


def _stored_day1(store_resource, spark_resource, instance, example_frames) -> tuple[dict, object, int]:
    """Day 1 landed and stored; the resources, its stored version and rows."""
    land_days(store_resource, example_frames, FIRST_DAY, FIRST_DAY)
    resources = make_resources(store_resource, spark_resource)
    assert materialize_raw(resources, instance, [DAY1])[DAY1].success
    return (resources, store_resource.datasets().current("raw_flights", DAY1),
            _stored_rows(store_resource, "raw_flights", DAY1))


def _rows_twice(blobs) -> None:
    data = blobs.get(DAY1_BLOB)
    blobs.put(DAY1_BLOB, data + data.split(b"\n", 1)[1])


def _second_copy(blobs) -> None:
    blobs.put(f"raw/flights/date={DAY1}/flights (1).csv", blobs.get(DAY1_BLOB))


@pytest.mark.parametrize("duplicate", [_rows_twice, _second_copy], ids=["rows-twice", "file-copy"])
def test_duplicates_fail_the_day_and_keep_stored_data(
    duplicate, store_resource, spark_resource, instance, example_frames
):
    resources, stored_before, rows_before = _stored_day1(store_resource, spark_resource, instance, example_frames)
    duplicate(store_resource.blob_store())

    result = materialize_raw(resources, instance, [DAY1], raise_on_error=False)[DAY1]

    assert not result.success
    message = _step_failure(result)
    store = store_resource.blob_store()
    if duplicate is _second_copy:
        # Both blobs named, the later arrival as the copy.
        assert message == (f"{store.describe(f'raw/flights/date={DAY1}/flights (1).csv')}: same content as "
                           f"{store.describe(DAY1_BLOB)} (sha256 equal); remove one copy")
    else:
        assert message.startswith(f"raw_flights {DAY1} not stored: unique_keys: 842 key(s) of "
                                  "['carrier', 'flight', 'origin', 'time_hour'] occur more than once (842 extra row(s))")
        [keys] = [e for e in result.get_asset_check_evaluations() if e.check_name == UNIQUE_KEYS_CHECK
                  and e.asset_key == raw_asset_key("flights")]
        assert not keys.passed and keys.partition == DAY1
        assert keys.metadata["first_duplicates"].value[0]["count"] == 2
    assert not result.asset_materializations_for_node("raw_flights")
    assert store_resource.datasets().current("raw_flights", DAY1) == stored_before
    assert _stored_rows(store_resource, "raw_flights", DAY1) == rows_before == DAY1_ROWS


def test_markers_hidden_and_other_files_are_ignored(store_resource, spark_resource, instance, example_frames):
    land_days(store_resource, example_frames, FIRST_DAY, FIRST_DAY)
    blobs = store_resource.blob_store()
    folder = f"raw/flights/date={DAY1}/"
    extras = {"_SUCCESS": b"", "_committed_8765": b'{"added": []}', ".flights.csv.crc": b"\x00\x01",
              "_temporary/0/part-00000.csv": b"half a", "README.txt": b"landed by hand"}
    for name, data in extras.items():
        blobs.put(folder + name, data)

    result = materialize_raw(make_resources(store_resource, spark_resource), instance, [DAY1])[DAY1]

    [materialization] = result.asset_materializations_for_node("raw_flights")
    assert materialization.metadata["rows"].value == _stored_rows(store_resource, "raw_flights", DAY1) == DAY1_ROWS
    assert materialization.metadata["blobs"].value == [blobs.describe(folder + "flights.csv")]
    assert sorted(materialization.metadata["ignored"].value) == sorted(blobs.describe(folder + n) for n in extras)


def test_undeclared_gzip_fails_the_day_naming_it(local_resource, spark_resource, instance, example_frames):
    """New parse errors take the malformed-blob path (named failure, nothing published); the rest in ml/."""
    import gzip

    resources, stored_before, _ = _stored_day1(local_resource, spark_resource, instance, example_frames)
    blobs = local_resource.blob_store()
    blobs.put(DAY1_BLOB, gzip.compress(blobs.get(DAY1_BLOB)))
    result = materialize_raw(resources, instance, [DAY1], raise_on_error=False)[DAY1]
    assert _step_failure(result) == (f"{blobs.describe(DAY1_BLOB)}: gzip data in a .csv blob; "
                                     "declare compression: gzip (or auto) for this source")
    assert local_resource.datasets().current("raw_flights", DAY1) == stored_before


def test_a_folder_of_markers_only_is_a_missing_day(local_resource, spark_resource, instance):
    local_resource.blob_store().put(f"raw/flights/date={DAY1}/_SUCCESS", b"")
    result = materialize_raw(make_resources(local_resource, spark_resource), instance, [DAY1],
                             raise_on_error=False)[DAY1]
    assert "no blob landed" in _step_failure(result)
    assert "(ignored: ['_SUCCESS'], patterns ['*.csv'])" in _step_failure(result)


def _shift_clock(data: bytes, hours: int) -> bytes:
    import io

    rows = pd.read_csv(io.BytesIO(data), dtype={"tailnum": "string"})
    stamps = pd.to_datetime(rows["time_hour"], utc=True) + pd.Timedelta(hours=hours)
    return rows.assign(time_hour=stamps.dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(index=False).encode()


@pytest.mark.parametrize("hours", [-3, -5])
def test_shifted_clock_fails_the_day_and_keeps_stored_data(
    hours, local_resource, spark_resource, instance, example_frames
):
    resources, stored_before, rows_before = _stored_day1(local_resource, spark_resource, instance, example_frames)
    blobs = local_resource.blob_store()
    blobs.put(DAY1_BLOB, _shift_clock(blobs.get(DAY1_BLOB), hours))  # still inside the day: it parses

    result = materialize_raw(resources, instance, [DAY1], raise_on_error=False)[DAY1]

    assert not result.success
    message = _step_failure(result)
    assert message.startswith(f"raw_flights {DAY1} not stored: clock: local time (year, month, day, hour): "
                              "842 of 842 rows")
    assert "local hours 5-23" in message and message.endswith("is the 'time_hour' clock shifted?")
    [clock] = [e for e in result.get_asset_check_evaluations() if e.check_name == CLOCK_CHECK
               and e.asset_key == raw_asset_key("flights")]
    assert not clock.passed and clock.partition == DAY1
    assert local_resource.datasets().current("raw_flights", DAY1) == stored_before
    assert _stored_rows(local_resource, "raw_flights", DAY1) == rows_before


# --- range runs (issue 10 point 5) ------------------------------------------------------------


def test_a_range_run_stores_the_good_days_and_judges_each_day(local_resource, spark_resource, instance,
                                                               example_frames):
    """Three days in ONE run, the middle one with duplicate keys: days 1 and 3 are stored and
    materialized, day 2 is not; every check verdict belongs to its own day; the run fails naming day 2."""
    from dagster._core.storage.partition_status_cache import AssetPartitionStatus

    from ml_assets.defs.assets.raw import RAW_GROUP
    from ml_assets.defs.partitions import daily_partitions

    land_days(local_resource, example_frames, FIRST_DAY, FIRST_DAY.replace(day=3))
    blobs = local_resource.blob_store()
    data = blobs.get(FLIGHTS_BLOB)
    blobs.put(FLIGHTS_BLOB, data + data.split(b"\n", 1)[1])
    key = raw_asset_key("flights")

    result = materialize(make_resources(local_resource, spark_resource), instance,
                         dg.AssetSelection.groups(RAW_GROUP), partition_range=(DAYS[0], DAYS[-1]),
                         raise_on_error=False)

    assert not result.success
    message = _step_failure(result)
    assert message.startswith("raw_flights: 1 of 3 day(s) not stored (['2013-01-02'])")
    assert "2013-01-02: raw_flights 2013-01-02 not stored: unique_keys:" in message
    assert sorted(m.partition for m in result.asset_materializations_for_node("raw_flights")) == [DAYS[0], DAYS[2]]
    assert sorted(m.partition for m in result.asset_materializations_for_node("raw_weather")) == DAYS
    assert local_resource.datasets().current("raw_flights", DAYS[1]) is None
    assert _stored_rows(local_resource, "raw_flights", DAYS[2]) > 0
    verdicts = {(e.check_name, e.partition): e.passed for e in result.get_asset_check_evaluations()
                if e.asset_key == key}
    assert {p: ok for (name, p), ok in verdicts.items() if name == UNIQUE_KEYS_CHECK} == {
        DAYS[0]: True, DAYS[1]: False, DAYS[2]: True}
    assert {p for (name, p) in verdicts if name == ROW_COUNT_CHECK} == {DAYS[0], DAYS[2]}
    assert instance.get_status_by_partition(key, DAYS, daily_partitions) == {
        DAYS[0]: AssetPartitionStatus.MATERIALIZED, DAYS[1]: AssetPartitionStatus.FAILED,
        DAYS[2]: AssetPartitionStatus.MATERIALIZED}
    [latest] = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(key, UNIQUE_KEYS_CHECK), limit=1, partition_filter=_day_filter(DAYS[1]))
    assert latest.status.value == "FAILED" and latest.partition == DAYS[1]


def _day_filter(day: str):
    from dagster._core.event_api import PartitionKeyFilter

    return PartitionKeyFilter(key=day)
