"""Day folders as users fill them: which blobs are data, declared and undeclared compression, long lines."""

from __future__ import annotations

import datetime as dt
import gzip
import io

import pandas as pd
import pytest

from ml_assets.ml.raw import MalformedBlobError, parse_blob
from ml_assets.ml.raw_folder import duplicate_blobs, split_day_folder
from ml_assets.spec import DatasetSpec, SourceSpec
from ml_assets_tests.conftest import rows_of

DAY = dt.date(2013, 1, 5)
FOLDER = "raw/flights/date=2013-01-05/"


@pytest.fixture(scope="module")
def day_rows(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return rows_of(frames["flights"], DAY)


@pytest.fixture(scope="module")
def day_csv(day_rows: pd.DataFrame) -> bytes:
    return day_rows.to_csv(index=False).encode("utf-8")


@pytest.fixture(scope="module")
def flights(spec: DatasetSpec) -> SourceSpec:
    return spec.sources["flights"]


def with_(source: SourceSpec, **update) -> SourceSpec:
    """A changed copy, validated like a spec (model_copy alone would skip the validators)."""
    return SourceSpec.model_validate({**source.model_dump(), **update})


def malformed(data: bytes, source: SourceSpec, spec: DatasetSpec, blob: str = FOLDER + "flights.csv") -> str:
    with pytest.raises(MalformedBlobError) as raised:
        parse_blob(data, source, blob, DAY, spec.zone)
    message = str(raised.value)
    assert message.startswith(f"{blob}: "), message
    return message


# --- which blobs are data --------------------------------------------------------------------


def test_markers_hidden_and_other_extensions_are_ignored(flights: SourceSpec) -> None:
    names = ["flights.csv", "part-00001.csv", "_SUCCESS", "_committed_4871", "_started_4871", ".DS_Store",
             ".flights.csv.crc", "_temporary/0/part-00000.csv", "notes.txt", "flights.csv.bak",
             "flights.parquet", "sub/part-00002.csv"]
    folder = split_day_folder(flights, FOLDER, [FOLDER + n for n in names])
    assert folder.data == [FOLDER + n for n in ("flights.csv", "part-00001.csv", "sub/part-00002.csv")]
    assert len(folder.ignored) == len(names) - 3


@pytest.mark.parametrize(
    ("update", "data"),
    [({"compression": "gzip"}, ["b.csv.gz"]),
     ({"compression": "auto"}, ["a.csv", "b.csv.gz"]),
     ({"format": "parquet"}, ["c.parquet"]),
     ({"files": ["*.txt"], "ignore": []}, ["_d.txt", "e.txt"])],
    ids=["gzip", "auto", "parquet", "own-patterns"],
)
def test_patterns_follow_the_declaration(flights: SourceSpec, update: dict, data: list[str]) -> None:
    names = ["a.csv", "b.csv.gz", "c.parquet", "_d.txt", "e.txt", "_SUCCESS"]
    folder = split_day_folder(with_(flights, **update), FOLDER, [FOLDER + n for n in names])
    assert folder.data == [FOLDER + n for n in data]


def test_copies_are_found_by_content() -> None:
    digests = {"d/z.csv": "x", "d/b.csv": "y", "d/a.csv": "x", "d/copy of z.csv": "x"}  # oldest first
    assert duplicate_blobs(digests) == [("d/z.csv", "d/a.csv"), ("d/z.csv", "d/copy of z.csv")]
    assert duplicate_blobs({"d/a.csv": "x", "d/b.csv": "y"}) == []


# --- compression -----------------------------------------------------------------------------


def test_gzip_in_a_csv_blob_is_named(spec: DatasetSpec, flights: SourceSpec, day_csv: bytes) -> None:
    message = malformed(gzip.compress(day_csv), flights, spec)
    assert "gzip data in a .csv blob" in message and "compression: gzip" in message
    assert "UTF-8" not in message


@pytest.mark.parametrize("compression", ["gzip", "auto"])
def test_declared_gzip_is_read(spec: DatasetSpec, flights: SourceSpec, day_csv: bytes, compression: str) -> None:
    source = with_(flights, compression=compression)
    blob = FOLDER + "flights.csv.gz"
    table = parse_blob(gzip.compress(day_csv), source, blob, DAY, spec.zone)
    assert table.equals(parse_blob(day_csv, flights, FOLDER + "flights.csv", DAY, spec.zone))
    assert table.num_rows == 720


def test_auto_reads_plain_csv_too(spec: DatasetSpec, flights: SourceSpec, day_csv: bytes) -> None:
    assert parse_blob(day_csv, with_(flights, compression="auto"), FOLDER + "f.csv", DAY, spec.zone).num_rows == 720


def test_declared_gzip_that_is_not(spec: DatasetSpec, flights: SourceSpec, day_csv: bytes) -> None:
    assert "not gzip data (the source declares compression: gzip" in malformed(
        day_csv, with_(flights, compression="gzip"), spec)


def test_truncated_gzip(spec: DatasetSpec, flights: SourceSpec, day_csv: bytes) -> None:
    data = gzip.compress(day_csv)
    assert "gzip stream ends early; the blob looks truncated" in malformed(
        data[: len(data) // 2], with_(flights, compression="gzip"), spec)


def test_corrupt_gzip(spec: DatasetSpec, flights: SourceSpec, day_csv: bytes) -> None:
    data = bytearray(gzip.compress(day_csv))
    data[len(data) // 2] ^= 0xFF
    data[-8] ^= 0xFF  # and the CRC, in case the flipped byte still inflates
    assert "corrupt gzip data" in malformed(bytes(data), with_(flights, compression="gzip"), spec)


def test_gzip_bomb_stops_at_the_limit(spec: DatasetSpec, flights: SourceSpec) -> None:
    bomb = gzip.compress(b"\0" * (8 << 20))  # 8 MiB of zeros in about 8 KiB
    message = malformed(bomb, with_(flights, compression="gzip", max_decompressed_bytes=1 << 20), spec)
    assert "gzip data expands beyond the source's max_decompressed_bytes of 1,048,576" in message


def test_concatenated_gzip_members_are_read(spec: DatasetSpec, flights: SourceSpec, day_csv: bytes) -> None:
    """`cat a.gz b.gz` is valid gzip: both members are read."""
    header, body = day_csv.split(b"\n", 1)
    half = body.index(b"\n", len(body) // 2) + 1
    data = gzip.compress(header + b"\n" + body[:half]) + gzip.compress(body[half:])
    table = parse_blob(data, with_(flights, compression="gzip"), FOLDER + "f.csv.gz", DAY, spec.zone)
    assert table.num_rows == 720


def test_gzip_that_holds_nothing(spec: DatasetSpec, flights: SourceSpec) -> None:
    assert "0 bytes once decompressed" in malformed(gzip.compress(b""), with_(flights, compression="gzip"), spec)


def test_parquet_in_a_csv_blob_is_named(spec: DatasetSpec, flights: SourceSpec, day_rows: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    day_rows.to_parquet(buffer, index=False)
    assert "Parquet data in a csv blob" in malformed(buffer.getvalue(), flights, spec)


def test_zip_in_a_csv_blob_is_named(spec: DatasetSpec, flights: SourceSpec, day_csv: bytes) -> None:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("flights.csv", day_csv)
    assert "zip archive in a csv blob" in malformed(buffer.getvalue(), flights, spec)


def test_gzip_in_a_parquet_blob_is_named(spec: DatasetSpec, flights: SourceSpec, day_rows: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    day_rows.to_parquet(buffer, index=False)
    message = malformed(gzip.compress(buffer.getvalue()), with_(flights, format="parquet"), spec,
                        blob=FOLDER + "flights.parquet")
    assert "gzip data in a .parquet blob" in message


@pytest.mark.parametrize("where", ["in-a-row", "zero-filled-tail"])
def test_nul_bytes_are_named(spec: DatasetSpec, flights: SourceSpec, day_csv: bytes, where: str) -> None:
    data = day_csv.replace(b",UA,", b",U\x00A,", 1) if where == "in-a-row" else day_csv + b"\x00" * 4096
    message = malformed(data, flights, spec)
    line = day_csv[: day_csv.index(b",UA,")].count(b"\n") + 1 if where == "in-a-row" else 722
    assert "NUL byte at offset" in message and f"(line {line}, data row {line - 1})" in message


# --- long lines ------------------------------------------------------------------------------


def _with_long_value(day_csv: bytes, row: int, size: int) -> bytes:
    """The day's CSV with an extra trailing column, `size` bytes long on data row `row` (dropped on parse)."""
    header, *lines = day_csv.rstrip(b"\n").split(b"\n")
    lines = [line + b"," + (b"x" * size if index == row - 1 else b"") for index, line in enumerate(lines)]
    return b"\n".join([header + b",upstream_blob", *lines]) + b"\n"


def test_a_10_mb_line_is_named_with_its_row(spec: DatasetSpec, flights: SourceSpec, day_csv: bytes) -> None:
    message = malformed(_with_long_value(day_csv, 300, 10 << 20), flights, spec)
    assert "line 301 (data row 300)" in message
    assert "over the source's max_line_bytes of 1,048,576" in message
    assert "straddl" not in message


def test_the_limit_is_configurable(spec: DatasetSpec, flights: SourceSpec, day_csv: bytes) -> None:
    """A raised limit reads a 3 MiB line (Arrow's block grows with it); a lowered one refuses ordinary rows."""
    long_line = _with_long_value(day_csv, 5, 3 << 20)
    table = parse_blob(long_line, with_(flights, max_line_bytes=4 << 20), FOLDER + "f.csv", DAY, spec.zone)
    assert table.num_rows == 720 and "upstream_blob" not in table.column_names
    message = malformed(day_csv, with_(flights, max_line_bytes=64), spec)
    assert "line 1 (data row 0)" in message and "max_line_bytes of 64" in message
