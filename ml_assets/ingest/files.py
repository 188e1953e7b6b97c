"""Which files `land --from` reads (files, folders, globs) and reading one into the spec's typed columns."""

from __future__ import annotations

import glob
import gzip
import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ml_assets.ml.raw import arrow_types, parse_csv, typed_table
from ml_assets.ml.raw_folder import MalformedBlobError
from ml_assets.spec.sources import ColumnType, SourceSpec

if TYPE_CHECKING:
    import pyarrow as pa

#: File name endings and the reader each gets; `.gz` on csv/jsonl is gunzipped first.
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
           ".ndjson": "jsonl", ".json": "jsonl"}
_GLOB = re.compile(r"[*?\[]")
_JSON_COLUMN = re.compile(r"Column\(/([^)]*)\)")


class LandingError(ValueError):
    """A file that cannot be landed; the message names the file and, for a bad value, the row and column."""


def file_format(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return FORMATS.get(suffixes[-1]) if suffixes else None


def find_files(paths: list[str | Path]) -> list[Path]:
    """Every file named: a file, a folder (its data files, recursively, hidden and _ files skipped) or a
    glob (`data/2013-*.csv`, `data/**/*.parquet`); each path must match something."""
    found: list[Path] = []
    for given in paths:
        text = str(given)
        if _GLOB.search(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise LandingError(f"{text}: no file matches this pattern")
            found += matches
            continue
        path = Path(text)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and file_format(p)
                            and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
            if not inside:
                raise LandingError(f"{path}: folder holds no {', '.join(sorted(FORMATS))} file")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise LandingError(f"{path}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    for path in unique:
        if file_format(path) is None:
            raise LandingError(f"{path}: unknown file type; land .csv, .parquet or .jsonl files (.csv.gz, "
                               ".jsonl.gz too)")
    return unique


def read_file(path: Path, source: SourceSpec, zone) -> pa.Table:
    """The file's rows as the source's typed columns (extra columns dropped); LandingError naming the file,
    the row and the column of a value the spec's types or timestamp rules do not read."""
    kind = file_format(path)
    data = path.read_bytes()
    if path.suffix.lower() == ".gz" or (data[:2] == b"\x1f\x8b" and kind != "parquet"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise LandingError(f"{path}: not readable gzip data ({exc})") from None
    if not data or data.isspace():
        raise LandingError(f"{path}: empty file")
    try:
        if kind == "csv":
            return parse_csv(data, source, str(path), zone)
        if kind == "parquet":
            return _read_parquet(data, source, path, zone)
        return _read_jsonl(data, source, path, zone)
    except MalformedBlobError as exc:
        raise LandingError(str(exc)) from None


def _read_parquet(data: bytes, source: SourceSpec, path: Path, zone) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise LandingError(f"{path}: not a readable Parquet file ({exc})") from None
    return typed_table(table, source, str(path), zone)


def _json_type(source: SourceSpec, name: str, kind: ColumnType) -> pa.DataType:
    """What Arrow's JSON reader builds each column as; timestamps stay text (or numbers for epoch)."""
    import pyarrow as pa

    if kind == ColumnType.timestamp or kind == ColumnType.date:
        numeric = name == source.timestamp_column and source.timestamp_format.startswith("epoch")
        return pa.float64() if numeric else pa.string()
    return arrow_types()[kind]


def _read_jsonl(data: bytes, source: SourceSpec, path: Path, zone) -> pa.Table:
    import pyarrow as pa
    import pyarrow.json as pj

    schema = pa.schema([(name, _json_type(source, name, kind)) for name, kind in source.columns.items()])
    try:
        table = pj.read_json(io.BytesIO(data), parse_options=pj.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=False))
    except pa.ArrowInvalid as exc:
        raise LandingError(f"{path}: {_locate_json_error(data, str(exc), source)}") from None
    # The reader fills a key no line has with nulls: a column missing from the file is named instead.
    missing = [name for name in source.columns
               if table.column(name).null_count == table.num_rows and f'"{name}"'.encode() not in data]
    if missing:
        raise LandingError(f"{path}: missing column(s) {missing}; the spec expects {list(source.columns)}")
    return typed_table(table, source, str(path), zone)


_PY_TYPES = {ColumnType.int: (int,), ColumnType.float: (int, float), ColumnType.bool: (bool,),
             ColumnType.string: (str,), ColumnType.date: (str,), ColumnType.timestamp: (str, int, float)}


def _locate_json_error(data: bytes, message: str, source: SourceSpec) -> str:
    """Arrow numbers JSON rows within a block; find the line (only on the error path, so line by line)."""
    match = _JSON_COLUMN.search(message)
    column = match.group(1) if match else None
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
        if not isinstance(row, dict):
            return f"line {number}: a JSON object per line expected, not {type(row).__name__}"
        if column in source.columns and row.get(column) is not None:
            value, kind = row[column], source.columns[column]
            wanted = _PY_TYPES[kind]
            if not isinstance(value, wanted) or (kind != ColumnType.bool and isinstance(value, bool)):
                return (f"column {column!r} (data row {number}): invalid value {value!r} "
                        f"(a JSON {type(value).__name__}, the spec declares {kind})")
    return message.removeprefix("JSON parse error: ")
