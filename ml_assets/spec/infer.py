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
- key_columns: the fewest never-empty int/string/timestamp columns unique together in the sample (an
  id column first; at most MAX_KEY_COLUMNS); none found: the spec's default (every column);
- bounds from the sample's days (days with fewer than MIN_DAY_ROWS rows are too noisy to count):
  a column's null-rate bound is its highest daily null rate plus NULL_MARGIN (at least), capped at
  1; the label-rate bounds are the lowest and highest daily label rate widened by LABEL_MARGIN;
  min_rows is half the 5th percentile of the daily row counts.

The YAML it writes is validated with the spec model before it is written.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import yaml

from ml_assets.spec.label_expr import evaluate_label
from ml_assets.spec.model import DatasetSpec, SpecError, parse_spec
from ml_assets.spec.sources import IDENTIFIER, ColumnType

if TYPE_CHECKING:
    import pyarrow as pa

MAX_CATEGORIES = 100  # a string column with more distinct values is an id or free text, not a category
MAX_INT_CATEGORIES = 10  # an int column with at most this many values is a code (categorical)
NULL_MARGIN = 0.05  # added to the highest daily null rate seen (at least; half the rate if larger)
LABEL_MARGIN = 0.05  # the label-rate bounds widen the sample's daily range by this, each side
MIN_DAY_ROWS = 20  # days with fewer rows (often the sample's cut first/last day) do not set bounds
DEFAULT_NULL_BOUND = 0.05  # quality.max_null_rate: a column never empty in the sample may be 5% empty
FEED_DELAY_MARGIN = 2  # label_feed.max_delay_days: the longest delay seen in the sample plus this
MAX_KEY_COLUMNS = 4  # key_columns: the fewest columns unique in the sample, at most this many
KEY_PROBE_ROWS = 20_000  # combinations are tried on these first rows before the whole sample

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
    key: list[str]  # empty: none found (the spec's default, every column)
    null_bounds: dict[str, float]
    label_rate: tuple[float, float]
    observed_label_rate: tuple[float, float]
    min_rows: int
    start_date: dt.date
    days: int
    timestamp_format: str | None = None
    feed: Feed | None = None
    exclude_when: str | None = None


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


def _timestamps(table: pa.Table, column: str, zone: ZoneInfo) -> tuple[Any, str]:
    """The rows' local dates in the spec's zone and the column's timestamp_format (ml_assets.ml.timestamps rules)."""
    import pyarrow as pa

    from ml_assets.ml.timestamps import detect_timestamp_format, local_dates, to_dates, to_instants

    values = table.column(column)
    if values.null_count:
        raise InferError(f"timestamp column {column!r} has {values.null_count} empty value(s): every row "
                         "needs a timestamp to be assigned a day")
    if pa.types.is_date(values.type):
        return to_dates(values), "iso"
    try:
        declared = detect_timestamp_format(values)
        return local_dates(to_instants(values, declared, zone), zone), declared
    except ValueError as exc:  # TimestampValueError is a ValueError
        raise InferError(f"timestamp column {column!r}: {exc}") from None


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


def _daily_rates(mask: Any, index: Any, per_day: list[int], among: Any = None) -> list[float]:
    """Share of each full day's rows (or of its `among` rows) where mask is true; days under MIN_DAY_ROWS skipped."""
    import numpy as np

    days = index.to_numpy(zero_copy_only=False)
    hits = np.bincount(days, weights=np.asarray(mask, dtype=float), minlength=len(per_day))
    counts = np.asarray(per_day, dtype=float) if among is None else np.bincount(
        days, weights=np.asarray(among, dtype=float), minlength=len(per_day))
    full = counts >= MIN_DAY_ROWS
    if among is not None and counts.sum() == 0:
        raise InferError("label feed: no example of the sample has an outcome in the feed sample (keys differ?)")
    if not full.any():  # a tiny sample: the whole sample as one day
        return [float(hits.sum() / counts.sum())]
    return [float(v) for v in hits[full] / counts[full]]


def _unique(table: pa.Table, columns: list[str]) -> bool:
    return table.group_by(columns, use_threads=False).aggregate([]).num_rows == table.num_rows


def find_key(table: pa.Table, types: dict[str, ColumnType], timestamp: str) -> list[str]:
    """The fewest never-empty int/string/timestamp columns (up to MAX_KEY_COLUMNS) unique in the sample.

    One column first (an id, not the timestamp), then combinations, those with the timestamp first;
    each is tried on the first KEY_PROBE_ROWS rows before the whole sample. [] if none.
    """
    from itertools import combinations

    candidates = [name for name in table.column_names if table.column(name).null_count == 0
                  and types[name] in (ColumnType.int, ColumnType.string, ColumnType.timestamp)]
    probe = table.slice(0, KEY_PROBE_ROWS)
    # One column: id-like names, then ints, then strings (free text can be unique by chance); never the
    # timestamp alone. Several: the timestamp with strings (an event: when and who), then ints.
    singles = sorted((name for name in candidates if name != timestamp),
                     key=lambda name: (not re.search(r"(^|_)(id|key)$", name, re.I), types[name] != ColumnType.int))
    for name in singles:
        if _unique(probe, [name]) and _unique(table, [name]):
            return [name]
    ordered = sorted(candidates, key=lambda name: (name != timestamp, types[name] != ColumnType.string))
    for size in range(2, MAX_KEY_COLUMNS + 1):
        for combination in combinations(ordered, size):
            columns = list(combination)
            if _unique(probe, columns) and _unique(table, columns):
                return columns
    return []


def _column_types(table: pa.Table, what: str) -> dict[str, ColumnType]:
    types = {}
    for name in table.column_names:
        if not IDENTIFIER.match(name):
            raise InferError(f"{what}: column name {name!r} is not an identifier (letters, digits, underscores)")
        kind = column_type(table.schema.field(name).type)
        if kind is None:
            raise InferError(f"{what}: column {name!r} has type {table.schema.field(name).type}, which a spec "
                             "cannot declare")
        types[name] = kind
    return types


def _timestamp_column(table: pa.Table, column: str, option: str, types: dict[str, ColumnType], zone: ZoneInfo):
    if column not in table.column_names:
        raise InferError(f"{option} {column!r} is not a column of the sample; its columns: {table.column_names}")
    local_days, declared = _timestamps(table, column, zone)
    types[column] = ColumnType.date if types[column] == ColumnType.date else ColumnType.timestamp
    return local_days, None if declared == "iso" else declared


@dataclass
class Feed:
    """The label feed inferred from its sample: columns, timestamp format and the delay of its outcomes."""

    types: dict[str, ColumnType]
    timestamp: str
    timestamp_format: str | None
    max_delay_days: int
    observed_delay_days: tuple[int, int]
    matched: float  # share of the examples with an outcome in the feed sample


def _join_feed(table: pa.Table, local_days: Any, key: list[str], feed: pa.Table, feed_timestamp: str,
               zone: ZoneInfo) -> tuple[pa.Table, Any, Feed]:
    """(examples with their outcome's columns, has-an-outcome mask, the feed's description)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    types = _column_types(feed, "label feed")
    feed_days, declared = _timestamp_column(feed, feed_timestamp, "--labels-timestamp", types, zone)
    if not key or not set(key) <= set(feed.column_names):
        raise InferError(f"label feed: its rows must carry the examples' key; the key found in the sample is {key}, "
                         f"the feed's columns are {feed.column_names}")
    clash = sorted(set(feed.column_names) & set(table.column_names) - set(key))
    if clash:
        raise InferError(f"label feed: columns {clash} are also in the sample; rename them in one of the files")
    for column in key:
        if types[column] != column_type(table.schema.field(column).type):
            raise InferError(f"label feed: key {column!r} is {types[column]} in the feed but "
                             f"{column_type(table.schema.field(column).type)} in the sample")
    outcomes = feed.append_column("__feed_day", feed_days).append_column(
        "__first", pa.array(np.arange(feed.num_rows)))
    # One outcome per key: the first in the file.
    first = outcomes.group_by(key, use_threads=False).aggregate([("__first", "min")]).column("__first_min")
    outcomes = outcomes.take(first)
    examples = table.append_column("__day", local_days).append_column("__row", pa.array(np.arange(table.num_rows)))
    joined = examples.join(outcomes, keys=key, join_type="left outer").sort_by("__row")
    matched = pc.is_valid(joined.column("__first"))
    delays = pc.days_between(joined.column("__day"), joined.column("__feed_day")).drop_null()
    low, high = (int(pc.min(delays).as_py()), int(pc.max(delays).as_py())) if len(delays) else (0, 0)
    if low < 0:
        raise InferError(f"label feed: an outcome landed {-low} day(s) before its example's day; check "
                         "--labels-timestamp and --timestamp")
    description = Feed(types=types, timestamp=feed_timestamp, timestamp_format=declared,
                       max_delay_days=min(366, high + FEED_DELAY_MARGIN), observed_delay_days=(low, high),
                       matched=round(len(delays) / table.num_rows, 3))
    return joined, matched.to_numpy(zero_copy_only=False), description


def infer(table: pa.Table, *, label: str, timestamp: str, timezone: str = "UTC", feed: pa.Table | None = None,
          feed_timestamp: str | None = None) -> Inferred:
    import numpy as np
    import pyarrow.compute as pc

    zone = ZoneInfo(timezone)
    left_out = {}
    types = _column_types(table, "sample")
    local_days, declared = _timestamp_column(table, timestamp, "--timestamp", types, zone)
    index, per_day = _daily(local_days)
    first_day = pc.min(local_days).as_py()
    rows = table.num_rows
    key = find_key(table, types, timestamp)

    described, among, examples = None, None, table
    if feed is not None:
        examples, among, described = _join_feed(table, local_days, key, feed, feed_timestamp or "", zone)
    labels, label_columns = evaluate_label(label, examples)
    # A label column empty in some (matched) rows: those rows get no label rather than a negative one.
    matched = np.ones(rows, bool) if among is None else np.asarray(among, bool)
    empty = [c for c in examples.column_names if c in label_columns
             and (examples.column(c).is_null().to_numpy(zero_copy_only=False) & matched).any()]
    exclude_when = " OR ".join(f"{c} IS NULL" for c in empty) or None
    if empty:
        for column in empty:
            matched = matched & ~examples.column(column).is_null().to_numpy(zero_copy_only=False)
        among = matched
    label_rates = _daily_rates(labels.to_numpy(zero_copy_only=False), index, per_day, among)
    low, high = min(label_rates), max(label_rates)
    bounds = (max(0.0, round(low - LABEL_MARGIN, 3)), min(1.0, round(high + LABEL_MARGIN, 3)))
    numeric, categorical = [], []
    for name, kind in types.items():
        column = table.column(name)
        distinct = pc.count_distinct(column).as_py()
        if name == timestamp:
            continue
        if name in label_columns:
            left_out[name] = "used by the label expression (would leak the label)"
        elif [name] == key:
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
                    start_date=first_day, days=len(per_day), timestamp_format=declared, feed=described,
                    exclude_when=exclude_when)


def _identifier(text: str) -> str:
    name = re.sub(r"\W+", "_", text).strip("_").lower() or "dataset"
    return name if IDENTIFIER.match(name) else f"d_{name}"


def spec_init(sample: Path, *, label: str, timestamp: str, name: str | None = None, out: Path | None = None,
              timezone: str = "UTC", label_name: str = "label", force: bool = False, labels: Path | None = None,
              labels_timestamp: str | None = None) -> tuple[Path, DatasetSpec]:
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
    if (labels is None) != (labels_timestamp is None):
        raise InferError("--labels and --labels-timestamp go together (the feed file and its landing-time column)")
    from ml_assets.spec.infer_yaml import render

    table = read_sample(sample)
    feed = read_sample(labels) if labels is not None else None
    inferred = infer(table, label=label, timestamp=timestamp, timezone=timezone, feed=feed,
                     feed_timestamp=labels_timestamp)
    source_format = sample_format(sample)
    if source_format == "jsonl":
        source_format = "csv"  # `ml-assets land` converts any input into day blobs of the spec's format
    source = _identifier(stem)
    feed_source = _identifier(labels.name.split(".", 1)[0]) if labels is not None else None
    if feed_source == source:
        feed_source = f"{source}_labels"
    text = render(inferred, name=name, source=source, source_format=source_format, label=label,
                  label_name=label_name, timestamp=timestamp, timezone=timezone, sample=sample.name,
                  feed_source=feed_source)
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
    init.add_argument("--labels", type=Path, help="sample of a separate label feed (outcomes keyed by the sample's key)")
    init.add_argument("--labels-timestamp", help="the feed's column of when an outcome became known (its landing day)")
    init.set_defaults(func=_cmd_spec_init)


def _cmd_spec_init(args: Any) -> int:
    out, spec = spec_init(args.sample, label=args.label, timestamp=args.timestamp, name=args.name, out=args.out,
                          timezone=args.timezone, label_name=args.label_name or label_name_of(args.label),
                          force=args.force, labels=args.labels, labels_timestamp=args.labels_timestamp)
    features = spec.features
    print(f"wrote {out}: spec {spec.name!r}, {len(spec.sources[spec.join.base].columns)} columns, "
          f"{len(features.numeric_names)} numeric and {len(features.categorical_names)} categorical features, "
          f"key_columns {spec.key_columns}, label rate {spec.quality.label_rate.min}..{spec.quality.label_rate.max}")
    print(f"use it: ML_ASSETS_SPEC={out} (or --spec {out} where a command takes one)")
    return 0
