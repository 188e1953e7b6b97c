"""landed_blobs sensor: one test per cursor scenario, against a real local store."""

import datetime as dt
import json

import dagster as dg
import pytest

from ml_assets.defs.sensors.landed_blobs import landed_blobs_sensor
from ml_assets_tests.conftest import FIRST_DAY
from ml_assets_tests.fixtures.dagster import land_days


def _tick(store, instance, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"blob_store": store}) as ctx:
        return landed_blobs_sensor(ctx)


def _requested(result) -> dict[str, list[str]]:
    return {
        r.partition_key: sorted(k.to_user_string() for k in r.asset_selection)
        for r in result.run_requests or []
    }


@pytest.fixture
def three_days(local_resource, example_frames):
    land_days(local_resource, example_frames, FIRST_DAY, FIRST_DAY.replace(day=3))
    return local_resource


def test_first_tick_requests_every_landed_day(three_days, instance):
    result = _tick(three_days, instance)
    assert _requested(result) == {
        day: ["raw_flights", "raw_weather"] for day in ("2013-01-01", "2013-01-02", "2013-01-03")
    }
    assert len({r.run_key for r in result.run_requests}) == 3
    assert set(json.loads(result.cursor)) == {"2013-01-01", "2013-01-02", "2013-01-03"}


def test_nothing_new_skips_with_a_reason(three_days, instance):
    first = _tick(three_days, instance)
    second = _tick(three_days, instance, cursor=first.cursor)
    assert not second.run_requests
    assert "no new or changed blobs in 3 landed day(s)" in second.skip_reason.skip_message
    assert second.cursor == first.cursor


def test_several_new_days_are_requested_once_each(three_days, instance, example_frames):
    first = _tick(three_days, instance)
    land_days(three_days, example_frames, dt.date(2013, 1, 4), dt.date(2013, 1, 6))
    second = _tick(three_days, instance, cursor=first.cursor)
    assert sorted(_requested(second)) == ["2013-01-04", "2013-01-05", "2013-01-06"]
    third = _tick(three_days, instance, cursor=second.cursor)
    assert not third.run_requests


def test_relanded_day_requests_only_the_changed_source(three_days, instance):
    first = _tick(three_days, instance)
    blobs = three_days.blob_store()
    key = "raw/weather/date=2013-01-02/weather.csv"
    blobs.put(key, blobs.get(key))  # re-landed with identical bytes
    assert not _tick(three_days, instance, cursor=first.cursor).run_requests

    header, *rows = blobs.get(key).decode().splitlines()
    blobs.put(key, "\n".join([header, *rows[:-1]]).encode() + b"\n")
    result = _tick(three_days, instance, cursor=first.cursor)
    assert _requested(result) == {"2013-01-02": ["raw_weather"]}
    # A new version of the same day gets a new run key, so the daemon does not dedupe it away.
    first_key = next(r.run_key for r in first.run_requests if r.partition_key == "2013-01-02")
    assert result.run_requests[0].run_key != first_key


def test_days_outside_the_spec_are_ignored(local_resource, instance):
    local_resource.blob_store().put("raw/flights/date=2012-12-31/flights.csv", b"year\n2012\n")
    result = _tick(local_resource, instance)
    assert not result.run_requests
