"""Clock sanity of a parsed raw day: timestamps against declared local-time columns and hours.

Catches a clock shifted by hours that still lands inside the day (Arrow, no Spark, no Dagster).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ml_assets.spec.sources import SourceSpec

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class ClockReport:
    rows: int
    #: rule -> (rows breaking it, first offending row number (1-based data row), example)
    broken: dict[str, tuple[int, int, str]]
    max_bad_share: float

    @property
    def failing(self) -> dict[str, tuple[int, int, str]]:
        return {rule: hit for rule, hit in self.broken.items() if hit[0] > self.max_bad_share * self.rows}

    @property
    def passed(self) -> bool:
        return not self.failing

    def describe(self, column: str) -> str:
        if self.passed:
            return f"{column} agrees with the clock rules"
        return "; ".join(
            f"{rule}: {count} of {self.rows} rows ({count / self.rows:.1%} > {self.max_bad_share:.1%}), "
            f"first at data row {row}: {example}"
            for rule, (count, row, example) in self.failing.items()
        ) + f" — is the {column!r} clock shifted?"


def clock_report(table: pa.Table, source: SourceSpec, zone) -> ClockReport | None:
    """How many rows break each of the source's clock rules; None when it declares none."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rules = source.clock
    if rules is None:
        return None
    stamps = table.column(source.timestamp_column)
    local = pc.local_timestamp(stamps.cast(pa.timestamp("us", tz=zone.key)))
    broken: dict[str, tuple[int, int, str]] = {}
    if rules.local_parts:
        parts = {part: getattr(pc, part)(local) for part in rules.local_parts}
        bad = None
        for part, column in rules.local_parts.items():
            differs = pc.fill_null(pc.not_equal(parts[part], table.column(column)), True)
            bad = differs if bad is None else pc.or_(bad, differs)
        names = ", ".join(rules.local_parts.values())
        broken[f"local time ({names})"] = _hits(bad, lambda i: (
            f"{source.timestamp_column}={stamps[i].as_py().isoformat()} is "
            f"{local[i].as_py():%Y-%m-%d %H:%M} {zone.key}, the row says "
            + ", ".join(f"{column}={table.column(column)[i].as_py()}" for column in rules.local_parts.values())))
    if rules.hours is not None:
        hours = pc.hour(local)
        bad = pc.or_(pc.less(hours, rules.hours.min), pc.greater(hours, rules.hours.max))
        broken[f"local hours {rules.hours.min}-{rules.hours.max}"] = _hits(bad, lambda i: (
            f"{source.timestamp_column} at {local[i].as_py():%H:%M} {zone.key}"))
    return ClockReport(table.num_rows, {rule: hit for rule, hit in broken.items() if hit[0]}, rules.max_bad_share)


def _hits(bad, example) -> tuple[int, int, str]:
    import pyarrow.compute as pc

    count = pc.sum(bad).as_py() or 0
    if not count:
        return 0, 0, ""
    index = pc.index(bad, True).as_py()
    return count, index + 1, example(index)
