"""Flights feature rows built with pandas (the pipeline builds them on Spark), for serving tests and benches.

The same columns the `flights` spec declares: the base numeric and categorical features joined
from the weather table, plus its derived features computed as the spec's Spark SQL does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml_assets.spec import load_spec

# The spec's derived features, in pandas (Spark's dayofweek: Sunday = 1 ... Saturday = 7).
_DERIVED = {
    "sched_dep_hour": lambda f: np.floor(f["sched_dep_time"] / 100).astype("float64"),
    "sched_dep_minute_of_day": lambda f: (
        np.floor(f["sched_dep_time"] / 100) * 60 + f["sched_dep_time"] % 100
    ).astype("float64"),
    "weekday": lambda f: (
        (pd.to_datetime(f[["year", "month", "day"]]).dt.dayofweek + 1) % 7 + 1
    ).astype(str),
}


def feature_names() -> tuple[list[str], list[str]]:
    """(numeric, categorical) feature names of the flights spec."""
    spec = load_spec("flights")
    return spec.features.numeric_names, spec.features.categorical_names


def flights_features(
    frames: dict[str, pd.DataFrame], n_rows: int, seed: int = 0
) -> tuple[pd.DataFrame, np.ndarray]:
    """`n_rows` random labelled flights: (feature frame, 0/1 label arr_delay > 15)."""
    spec = load_spec("flights")
    flights = frames["flights"]
    flights = flights[flights["arr_delay"].notna()]
    flights = flights.sample(n=min(n_rows, len(flights)), random_state=seed).reset_index(drop=True)
    joined = flights
    for join in spec.join.joins:
        right = frames[join.source][[*join.keys, *join.columns]].drop_duplicates(join.keys)
        joined = joined.merge(right, on=list(join.keys), how=join.how)
    numeric, categorical = feature_names()
    data: dict[str, pd.Series] = {}
    for name in numeric:
        data[name] = (_DERIVED[name](joined) if name in _DERIVED else joined[name]).astype(
            "float64"
        )
    for name in categorical:
        data[name] = (
            (_DERIVED[name](joined) if name in _DERIVED else joined[name])
            .astype(str)
            .astype(object)
        )
    labels = (joined["arr_delay"] > 15).astype("int64").to_numpy()
    return pd.DataFrame(data), labels


def records(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready instances: NaN becomes null."""
    out = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return out
