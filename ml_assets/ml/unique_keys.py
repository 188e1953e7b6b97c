"""Rows that share key values within a day: in a parsed raw day (Arrow) and in a frame of days (Spark).

Both give a KeyReport naming the first duplicate keys and their row counts; pyarrow and pyspark are
imported inside the functions (the code location imports the raw assets on every load).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

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


def spark_duplicate_keys(frame: DataFrame, keys: list[str], day_column: str) -> dict[str, KeyReport]:
    """A KeyReport per day of `frame` that has duplicate keys (days without any are absent); two Spark jobs."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    dups = frame.groupBy(day_column, *keys).count().filter(F.col("count") > 1)
    per_day = Window.partitionBy(day_column)
    ranked = (dups.withColumn("_keys", F.count(F.lit(1)).over(per_day))
              .withColumn("_extra", F.sum(F.col("count") - 1).over(per_day))
              .withColumn("_rank", F.row_number().over(per_day.orderBy(*keys)))
              .filter(F.col("_rank") <= SHOWN_KEYS))
    reports: dict[str, KeyReport] = {}
    for row in ranked.orderBy(day_column, "_rank").collect():
        day = str(row[day_column])
        shown = {**{k: _plain(row[k]) for k in keys}, "count": row["count"]}
        if day in reports:
            reports[day].first.append(shown)
        else:
            reports[day] = KeyReport(keys, row["_keys"], row["_extra"], [shown])
    return reports
