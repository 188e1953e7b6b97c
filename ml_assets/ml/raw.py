"""Parse and validate one landed raw blob against its source spec (Arrow, no Spark, no Dagster).

A raw day is small enough to parse in one process; everything across days runs in Spark.
pyarrow is imported inside the functions: the code location imports this module (for
PARTITION_COLUMN) on every load, and pyarrow would add a noticeable part of a second.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from functools import cache
from typing import TYPE_CHECKING

from ml_assets.ml.raw_folder import MalformedBlobError, decode_blob
from ml_assets.ml.timestamps import TimestampValueError, cast_or_null, to_dates, to_instants
from ml_assets.ml.values import FALSE_VALUES, NULL_VALUES, TRUE_VALUES
from ml_assets.spec.sources import ColumnType, SourceSpec

if TYPE_CHECKING:
    import pyarrow as pa

PARTITION_COLUMN = "date"


@cache
def arrow_types() -> dict[ColumnType, pa.DataType]:
    import pyarrow as pa

    return {
        ColumnType.string: pa.string(),
        ColumnType.int: pa.int64(),
        ColumnType.float: pa.float64(),
        ColumnType.bool: pa.bool_(),
        ColumnType.date: pa.date32(),
        ColumnType.timestamp: pa.timestamp("us", tz="UTC"),
    }

_CSV_COLUMN_ERROR = re.compile(r"In CSV column #(\d+): (.*)")
# Arrow names the offending value either way; a timestamp without its zone offset (e.g. cut
# short by truncation) gets the second form.
_INVALID_VALUE = re.compile(r"invalid value '(.*)'|expected a zone offset in '(.*?)'")


def arrow_schema(source: SourceSpec) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([(name, arrow_types()[kind]) for name, kind in source.columns.items()])


def parse_blob(data: bytes, source: SourceSpec, blob: str, day: dt.date, zone) -> pa.Table:
    """The blob's rows with the spec's column types plus a `date` column; raises MalformedBlobError.

    Extra columns are dropped (upstream may add columns); missing ones, values of the wrong
    type, bad encoding, truncation, emptiness, over-long lines, undeclared compression and rows
    of another day are errors.
    """
    import pyarrow as pa

    if not data:
        raise MalformedBlobError(f"{blob}: empty blob (0 bytes)")
    data = decode_blob(data, source, blob)
    if not data:
        raise MalformedBlobError(f"{blob}: empty blob (0 bytes once decompressed)")
    table = parse_csv(data, source, blob, zone) if source.format == "csv" else _parse_parquet(data, source, blob, zone)
    if table.num_rows == 0:
        raise MalformedBlobError(f"{blob}: no rows (header only)")
    _require_single_day(table, source, blob, day, zone)
    return table.append_column(PARTITION_COLUMN, pa.array([day] * table.num_rows, pa.date32()))


def parse_csv(data: bytes, source: SourceSpec, blob: str, zone) -> pa.Table:
    """CSV text as the spec's typed columns (timestamps by ml/timestamps.py); MalformedBlobError naming
    `blob`, and the column and data row of a bad value. Landing reads users' CSV files through it too."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise MalformedBlobError(
            f"{blob}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}, line {line})"
        ) from None
    if (nul := data.find(b"\0")) >= 0:
        # Valid UTF-8 but never text: binary data, or the zero-filled tail of an interrupted write.
        line = data.count(b"\n", 0, nul) + 1
        raise MalformedBlobError(f"{blob}: NUL byte at offset {nul} (line {line}, data row {line - 1}); "
                                 "binary data or a zero-filled tail of an interrupted write?")
    _require_short_lines(data, source, blob)
    header = data.split(b"\n", 1)[0].decode("utf-8").strip().lstrip("\ufeff")
    present = [name.strip().strip('"') for name in header.split(",")]
    _require_columns(present, source, blob)
    wanted = list(source.columns)
    # Timestamps (and a date timestamp_column with a pattern) are read as text, then by the timestamp rules.
    as_text = {name for name, kind in source.columns.items() if _by_rules(source, name, kind)}
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            # Blocks hold whole lines up to the limit, so Arrow never reports a row straddling blocks.
            read_options=pacsv.ReadOptions(block_size=_block_size(source)),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() if name in as_text else arrow_types()[kind]
                              for name, kind in source.columns.items()},
                include_columns=wanted,
                strings_can_be_null=True,
                # The spellings serving accepts too (ml/values.py): one set of rules for batch and serving.
                true_values=sorted(TRUE_VALUES), false_values=sorted(FALSE_VALUES), null_values=sorted(NULL_VALUES),
            ),
        )
    except pa.ArrowInvalid as exc:
        raise MalformedBlobError(f"{blob}: {_describe_csv_error(str(exc), data, present, source)}") from None
    for name in as_text:
        try:
            converted = convert_by_rules(table.column(name), source, name, zone)
        except TimestampValueError as exc:
            hint = (" — the blob looks truncated" if not data.endswith(b"\n") and _is_last_row(data, exc.row + 1)
                    else "")
            raise MalformedBlobError(f"{blob}: {exc.describe(name)}{hint}") from None
        table = table.set_column(table.schema.get_field_index(name), name, converted)
    return table


def _by_rules(source: SourceSpec, name: str, kind: ColumnType) -> bool:
    return kind == ColumnType.timestamp or (
        kind == ColumnType.date and name == source.timestamp_column and source.timestamp_format != "iso")


def convert_by_rules(values, source: SourceSpec, name: str, zone):
    """A timestamp (or date timestamp_column) column by the timestamp rules: the source's declared format
    for its timestamp_column, iso for other timestamp columns. Raises TimestampValueError."""
    fmt = source.timestamp_format if name == source.timestamp_column else "iso"
    if source.columns[name] == ColumnType.date:
        return to_dates(values, fmt)
    return to_instants(values, fmt, zone, source.ambiguous_times, source.nonexistent_times)


def _block_size(source: SourceSpec) -> int:
    return max(1 << 20, 2 * source.max_line_bytes + 2)


def _require_short_lines(data: bytes, source: SourceSpec, blob: str) -> None:
    """Name the first line over max_line_bytes (a line end inside quotes counts as one too)."""
    limit = source.max_line_bytes
    if len(data) <= limit or max(map(len, data.split(b"\n"))) <= limit:  # the fast common answer
        return
    import numpy as np

    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 0x0A)
    starts = np.concatenate(([0], ends + 1))
    lengths = np.concatenate((ends, [len(data)])) - starts
    over = np.flatnonzero(lengths > limit)
    if over.size:
        line = int(over[0]) + 1
        raise MalformedBlobError(
            f"{blob}: line {line} (data row {line - 1}) is {int(lengths[over[0]]):,} bytes, over the "
            f"source's max_line_bytes of {limit:,}; {over.size} line(s) over the limit"
        )


def _describe_csv_error(message: str, data: bytes, present: list[str], source: SourceSpec) -> str:
    last_line = data.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode("utf-8", "replace")
    truncated = not data.endswith(b"\n")
    if "Empty CSV file" in message:  # a header without a line end, and nothing after it
        return "no rows (header only)"
    match = _CSV_COLUMN_ERROR.search(message)
    if match:
        index, detail = int(match.group(1)), match.group(2)
        column = present[index] if index < len(present) else f"#{index}"
        row = _row_of_invalid_value(data, column, detail, source)
        where = f" (data row {row})" if row else ""
        hint = " — the blob looks truncated" if truncated and row and _is_last_row(data, row) else ""
        return f"column {column!r}{where}: {detail}{hint}"
    if "Expected" in message and "columns" in message:
        hint = "; the last line is cut short — the blob looks truncated" if truncated else ""
        return f"malformed CSV row: {message.removeprefix('CSV parse error: ')}{hint} (last line: {last_line[:80]!r})"
    return message


def _row_of_invalid_value(data: bytes, column: str, detail: str, source: SourceSpec) -> int | None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    match = _INVALID_VALUE.search(detail)
    if not match:
        return None
    try:
        as_text = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(block_size=_block_size(source)),
            convert_options=pacsv.ConvertOptions(column_types={column: pa.string()}, include_columns=[column]),
        ).column(column)
    except pa.ArrowInvalid:
        return None
    hits = pc.index(as_text, match.group(1) if match.group(1) is not None else match.group(2)).as_py()
    return hits + 1 if hits >= 0 else None


def _is_last_row(data: bytes, row: int) -> bool:
    return data.rstrip(b"\n").count(b"\n") == row


def _parse_parquet(data: bytes, source: SourceSpec, blob: str, zone) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise MalformedBlobError(f"{blob}: not a readable Parquet file ({exc}); truncated or corrupt") from None
    return typed_table(table, source, blob, zone)


def typed_table(table: pa.Table, source: SourceSpec, where: str, zone) -> pa.Table:
    """A table already parsed from a typed format (Parquet, JSON) cast to the spec's columns; extra columns
    dropped; MalformedBlobError naming `where`, the column, the data row and the value that does not convert."""
    import pyarrow as pa
    import pyarrow.compute as pc

    _require_columns(table.column_names, source, where)
    columns = []
    for name, kind in source.columns.items():
        values = table.column(name)
        if kind == ColumnType.timestamp or (kind == ColumnType.date and name == source.timestamp_column):
            try:
                columns.append(convert_by_rules(values, source, name, zone))
            except TimestampValueError as exc:
                raise MalformedBlobError(f"{where}: {exc.describe(name)}") from None
            continue
        target = arrow_types()[kind]
        try:
            columns.append(values.cast(target, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            flat = values.combine_chunks()
            lost = pc.and_(pc.is_valid(flat), pc.is_null(cast_or_null(flat, target)))
            row = pc.index(lost, True).as_py()
            where_row = f"; first at data row {row + 1}: {flat[row].as_py()!r}" if row >= 0 else ""
            raise MalformedBlobError(
                f"{where}: column {name!r} has type {table.schema.field(name).type}, "
                f"which does not convert to {kind} ({exc}){where_row}"
            ) from None
    return pa.table(columns, schema=arrow_schema(source))


def _require_columns(present: list[str], source: SourceSpec, blob: str) -> None:
    missing = [name for name in source.columns if name not in present]
    if missing:
        raise MalformedBlobError(
            f"{blob}: missing column(s) {missing}; the spec expects {list(source.columns)}, "
            f"the blob has {present}"
        )


def _require_single_day(table: pa.Table, source: SourceSpec, blob: str, day: dt.date, zone) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    stamps = table.column(source.timestamp_column)
    if stamps.null_count:
        raise MalformedBlobError(
            f"{blob}: {stamps.null_count} row(s) have no {source.timestamp_column!r}"
        )
    if pa.types.is_timestamp(stamps.type):
        local_days = pc.cast(pc.local_timestamp(pc.assume_timezone(stamps, "UTC"))
                             if stamps.type.tz is None else _to_zone(stamps, zone), pa.date32())
    else:
        local_days = stamps
    outside = pc.sum(pc.not_equal(local_days, pa.scalar(day, pa.date32()))).as_py() or 0
    if outside:
        raise MalformedBlobError(
            f"{blob}: {outside} row(s) have a {source.timestamp_column!r} outside {day} ({zone.key})"
        )


def _to_zone(stamps: pa.ChunkedArray, zone) -> pa.ChunkedArray:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.local_timestamp(stamps.cast(pa.timestamp("us", tz=zone.key)))
