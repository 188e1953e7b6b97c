"""contiguous_ranges: day keys grouped into runs of consecutive days (the replay's range runs)."""

from __future__ import annotations

from ml_assets.replay import contiguous_ranges


def test_empty() -> None:
    assert contiguous_ranges([]) == []


def test_single_day() -> None:
    assert contiguous_ranges(["2013-01-05"]) == [("2013-01-05", "2013-01-05")]


def test_one_run() -> None:
    keys = ["2013-01-01", "2013-01-02", "2013-01-03"]
    assert contiguous_ranges(keys) == [("2013-01-01", "2013-01-03")]


def test_gaps_split_runs() -> None:
    keys = ["2013-01-01", "2013-01-02", "2013-01-04", "2013-01-06", "2013-01-07", "2013-01-08"]
    assert contiguous_ranges(keys) == [
        ("2013-01-01", "2013-01-02"),
        ("2013-01-04", "2013-01-04"),
        ("2013-01-06", "2013-01-08"),
    ]


def test_unsorted_input() -> None:
    keys = ["2013-01-07", "2013-01-01", "2013-01-06", "2013-01-02", "2013-01-04"]
    assert contiguous_ranges(keys) == [
        ("2013-01-01", "2013-01-02"),
        ("2013-01-04", "2013-01-04"),
        ("2013-01-06", "2013-01-07"),
    ]


def test_runs_cross_month_and_year_ends() -> None:
    keys = ["2013-02-28", "2013-03-01", "2013-12-31", "2014-01-01"]
    assert contiguous_ranges(keys) == [("2013-02-28", "2013-03-01"), ("2013-12-31", "2014-01-01")]


def test_input_is_not_modified() -> None:
    keys = ["2013-01-03", "2013-01-01"]
    contiguous_ranges(keys)
    assert keys == ["2013-01-03", "2013-01-01"]
