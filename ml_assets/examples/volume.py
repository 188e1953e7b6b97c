"""Scale a bundled example data set xN per day, so volume can grow without new downloads.

Each day of the scaled source keeps its original rows unchanged and gains (N - 1) x as many rows
resampled (with replacement) from the same day, with jitter. The resampled rows get fresh values in
one integer key column, above every original value and unique within the day, so the spec's key
columns stay unique (the timestamp key pins a row to its day). Every other source (e.g. hourly
weather) is left as it is: joins keep matching. A day's rows depend only on (seed, day, factor),
not on which other days are generated, so landing a range or a single day gives the same blobs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml_assets.landing import local_days
from ml_assets.spec.model import DatasetSpec

MAX_FACTOR = 1000


@dataclass(frozen=True)
class VolumeRule:
    """How one example's rows multiply: which source, which key column is renumbered, what jitters."""

    source: str
    renumber: str
    # Float columns in minutes shifted by a rounded normal draw of this standard deviation; a
    # missing value (a cancelled flight) stays missing.
    minute_columns: tuple[str, ...] = ()
    minute_sd: float = 5.0
    # (HHMM column, minute column): the scheduled minute is re-drawn within the same hour, so the
    # row's timestamp (the scheduled hour) and its day do not change.
    hhmm_minute: tuple[str, str] | None = None


RULES: dict[str, VolumeRule] = {
    "nycflights13": VolumeRule(
        source="flights",
        renumber="flight",
        minute_columns=("dep_delay", "arr_delay", "air_time"),
        hhmm_minute=("sched_dep_time", "minute"),
    ),
}


def scale_example(
    spec: DatasetSpec,
    frames: dict[str, pd.DataFrame],
    factor: int,
    seed: int = 0,
    days: Iterable[dt.date] | None = None,
) -> dict[str, pd.DataFrame]:
    """The spec's example frames with its scaled source xfactor per day (only `days`, if given)."""
    if isinstance(factor, bool) or not isinstance(factor, int) or not 1 <= factor <= MAX_FACTOR:
        raise ValueError(f"volume factor must be a whole number in 1..{MAX_FACTOR}, got {factor!r}")
    rule = RULES.get(spec.example_data or "")
    if rule is None:
        raise ValueError(
            f"spec {spec.name!r}: no volume rule for example data {spec.example_data!r}; "
            f"known: {sorted(RULES)}"
        )
    if rule.source not in frames:
        raise ValueError(f"volume rule for {spec.example_data!r} scales source {rule.source!r}, "
                         f"which is not among the frames {sorted(frames)}")
    if rule.renumber not in spec.key_columns:
        raise ValueError(f"volume rule renumbers {rule.renumber!r}, which is not one of the spec's "
                         f"key_columns {spec.key_columns}: keys would not stay unique")
    source = spec.sources[rule.source]
    frame = frames[rule.source]
    day_of_row = local_days(frame, source.timestamp_column, spec.zone)
    wanted = None if days is None else set(days)
    base = _renumber_base(frame[rule.renumber])
    pieces = []
    for day, rows in frame.groupby(day_of_row, sort=True):
        if wanted is not None and day not in wanted:
            continue
        pieces.append(_scale_day(rows, day, factor, seed, rule, base))
    scaled = pd.concat(pieces, ignore_index=True) if pieces else frame.iloc[0:0].copy()
    return {**frames, rule.source: scaled}


def _renumber_base(column: pd.Series) -> int:
    """The first power of ten above every original value: fresh numbers never meet an original."""
    top = int(column.max()) if len(column) else 0
    return 10 ** len(str(max(top, 1)))


def _scale_day(rows: pd.DataFrame, day: dt.date, factor: int, seed: int, rule: VolumeRule,
               base: int) -> pd.DataFrame:
    if factor == 1:
        return rows.reset_index(drop=True)
    # One generator per (seed, day): a day's rows do not depend on the other days generated.
    rng = np.random.default_rng([seed, day.toordinal(), factor])
    count = len(rows) * (factor - 1)
    extra = rows.iloc[rng.integers(0, len(rows), size=count)].reset_index(drop=True)
    extra[rule.renumber] = base + np.arange(count, dtype=np.int64)
    for name in rule.minute_columns:
        noise = np.rint(rng.normal(0.0, rule.minute_sd, size=count))
        values = extra[name].astype("float64") + noise
        if name == "air_time":  # a flight takes at least a minute
            values = values.clip(lower=1.0)
        extra[name] = values
    if rule.hhmm_minute:
        hhmm, minute = rule.hhmm_minute
        new_minute = rng.integers(0, 60, size=count)
        extra[hhmm] = (extra[hhmm] // 100) * 100 + new_minute
        extra[minute] = new_minute
    extra = extra.astype(rows.dtypes.to_dict())
    return pd.concat([rows.reset_index(drop=True), extra], ignore_index=True)
