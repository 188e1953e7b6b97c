"""landed_blobs sensor: what it requests, from the store and the instance, against a real local store."""

import datetime as dt
import json

import dagster as dg
import pytest

from ml_assets.defs.assets import raw
from ml_assets.defs.sensors import landed_blobs
from ml_assets.defs.sensors.landed_blobs import MAX_ATTEMPTS, landed_blobs_sensor
from ml_assets_tests.conftest import FIRST_DAY
from ml_assets_tests.fixtures.dagster import land_days, make_resources, materialize_raw

DAYS = ["2013-01-01", "2013-01-02", "2013-01-03"]


def tick(store, instance):
    with dg.build_sensor_context(instance=instance, resources={"blob_store": store}) as ctx:
        return landed_blobs_sensor(ctx)


def requested(result) -> dict[str, list[str]]:
    return {
        r.partition_key: sorted(k.to_user_string() for k in r.asset_selection)
        for r in result.run_requests or []
    }


def launch(resources, instance, result, raw_assets=None) -> list[dg.ExecuteInProcessResult]:
    """Run each request as the daemon would: its selection, partition and tags."""
    return [
        dg.materialize(raw_assets or raw.raw_assets, selection=request.asset_selection, resources=resources,
                       instance=instance, partition_key=request.partition_key, tags=request.tags,
                       raise_on_error=False)
        for request in result.run_requests or []
    ]


def materializations(instance, day: str) -> dict[str, int]:
    return {
        key.to_user_string(): len(instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=100).records)
        for key in (dg.AssetKey("raw_flights"), dg.AssetKey("raw_weather"))
    }


@pytest.fixture
def three_days(local_resource, spark_resource, example_frames):
    land_days(local_resource, example_frames, FIRST_DAY, FIRST_DAY.replace(day=3))
    return local_resource, make_resources(local_resource, spark_resource)


def test_first_tick_requests_every_landed_day(three_days, instance):
    store, _ = three_days
    result = tick(store, instance)
    assert requested(result) == {day: ["raw_flights", "raw_weather"] for day in DAYS}
    assert len({r.run_key for r in result.run_requests}) == 3
    assert json.loads(result.cursor)["requested"] == DAYS
    assert all(r.tags["ml_assets/attempt"] == "1" for r in result.run_requests)


def test_stored_days_are_not_requested_again(three_days, instance):
    store, resources = three_days
    assert all(r.success for r in launch(resources, instance, tick(store, instance)))
    again = tick(store, instance)
    assert not again.run_requests
    assert "3 landed day(s), 6 source-day(s) stored at their landed version" in again.skip_reason.skip_message


def test_several_new_days_are_requested_once_each(three_days, instance, example_frames):
    store, resources = three_days
    launch(resources, instance, tick(store, instance))
    land_days(store, example_frames, dt.date(2013, 1, 4), dt.date(2013, 1, 6))
    second = tick(store, instance)
    assert sorted(requested(second)) == ["2013-01-04", "2013-01-05", "2013-01-06"]
    launch(resources, instance, second)
    assert not tick(store, instance).run_requests


def test_relanded_day_requests_only_the_changed_source(three_days, instance):
    store, resources = three_days
    first = tick(store, instance)
    launch(resources, instance, first)
    blobs = store.blob_store()
    key = "raw/weather/date=2013-01-02/weather.csv"
    blobs.put(key, blobs.get(key))  # re-landed with identical bytes
    assert not tick(store, instance).run_requests

    header, *rows = blobs.get(key).decode().splitlines()
    blobs.put(key, "\n".join([header, *rows[:-1]]).encode() + b"\n")
    result = tick(store, instance)
    assert requested(result) == {"2013-01-02": ["raw_weather"]}
    # A new version of the same day gets a new run key, so the daemon does not dedupe it away.
    first_key = next(r.run_key for r in first.run_requests if r.partition_key == "2013-01-02")
    assert result.run_requests[0].run_key != first_key


def test_days_outside_the_spec_are_ignored(local_resource, instance):
    local_resource.blob_store().put("raw/flights/date=2012-12-31/flights.csv", b"year\n2012\n")
    result = tick(local_resource, instance)
    assert not result.run_requests


def test_days_a_backfill_materialized_are_not_requested(three_days, instance):
    store, resources = three_days
    materialize_raw(resources, instance, DAYS[:2])  # a backfill of two days, before the sensor ticks
    assert requested(tick(store, instance)) == {"2013-01-03": ["raw_flights", "raw_weather"]}


def test_days_a_queued_run_will_materialize_are_left_to_it(three_days, instance):
    store, resources = three_days
    job = dg.Definitions(assets=raw.raw_assets, resources=resources).resolve_implicit_global_asset_job_def()
    # A backfill's run for 01-02, created and not started yet.
    instance.create_run_for_job(job, status=dg.DagsterRunStatus.NOT_STARTED,
                                tags={"dagster/partition": "2013-01-02", "dagster/backfill": "abcdefgh"},
                                asset_selection=frozenset({dg.AssetKey("raw_flights"), dg.AssetKey("raw_weather")}))
    result = tick(store, instance)
    assert sorted(requested(result)) == ["2013-01-01", "2013-01-03"]
    assert "in flight" in json.dumps(json.loads(result.cursor))


def test_a_second_request_of_a_stored_day_records_nothing(three_days, instance):
    store, resources = three_days
    launch(resources, instance, tick(store, instance))
    # The same days again, as a backfill launched after the sensor would run them.
    again = materialize_raw(resources, instance, DAYS)
    assert all(r.success and not r.get_asset_materialization_events() for r in again.values())
    # The checks keep their verdict, so automation downstream is not held back.
    assert all(e.passed for r in again.values() for e in r.get_asset_check_evaluations())
    assert all(materializations(instance, day) == {"raw_flights": 1, "raw_weather": 1} for day in DAYS)
    # force re-parses an unchanged day on purpose.
    forced = dg.materialize(raw.raw_assets, resources=resources, instance=instance, partition_key=DAYS[0],
                            run_config={"ops": {"raw_flights": {"config": {"force": True}}}},
                            selection=[dg.AssetKey("raw_flights")])
    assert len(forced.get_asset_materialization_events()) == 1


def test_a_failed_day_is_retried_with_backoff_at_most_max_attempts(three_days, instance, monkeypatch):
    store, resources = three_days
    blobs = store.blob_store()
    key = "raw/flights/date=2013-01-02/flights.csv"
    good = blobs.get(key)
    blobs.put(key, b"not,a,flights,file\n1,2,3,4\n")  # fails to parse: the run fails
    runs = launch(resources, instance, tick(store, instance))
    assert [r.success for r in runs] == [True, False, True]

    waiting = tick(store, instance)  # the first retry waits RETRY_BACKOFF_SECONDS after the failure
    assert not waiting.run_requests
    assert "waiting to retry (attempt 2 after" in waiting.skip_reason.skip_message

    monkeypatch.setattr(landed_blobs, "RETRY_BACKOFF_SECONDS", 0)
    for attempt in range(2, MAX_ATTEMPTS + 1):
        result = tick(store, instance)
        assert requested(result) == {"2013-01-02": ["raw_flights"]}  # raw_weather of the day is stored
        assert result.run_requests[0].run_key.endswith(f"attempt-{attempt}")
        assert not any(r.success for r in launch(resources, instance, result))
    given_up = tick(store, instance)
    assert not given_up.run_requests
    assert f"given up after {MAX_ATTEMPTS} attempts" in given_up.skip_reason.skip_message
    assert "2013-01-02 flights" in given_up.skip_reason.skip_message

    blobs.put(key, good)  # the corrected blob is a new version: a new count starts
    fixed = tick(store, instance)
    assert fixed.run_requests[0].run_key.endswith("attempt-1")
    assert all(r.success for r in launch(resources, instance, fixed))
    assert not tick(store, instance).run_requests
    assert materializations(instance, "2013-01-02") == {"raw_flights": 1, "raw_weather": 1}


def test_a_day_another_run_is_executing_is_left_to_that_run(three_days, instance):
    _, resources = three_days
    job = dg.Definitions(assets=raw.raw_assets, resources=resources).resolve_implicit_global_asset_job_def()
    # An earlier run (say the sensor's) is executing 01-02 when a backfill's run of the same day starts.
    earlier = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED,
                                          tags={"dagster/partition": "2013-01-02"},
                                          asset_selection=frozenset({dg.AssetKey("raw_flights")}))
    later = materialize_raw(resources, instance, ["2013-01-02"])["2013-01-02"]
    assert later.success
    assert [e.asset_key.to_user_string() for e in later.get_asset_materialization_events()] == ["raw_weather"]
    skipped = [e.message for e in instance.all_logs(later.run_id) if "skipped:" in (e.message or "")]
    assert skipped == [f"skipped: run {earlier.run_id} is already materializing raw_flights 2013-01-02"]
