"""`ml-assets spec init`: a first dataset spec inferred from a sample file (what TFDV's infer_schema does).

From one CSV, Parquet or JSON Lines sample (read with pyarrow, so the types are what the raw
parser will read), it infers:

- column types: Arrow's own inference mapped onto the spec's ColumnType values;
- the timestamp column's format (a declared format when the column is not ISO 8601, if the spec has
  `timestamp_format`) and the first day, in the spec's timezone;
- features: float columns and int columns with more than MAX_INT_CATEGORIES distinct values are
  numeric; strings with at most MAX_CATEGORIES distinct values (and not unique per row), bools and
  low-cardinality ints are categorical. The timestamp, the key, the columns of the label expression
  (they would leak it), other dates/timestamps and high-cardinality strings are left out, each named
  in a comment;
- key_columns: the first column without nulls whose values are unique in the sample (an id);
  none found: the spec's default (every column);
- bounds from the sample's days (days with fewer than MIN_DAY_ROWS rows are too noisy to count):
  a column's null-rate bound is its highest daily null rate plus NULL_MARGIN (at least), capped at
  1; the label-rate bounds are the lowest and highest daily label rate widened by LABEL_MARGIN;
  min_rows is half the 5th percentile of the daily row counts.

The YAML it writes is validated with the spec model before it is written.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import yaml

from ml_assets.spec.label_expr import evaluate_label
from ml_assets.spec.model import DatasetSpec, SpecError, parse_spec
from ml_assets.spec.sources import IDENTIFIER, ColumnType, SourceSpec

if TYPE_CHECKING:
    import pyarrow as pa

MAX_CATEGORIES = 100  # a string column with more distinct values is an id or free text, not a category
MAX_INT_CATEGORIES = 10  # an int column with at most this many values is a code (categorical)
NULL_MARGIN = 0.05  # added to the highest daily null rate seen (at least; half the rate if larger)
LABEL_MARGIN = 0.05  # the label-rate bounds widen the sample's daily range by this, each side
MIN_DAY_ROWS = 20  # days with fewer rows (often the sample's cut first/last day) do not set bounds
DEFAULT_NULL_BOUND = 0.05  # quality.max_null_rate: a column never empty in the sample may be 5% empty

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "jsonl"}


class InferError(SpecError):
    """The sample or the options cannot give a spec; the message names the file, column or option."""


@dataclass
class Inferred:
    """What was inferred, kept for the YAML comments and for tests."""

    types: dict[str, ColumnType]
    numeric: list[str]
    categorical: list[str]
    left_out: dict[str, str]
    key: str | None
    null_bounds: dict[str, float]
    label_rate: tuple[float, float]
    observed_label_rate: tuple[float, float]
    min_rows: int
    start_date: dt.date
    days: int
    timestamp_format: str | None = None
    notes: list[str] = field(default_factory=list)


def sample_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    kind = FORMATS.get(suffixes[-1] if suffixes else "")
    if kind is None:
        raise InferError(f"{path}: unknown sample format {''.join(path.suffixes) or '(no suffix)'}; "
                         f"use one of {sorted(FORMATS)} (optionally .gz)")
    return kind


def read_sample(path: Path) -> pa.Table:
    """The sample as Arrow infers it (the same reader the raw parser uses for CSV)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    if not path.is_file():
        raise InferError(f"sample {path} does not exist or is not a file")
    kind = sample_format(path)
    try:
        if kind == "csv":
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
        elif kind == "parquet":
            table = pq.read_table(path)
        else:
            table = pajson.read_json(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InferError(f"sample {path} is not readable as {kind}: {exc}") from None
    if table.num_rows == 0:
        raise InferError(f"sample {path} has no rows")
    return table


def column_type(arrow_type: pa.DataType) -> ColumnType | None:
    import pyarrow as pa

    if pa.types.is_boolean(arrow_type):
        return ColumnType.bool
    if pa.types.is_integer(arrow_type):
        return ColumnType.int
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return ColumnType.float
    if pa.types.is_timestamp(arrow_type):
        return ColumnType.timestamp
    if pa.types.is_date(arrow_type):
        return ColumnType.date
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_null(arrow_type):
        return ColumnType.string
    return None  # lists, structs, binary, times: not a column the spec can declare


def _timestamps(table: pa.Table, column: str, zone: ZoneInfo) -> tuple[pa.Array, str | None]:
    """The timestamp column as local dates of the spec's zone, and its declared format (if needed)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = table.column(column)
    if values.null_count:
        raise InferError(f"timestamp column {column!r} has {values.null_count} empty value(s): every row "
                         "needs a timestamp to be assigned a day")
    if pa.types.is_date(values.type):
        return values, None
    declared = None
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        values = _iso_timestamps(values)
    if not pa.types.is_timestamp(values.type):
        values, declared = _parse_declared(values, column)
    if values.type.tz is None:  # naive: wall-clock time in the spec's zone
        local = values
    else:
        local = pc.local_timestamp(values.cast(pa.timestamp(values.type.unit, tz=zone.key)))
    return pc.cast(local, pa.date32()), declared


def _iso_timestamps(values: Any) -> Any:
    """ISO 8601 text (JSON and Parquet samples keep it as strings): naive, else with an offset; unchanged if neither."""
    import pyarrow as pa

    for target in (pa.timestamp("us"), pa.timestamp("us", tz="UTC")):
        try:
            return values.cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return values


def _parse_declared(values: Any, column: str) -> tuple[Any, str]:
    """Non-ISO timestamps through the raw parser's detection, when the spec can declare a format."""
    try:
        from ml_assets.ml import raw as raw_module

        detect = raw_module.detect_timestamp_format
        parse = raw_module.parse_timestamps
    except (ImportError, AttributeError):
        detect = parse = None
    if detect is None or "timestamp_format" not in SourceSpec.model_fields:
        raise InferError(f"timestamp column {column!r} does not read as ISO 8601 timestamps or dates "
                         f"(Arrow reads it as {values.type}); convert it, or use a build with timestamp_format")
    sample = [str(v) for v in values.drop_null().slice(0, 1000).to_pylist()]
    declared = detect(sample)
    if declared is None:
        raise InferError(f"timestamp column {column!r}: no known timestamp format fits values like {sample[:3]}")
    return parse(values, declared), declared


def _daily(day_of_row: Any) -> tuple[Any, list[int]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    days = pc.unique(day_of_row).sort()
    index = pc.index_in(day_of_row, value_set=days)
    counts = pa.array(index.to_numpy(zero_copy_only=False)).value_counts()
    per_day = [0] * len(days)
    for entry in counts.to_pylist():
        per_day[entry["values"]] = entry["counts"]
    return index, per_day


def _daily_rates(mask: Any, index: Any, per_day: list[int]) -> list[float]:
    """Share of each full day's rows where mask is true (days under MIN_DAY_ROWS rows skipped)."""
    import numpy as np

    hits = np.bincount(index.to_numpy(zero_copy_only=False), weights=np.asarray(mask, dtype=float),
                       minlength=len(per_day))
    counts = np.asarray(per_day, dtype=float)
    full = counts >= MIN_DAY_ROWS
    if not full.any():  # a tiny sample: the whole sample as one day
        return [float(hits.sum() / counts.sum())]
    return [float(v) for v in hits[full] / counts[full]]


def infer(table: pa.Table, *, label: str, timestamp: str, timezone: str = "UTC") -> Inferred:
    import numpy as np
    import pyarrow.compute as pc

    zone = ZoneInfo(timezone)
    if timestamp not in table.column_names:
        raise InferError(f"--timestamp {timestamp!r} is not a column of the sample; its columns: {table.column_names}")
    types, left_out = {}, {}
    for name in table.column_names:
        if not IDENTIFIER.match(name):
            raise InferError(f"column name {name!r} is not an identifier (letters, digits, underscores): rename it")
        kind = column_type(table.schema.field(name).type)
        if kind is None:
            raise InferError(f"column {name!r} has type {table.schema.field(name).type}, which a spec cannot declare")
        types[name] = kind
    local_days, declared = _timestamps(table, timestamp, zone)
    types[timestamp] = ColumnType.date if types[timestamp] == ColumnType.date else ColumnType.timestamp
    index, per_day = _daily(local_days)
    first_day = pc.min(local_days).as_py()

    labels, label_columns = evaluate_label(label, table)
    label_rates = _daily_rates(labels.to_numpy(zero_copy_only=False), index, per_day)
    low, high = min(label_rates), max(label_rates)
    bounds = (max(0.0, round(low - LABEL_MARGIN, 3)), min(1.0, round(high + LABEL_MARGIN, 3)))

    rows = table.num_rows
    key = next((name for name in table.column_names
                if name != timestamp and types[name] in (ColumnType.int, ColumnType.string)
                and table.column(name).null_count == 0
                and pc.count_distinct(table.column(name)).as_py() == rows), None)
    numeric, categorical = [], []
    for name, kind in types.items():
        column = table.column(name)
        distinct = pc.count_distinct(column).as_py()
        if name == timestamp:
            continue
        if name in label_columns:
            left_out[name] = "used by the label expression (would leak the label)"
        elif name == key:
            left_out[name] = "the key (unique per row)"
        elif column.null_count == rows:
            left_out[name] = "empty in the whole sample"
        elif kind in (ColumnType.date, ColumnType.timestamp):
            left_out[name] = f"a {kind} (derive features from it with features.derived)"
        elif kind == ColumnType.float or (kind == ColumnType.int and distinct > MAX_INT_CATEGORIES):
            numeric.append(name)
        elif kind in (ColumnType.bool, ColumnType.int) or (distinct <= MAX_CATEGORIES and distinct < rows):
            categorical.append(name)
        else:
            left_out[name] = f"{distinct} distinct strings in {rows} rows (an id or free text, not a category)"
    if not numeric and not categorical:
        raise InferError("no column of the sample makes a feature: " + "; ".join(f"{k}: {v}" for k, v in left_out.items()))

    null_bounds = {}
    for name in types:
        column = table.column(name)
        if not column.null_count:
            continue
        highest = max(_daily_rates(column.is_null().to_numpy(zero_copy_only=False), index, per_day))
        null_bounds[name] = min(1.0, round(highest + max(NULL_MARGIN, highest / 2), 3))
    full_days = [count for count in per_day if count >= MIN_DAY_ROWS] or [rows]
    min_rows = max(1, int(np.percentile(full_days, 5) // 2))
    return Inferred(types=types, numeric=numeric, categorical=categorical, left_out=left_out, key=key,
                    null_bounds={k: v for k, v in null_bounds.items() if v > DEFAULT_NULL_BOUND},
                    label_rate=bounds, observed_label_rate=(round(low, 3), round(high, 3)), min_rows=min_rows,
                    start_date=first_day, days=len(per_day), timestamp_format=declared)


def _flow(value: Any) -> str:
    """A scalar or list as YAML flow text (JSON is YAML; strings are quoted so none is read as a bool)."""
    return json.dumps(value, ensure_ascii=False)


def render(inferred: Inferred, *, name: str, source: str, source_format: str, label: str, label_name: str,
           timestamp: str, timezone: str, sample: str) -> str:
    """The commented spec YAML."""
    i = inferred
    lines = [
        f"# Inferred by `ml-assets spec init` from {sample} ({i.days} days from {i.start_date}). A starting point:",
        "# read every section, then land data with `ml-assets land` and run it.",
        f"name: {name}",
        f"description: {_flow(f'{label_name} = {label} (spec inferred from {sample})')}",
        f"start_date: {i.start_date}",
        f"timezone: {timezone}",
    ]
    if i.key:
        lines += ["# Unique and never empty in the sample: features and labels join on it.",
                  f"key_columns: [{i.key}]"]
    else:
        lines += ["# No column is unique in the sample: key_columns defaults to every column (a row is its values;",
                  "# rows with an empty value cannot join their label). Declare an id column if the data has one."]
    lines += ["", "sources:", f"  {source}:", f"    prefix: raw/{source}", f"    format: {source_format}",
              f"    timestamp_column: {timestamp}"]
    if i.timestamp_format:
        lines.append(f"    timestamp_format: {_flow(i.timestamp_format)}")
    lines += [f"    # Half the 5th percentile of the sample's daily row counts (days under {MIN_DAY_ROWS} rows ignored).",
              f"    min_rows: {i.min_rows}", "    columns:"]
    lines += [f"      {column}: {kind.value}" for column, kind in i.types.items()]
    lines += ["", "# One source: no join (the default). `clustering` is left to its default too: k-means with k=4",
              "# on every numeric feature, refitted weekly.", "", "label:", f"  name: {label_name}",
              f"  expression: {_flow(label)}", "", "features:",
              f"  # float columns and int columns with more than {MAX_INT_CATEGORIES} distinct values",
              f"  numeric: {_flow(i.numeric)}",
              f"  # bools, ints with at most {MAX_INT_CATEGORIES} values, strings with at most {MAX_CATEGORIES} values",
              f"  categorical: {_flow(i.categorical)}"]
    if i.left_out:
        lines.append("  # Left out:")
        lines += [f"  #   {column}: {why}" for column, why in i.left_out.items()]
    lines += ["", "quality:", f"  min_rows: {i.min_rows}",
              f"  # A column empty on no day of the sample may be empty in up to {DEFAULT_NULL_BOUND:.0%} of a day's rows.",
              f"  max_null_rate: {DEFAULT_NULL_BOUND}"]
    overrides = {}
    for column, bound in i.null_bounds.items():
        overrides[f"{source}.{column}"] = bound
        if column in i.numeric or column in i.categorical:
            overrides[column] = bound
    if overrides:
        lines += [f"  # Columns empty in the sample: highest daily null rate plus max({NULL_MARGIN}, half of it).",
                  "  null_rate_overrides:"]
        lines += [f"    {column}: {bound}" for column, bound in overrides.items()]
    lines += [f"  # Daily label rate in the sample: {i.observed_label_rate[0]} to {i.observed_label_rate[1]}, "
              f"widened by {LABEL_MARGIN} each side.",
              f"  label_rate: {{min: {i.label_rate[0]}, max: {i.label_rate[1]}}}", "",
              "# Starting bars for the promotion gate (with none it refuses every model): a candidate needs ROC AUC",
              "# 0.6, must beat the champion (paired DeLong interval) and not be worse than the LogisticRegression",
              "# baseline by more than 0.03.",
              "promotion:", "  absolute: {roc_auc: 0.6}", "  policy: superiority", "  min_improvement: {roc_auc: 0.0}",
              "  baseline_margin: {roc_auc: -0.03}", ""]
    return "\n".join(lines)


def _identifier(text: str) -> str:
    name = re.sub(r"\W+", "_", text).strip("_").lower() or "dataset"
    return name if IDENTIFIER.match(name) else f"d_{name}"


def spec_init(sample: Path, *, label: str, timestamp: str, name: str | None = None, out: Path | None = None,
              timezone: str = "UTC", label_name: str = "label", force: bool = False) -> tuple[Path, DatasetSpec]:
    """Infer, render, validate and write the spec; (path written, the spec as the model loads it)."""
    try:
        ZoneInfo(timezone)
    except (ValueError, KeyError) as exc:
        raise InferError(f"--timezone {timezone!r} is not an IANA time zone") from exc
    stem = sample.name.split(".", 1)[0]
    name = name or _identifier(stem)
    if not IDENTIFIER.match(name):
        raise InferError(f"--name {name!r} must be an identifier (letters, digits, underscores)")
    out = out or Path(f"{name}.yaml")
    if out.exists() and not force:
        raise InferError(f"{out} already exists; pass --force to overwrite it or --out another path")
    table = read_sample(sample)
    inferred = infer(table, label=label, timestamp=timestamp, timezone=timezone)
    source_format = sample_format(sample)
    if source_format == "jsonl" and "jsonl" not in str(SourceSpec.model_fields["format"].annotation):
        source_format = "csv"  # the landing command writes day blobs in the spec's format
    text = render(inferred, name=name, source=_identifier(stem), source_format=source_format, label=label,
                  label_name=label_name, timestamp=timestamp, timezone=timezone, sample=sample.name)
    spec = parse_spec(yaml.safe_load(text), origin=f"inferred spec for {sample}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out, spec


def label_name_of(expression: str) -> str:
    """A bare column label (`returned`) keeps its name; any other expression gives `label`."""
    bare = expression.strip().strip("`")
    return bare if IDENTIFIER.match(bare) and bare.lower() not in ("true", "false", "null") else "label"


def add_spec_command(sub: Any) -> None:
    """`ml-assets spec init ...` (registered by ml_assets.cli)."""
    spec = sub.add_parser("spec", help="dataset spec tools").add_subparsers(dest="spec_command", required=True)
    init = spec.add_parser("init", help="infer a commented spec YAML from a sample (CSV, Parquet or JSON Lines)")
    init.add_argument("--from", dest="sample", type=Path, required=True, help="sample file (.csv, .parquet, .jsonl)")
    init.add_argument("--label", required=True, help="Spark SQL condition giving the label, e.g. 'arr_delay > 15'")
    init.add_argument("--timestamp", required=True, help="column whose local date assigns a row to a day")
    init.add_argument("--name", help="spec and model name (default: the sample's file name)")
    init.add_argument("--out", type=Path, help="YAML to write (default: ./NAME.yaml)")
    init.add_argument("--timezone", default="UTC", help="IANA zone of the days (naive timestamps are read in it)")
    init.add_argument("--label-name", help="label column name (default: the column of a bare-column label, else label)")
    init.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    init.set_defaults(func=_cmd_spec_init)


def _cmd_spec_init(args: Any) -> int:
    out, spec = spec_init(args.sample, label=args.label, timestamp=args.timestamp, name=args.name, out=args.out,
                          timezone=args.timezone, label_name=args.label_name or label_name_of(args.label),
                          force=args.force)
    features = spec.features
    print(f"wrote {out}: spec {spec.name!r}, {len(spec.sources[spec.join.base].columns)} columns, "
          f"{len(features.numeric_names)} numeric and {len(features.categorical_names)} categorical features, "
          f"key_columns {spec.key_columns}, label rate {spec.quality.label_rate.min}..{spec.quality.label_rate.max}")
    print(f"use it: ML_ASSETS_SPEC={out} (or --spec {out} where a command takes one)")
    return 0
