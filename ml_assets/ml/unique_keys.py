"""Rows that share key values within a day: in a parsed raw day (Arrow) and in a frame of days (Spark,
aggregated in ml.features.daily_profile's pass).

Both give a KeyReport naming the first duplicate keys and their row counts; pyarrow and pyspark are
imported inside the functions (the code location imports the raw assets on every load).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import Column, Row

#: Duplicate keys named in a verdict (the count covers them all).
SHOWN_KEYS = 5


@dataclass(frozen=True)
class KeyReport:
    keys: list[str]
    duplicated_keys: int = 0          # distinct key values seen more than once
    extra_rows: int = 0               # rows beyond the first of each such key
    first: list[dict] = field(default_factory=list)  # up to SHOWN_KEYS {column: value, ..., "count": n}

    @property
    def passed(self) -> bool:
        return self.duplicated_keys == 0

    def describe(self) -> str:
        if self.passed:
            return f"{self.keys} unique"
        shown = "; ".join(
            ", ".join(f"{k}={row[k]}" for k in self.keys) + f" ({row['count']} rows)" for row in self.first
        )
        return (f"{self.duplicated_keys} key(s) of {self.keys} occur more than once "
                f"({self.extra_rows} extra row(s)); first: {shown}")


def duplicate_keys(table: pa.Table, keys: list[str]) -> KeyReport:
    """Keys of `table` occurring more than once, in order of first occurrence."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not keys or table.num_rows == 0:
        return KeyReport(keys)
    indexed = table.select(keys).append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    groups = indexed.group_by(keys, use_threads=False).aggregate([("__row", "count"), ("__row", "min")])
    dups = groups.filter(pc.greater(groups.column("__row_count"), 1))
    if dups.num_rows == 0:
        return KeyReport(keys)
    dups = dups.sort_by("__row_min")
    first = [
        {**{k: _plain(row[k]) for k in keys}, "count": row["__row_count"]}
        for row in dups.slice(0, SHOWN_KEYS).to_pylist()
    ]
    counts = dups.column("__row_count")
    return KeyReport(keys, dups.num_rows, pc.sum(counts).as_py() - dups.num_rows, first)


def _plain(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def spark_duplicate_key_columns(keys: list[str], count_column: str) -> list[Column]:
    """Per-day aggregates over a day's (key, count) groups for `spark_key_report`: the duplicated keys,
    their extra rows and the first SHOWN_KEYS of them in key order (sorted where they are, so only
    those few reach the driver)."""
    from pyspark.sql import functions as F

    duplicated = F.col(count_column) > 1
    # A struct sorts by its fields in order, ascending with nulls first: orderBy(*keys)'s order
    # (the keys are distinct within a day, so the count never decides).
    shown = F.struct(*[F.col(k) for k in keys], F.col(count_column).alias("__count"))
    return [
        F.sum(duplicated.cast("long")).alias("__duplicated_keys"),
        F.sum(F.when(duplicated, F.col(count_column) - 1).otherwise(0)).alias("__extra_rows"),
        F.slice(F.sort_array(F.collect_list(F.when(duplicated, shown))), 1, SHOWN_KEYS).alias("__first_keys"),
    ]


def spark_key_report(keys: list[str], row: Row) -> KeyReport | None:
    """The KeyReport of one collected per-day row of `spark_duplicate_key_columns`; None if the day has no duplicates."""
    if not row["__duplicated_keys"]:
        return None
    first = [{**{k: _plain(shown[k]) for k in keys}, "count": shown["__count"]} for shown in row["__first_keys"]]
    return KeyReport(keys, row["__duplicated_keys"], row["__extra_rows"], first)
