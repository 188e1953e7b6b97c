"""The timestamp rules (ml_assets/ml/timestamps.py): naive in the spec's zone, offsets, epochs, patterns, DST."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from ml_assets.ml.timestamps import (
    TimestampValueError,
    detect_timestamp_format,
    format_instants,
    local_dates,
    to_instants,
)

UTC = dt.UTC
NY = "America/New_York"


def instants(values, fmt="iso", zone=NY, **rules) -> list[dt.datetime | None]:
    return [None if v is None else v.astimezone(UTC) for v in to_instants(pa.array(values), fmt, zone, **rules)
            .to_pylist()]


def at(*parts) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)


def test_naive_iso_is_read_in_the_spec_timezone() -> None:
    # The value: rejected before ("expected a zone offset") although the spec said UTC.
    assert instants(["2018-01-04 00:04:43.392"], zone="UTC") == [at(2018, 1, 4, 0, 4, 43, 392000)]
    assert instants(["2013-01-01 05:00:00", "2013-07-01T05:00", "2013-01-02"]) == [
        at(2013, 1, 1, 10), at(2013, 7, 1, 9), at(2013, 1, 2, 5)]


def test_iso_with_any_offset_spelling() -> None:
    assert instants(["2013-01-01T10:00:00Z", "2013-01-01 05:00:00-05:00", "2013-01-01T05:00:00.5-0500",
                     "2013-01-01T11:00:00+01", None]) == [
        at(2013, 1, 1, 10), at(2013, 1, 1, 10), at(2013, 1, 1, 10, 0, 0, 500000), at(2013, 1, 1, 10), None]


def test_a_column_mixing_naive_and_offset_values_names_the_odd_row() -> None:
    with pytest.raises(TimestampValueError) as raised:
        to_instants(pa.array(["2013-01-01T10:00:00Z", "2013-01-01T11:00:00Z", "2013-01-01T12:00:00"]), "iso", NY)
    assert raised.value.row == 2
    assert raised.value.describe("ts") == (
        "column 'ts' (data row 3): invalid value '2013-01-01T12:00:00' (no zone offset, unlike data row 1 "
        "('2013-01-01T10:00:00Z'): a column's timestamps are all with or all without an offset)")


@pytest.mark.parametrize(("fmt", "values"), [
    ("epoch_s", [1357034400, 1357034400.5]), ("epoch_s", ["1357034400", "1357034400.5"]),
    ("epoch_ms", [1357034400000, 1357034400500]), ("epoch_ms", ["1357034400000", " 1357034400500 "]),
])
def test_epoch_seconds_and_milliseconds(fmt: str, values: list) -> None:
    assert instants(values, fmt) == [at(2013, 1, 1, 10), at(2013, 1, 1, 10, 0, 0, 500000)]


def test_declared_patterns() -> None:
    assert instants(["04/01/2018 00:04", "31/12/2018 23:59"], "%d/%m/%Y %H:%M", zone="UTC") == [
        at(2018, 1, 4, 0, 4), at(2018, 12, 31, 23, 59)]
    assert instants(["2018-01-04 00:04:43+0100"], "%Y-%m-%d %H:%M:%S%z") == [at(2018, 1, 3, 23, 4, 43)]


@pytest.mark.parametrize(("values", "fmt", "row", "problem"), [
    (["2013-01-01", "yesterday"], "iso", 1, "not an ISO 8601 timestamp"),
    (["1357034400", "12:00"], "epoch_s", 1, "not a number of seconds since 1970-01-01"),
    (["04/01/2018 00:04", "2018-01-04 00:04"], "%d/%m/%Y %H:%M", 1, "does not match timestamp_format"),
])
def test_values_the_rules_do_not_read_name_their_row(values, fmt, row, problem) -> None:
    with pytest.raises(TimestampValueError) as raised:
        to_instants(pa.array(values), fmt, NY)
    assert raised.value.row == row and problem in str(raised.value) and repr(values[row]) in str(raised.value)


def test_numbers_need_an_epoch_format() -> None:
    with pytest.raises(TimestampValueError, match="declare epoch_s or epoch_ms"):
        to_instants(pa.array([1357034400]), "iso", NY)


# --- daylight-saving days ----------------------------------------------------------------------


def test_nonexistent_local_times_shift_forward_by_default() -> None:
    """2013-03-10 in New York: 02:00-02:59 never happens; such times move to 03:00 EDT (07:00 UTC)."""
    assert instants(["2013-03-10 01:59", "2013-03-10 02:00", "2013-03-10 02:30", "2013-03-10 03:00"]) == [
        at(2013, 3, 10, 6, 59), at(2013, 3, 10, 7), at(2013, 3, 10, 7), at(2013, 3, 10, 7)]


def test_ambiguous_local_times_are_the_earliest_instant_by_default() -> None:
    """2013-11-03 in New York: 01:00-01:59 happens twice (EDT, then EST)."""
    assert instants(["2013-11-03 01:30"]) == [at(2013, 11, 3, 5, 30)]
    assert instants(["2013-11-03 01:30"], ambiguous="latest") == [at(2013, 11, 3, 6, 30)]


@pytest.mark.parametrize(("value", "rule", "name"), [
    ("2013-03-10 02:30", {"nonexistent": "reject"}, "nonexistent"),
    ("2013-11-03 01:30", {"ambiguous": "reject"}, "ambiguous"),
])
def test_dst_rules_can_reject_naming_the_row(value: str, rule: dict, name: str) -> None:
    with pytest.raises(TimestampValueError) as raised:
        to_instants(pa.array(["2013-03-09 12:00", value]), "iso", NY, **rule)
    assert raised.value.row == 1
    assert f"{name} local time in America/New_York" in str(raised.value) and f"{name}_times: reject" in str(
        raised.value)


def test_local_days_of_23_and_25_hour_days() -> None:
    """Every half hour in UTC across both DST changes: the local days hold 46 and 50 instants."""
    for day, hours in ((dt.date(2013, 3, 10), 23), (dt.date(2013, 11, 3), 25)):
        start = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(), ZoneInfo(NY)).astimezone(UTC)
        stamps = pa.array([start + dt.timedelta(minutes=30 * i) for i in range(48 * 3)],
                          pa.timestamp("us", tz="UTC"))
        days = local_dates(stamps, NY).to_pylist()
        assert days.count(day) == hours * 2
        assert days.count(day - dt.timedelta(days=1)) == 48


# --- writing back and detecting --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["iso", "epoch_s", "epoch_ms", "%d/%m/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S%z"])
def test_format_instants_reads_back_to_the_same_instants(fmt: str) -> None:
    values = [at(2013, 1, 1, 10), at(2013, 3, 10, 7), at(2013, 11, 3, 5, 30), at(2013, 11, 3, 6, 30), None]
    stamps = pa.array(values, pa.timestamp("us", tz="UTC"))
    text = format_instants(stamps, fmt, NY)
    if fmt == "%d/%m/%Y %H:%M:%S":
        # Wall-clock text without an offset cannot tell the two 01:30s apart: the earliest rule reads both.
        values[3] = values[2]
    assert to_instants(text, fmt, NY).to_pylist() == values
    if fmt == "iso":
        assert text.to_pylist()[:4] == ["2013-01-01T05:00:00-0500", "2013-03-10T03:00:00-0400",
                                        "2013-11-03T01:30:00-0400", "2013-11-03T01:30:00-0500"]


@pytest.mark.parametrize(("values", "expected"), [
    (["2018-01-04 00:04:43.392", "2018-01-05"], "iso"),
    (["2013-01-01T10:00:00Z"], "iso"),
    ([1357034400, 1357038000], "epoch_s"),
    (["1357034400000", ""], "epoch_ms"),
    (["13/01/2013 10:00", "01/02/2013 11:30"], "%d/%m/%Y %H:%M"),
    (["01/13/2013"], "%m/%d/%Y"),
    (["01/02/2013 05:30:00 PM"], "%m/%d/%Y %I:%M:%S %p"),
])
def test_detect_timestamp_format(values: list, expected: str) -> None:
    assert detect_timestamp_format(values) == expected


def test_detect_timestamp_format_names_an_unreadable_value() -> None:
    with pytest.raises(ValueError, match="no timestamp format reads 'soon'"):
        detect_timestamp_format(["soon"])
