"""Typed rows -> day blobs: split by the local day of the timestamp, merge with a landed day, encode.

A day blob holds its rows in one canonical order (timestamp, then key columns, then the other columns),
so its bytes depend only on the set of rows, not on the files or the order they arrived in: landing the
same rows again gives the same bytes (and the store is not written).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
from typing import TYPE_CHECKING

from ml_assets.ml.timestamps import format_instants, local_dates
from ml_assets.spec.model import DatasetSpec
from ml_assets.spec.sources import ColumnType, SourceSpec

if TYPE_CHECKING:
    import pyarrow as pa

_KEY_SEPARATOR = "\x1f"
_NULL = "\x00"


def blob_key(spec: DatasetSpec, source: str, day: dt.date) -> str:
    source_spec = spec.sources[source]
    extension = "csv.gz" if source_spec.format == "csv" and source_spec.compression == "gzip" else source_spec.format
    return f"{spec.blob_prefix(source, day)}/{source}.{extension}"


def row_days(table: pa.Table, source: SourceSpec, zone) -> pa.Array:
    """date32 of each row: the local date of its timestamp (a date column is its own day)."""
    import pyarrow as pa

    stamps = table.column(source.timestamp_column)
    if pa.types.is_date(stamps.type):
        return stamps.combine_chunks().cast(pa.date32())
    return local_dates(stamps, zone)


def sort_keys(source: SourceSpec, keys: list[str]) -> list[tuple[str, str]]:
    order = [source.timestamp_column, *keys]
    order += [name for name in source.columns if name not in order]
    return [(name, "ascending") for name in order]


def split_days(table: pa.Table, source: SourceSpec, keys: list[str], zone,
               days: set[dt.date] | None = None) -> tuple[pa.Table, list[tuple[dt.date, int, int]], int]:
    """The rows in day-then-canonical order, each day's (day, offset, length) in it, and how many rows
    fell outside `days` (if given) and were left out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    day_of_row = row_days(table, source, zone) if table.num_rows else pa.array([], pa.date32())
    dropped = 0
    if days is not None and table.num_rows:
        inside = pc.is_in(day_of_row, value_set=pa.array(sorted(days), pa.date32()))
        dropped = table.num_rows - (pc.sum(inside).as_py() or 0)
        table, day_of_row = table.filter(inside), day_of_row.filter(inside)
    if table.num_rows == 0:
        return table, [], dropped
    ordered = table.append_column("__day", day_of_row)
    ordered = ordered.take(pc.sort_indices(ordered, sort_keys=[("__day", "ascending"),
                                                               *sort_keys(source, keys)]))
    runs = pc.run_end_encode(ordered.column("__day").combine_chunks())
    spans, start = [], 0
    for day, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist(), strict=True):
        spans.append((day, start, end - start))
        start = end
    return ordered.drop_columns(["__day"]), spans, dropped


def row_identity(table: pa.Table, columns: list[str]) -> pa.Array:
    """One string per row from `columns` (nulls distinct from any text): equal rows, equal strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = [table.column(name).cast(pa.string()) for name in columns]
    if len(parts) == 1:
        return pc.fill_null(parts[0], _NULL)
    return pc.binary_join_element_wise(*parts, _KEY_SEPARATOR, null_handling="replace", null_replacement=_NULL)


def merge_day(existing: pa.Table, new: pa.Table, source: SourceSpec, keys: list[str]) -> pa.Table:
    """The landed day's rows with the new ones: a new row replaces a landed row with the same key (every
    column when the source has no key columns, so identical rows are never doubled); canonical order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    existing = existing.select(list(source.columns))
    columns = keys or list(source.columns)
    replaced = pc.is_in(row_identity(existing, columns), value_set=row_identity(new, columns))
    merged = pa.concat_tables([existing.filter(pc.invert(replaced)), new.select(list(source.columns))])
    return merged.take(pc.sort_indices(merged, sort_keys=sort_keys(source, keys)))


def for_encoding(rows: pa.Table, source: SourceSpec, zone) -> pa.Table:
    """The spec's columns as a day blob writes them: for CSV, timestamps as text in the source's
    timestamp_format (iso: local time with its offset). Done once for many days, then sliced."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = rows.select(list(source.columns))
    if source.format == "parquet":
        return rows
    for index, (name, kind) in enumerate(source.columns.items()):
        fmt = source.timestamp_format if name == source.timestamp_column else "iso"
        if kind == ColumnType.timestamp:
            rows = rows.set_column(index, name, format_instants(rows.column(name), fmt, zone))
        elif kind == ColumnType.date and fmt != "iso":
            rows = rows.set_column(index, name, pc.strftime(rows.column(name).cast(pa.timestamp("s")), format=fmt))
    return rows


def encode_day(rows: pa.Table, source: SourceSpec, zone, prepared: bool = False) -> bytes:
    """The blob bytes the raw assets read back to the same rows: CSV (gzip without a timestamp when
    declared) or Parquet. `prepared`: rows already went through for_encoding."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if not prepared:
        rows = for_encoding(rows, source, zone)
    buffer = io.BytesIO()
    if source.format == "parquet":
        pq.write_table(rows, buffer)
        return buffer.getvalue()
    # Column names are identifiers: a plain header. Values quoted only if some value needs it (as pandas
    # writes them; Arrow's "needed" style would quote every string).
    buffer.write((",".join(rows.column_names) + "\n").encode())
    try:
        pacsv.write_csv(rows, buffer, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    except pa.ArrowInvalid:
        buffer.seek(0)
        buffer.truncate()
        buffer.write((",".join(rows.column_names) + "\n").encode())
        pacsv.write_csv(rows, buffer, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
    text = buffer.getvalue()
    # mtime=0: the same rows give the same bytes, so relanding them keeps the blob's sha256.
    return gzip.compress(text, mtime=0) if source.compression == "gzip" else text
