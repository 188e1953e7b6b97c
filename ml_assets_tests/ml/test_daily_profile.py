"""daily_profile on Spark: rows and null rates per day and, in the same query, each day's duplicate keys."""

import datetime as dt

import pytest

from ml_assets.ml.features import daily_profile
from ml_assets.ml.unique_keys import SHOWN_KEYS

pytestmark = pytest.mark.spark

KEYS = ["carrier", "flight"]
D1, D2 = dt.date(2013, 1, 1), dt.date(2013, 1, 2)


def _frame(spark):
    rows = [
        # day 1: AA 1 three times, a null carrier twice, UA 2 twice, plus SHOWN_KEYS more doubled keys
        (D1, "AA", 1, 1.0), (D1, "AA", 1, None), (D1, "AA", 1, 3.0),
        (D1, None, 7, 1.0), (D1, None, 7, None),
        (D1, "UA", 2, 1.0), (D1, "UA", 2, 2.0),
        *[(D1, "ZZ", n, 1.0) for n in range(10, 10 + SHOWN_KEYS) for _ in range(2)],
        (D1, "AA", 2, 5.0),
        # day 2: unique keys, one null delay
        (D2, "AA", 1, None), (D2, "AA", 2, 1.0), (D2, None, 1, 1.0),
    ]
    return spark.createDataFrame(rows, "date date, carrier string, flight long, delay double")


def test_profile_and_duplicate_keys_per_day(spark):
    profile, reports = daily_profile(_frame(spark), ["delay", "carrier"], KEYS)

    rows_d1 = 3 + 2 + 2 + 2 * SHOWN_KEYS + 1
    assert profile["2013-01-01"] == {"rows": rows_d1, "delay": 2 / rows_d1, "carrier": 2 / rows_d1}
    assert profile["2013-01-02"] == {"rows": 3, "delay": 1 / 3, "carrier": 1 / 3}
    assert list(reports) == ["2013-01-01"]  # a day without duplicates has no report
    report = reports["2013-01-01"]
    assert report.duplicated_keys == 3 + SHOWN_KEYS and report.extra_rows == 2 + 1 + 1 + SHOWN_KEYS
    # The first SHOWN_KEYS in key order, nulls first (orderBy's order), each with its row count.
    assert report.first == [{"carrier": None, "flight": 7, "count": 2}, {"carrier": "AA", "flight": 1, "count": 3},
                            {"carrier": "UA", "flight": 2, "count": 2},
                            *[{"carrier": "ZZ", "flight": n, "count": 2} for n in range(10, 10 + SHOWN_KEYS - 3)]]
    assert report.describe().startswith(f"{3 + SHOWN_KEYS} key(s) of ['carrier', 'flight'] occur more than once")


def test_without_keys_only_the_profile(spark):
    profile, reports = daily_profile(_frame(spark), ["delay"])
    assert reports == {}
    assert profile["2013-01-02"] == {"rows": 3, "delay": 1 / 3}
    assert profile == daily_profile(_frame(spark), ["delay"], KEYS)[0]
