"""Write day blobs idempotently: a blob is written only when its bytes change (same rows, untouched blob)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from tqdm import tqdm

from ml_assets.ingest.days import blob_key, encode_day, for_encoding, merge_day, split_days
from ml_assets.ingest.files import LandingError, find_files, read_file
from ml_assets.ml.raw import parse_blob
from ml_assets.ml.raw_folder import MalformedBlobError
from ml_assets.spec.model import DatasetSpec
from ml_assets.storage.base import BlobInfo, BlobStore, sha256_hex

if TYPE_CHECKING:
    import pyarrow as pa

#: merge: a landed day keeps its rows, new rows replace those with the same key (see days.merge_day).
#: replace: the day's blob holds exactly the rows landed now.
Mode = Literal["merge", "replace"]
#: Blob writes in flight at once.
WRITERS = 8


@dataclass(frozen=True)
class LandedBlob:
    source: str
    day: dt.date
    blob: BlobInfo
    rows: int
    #: False when the blob already held exactly these bytes and was not written.
    written: bool = True


@dataclass
class LandReport:
    source: str
    files: list[Path]
    rows_read: int = 0
    #: Rows whose day is outside --start/--end, not landed.
    rows_outside: int = 0
    blobs: list[LandedBlob] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(b.written for b in self.blobs)

    @property
    def unchanged(self) -> int:
        return len(self.blobs) - self.written

    @property
    def rows_landed(self) -> int:
        return sum(b.rows for b in self.blobs)

    def describe(self, location: str) -> str:
        outside = f"; {self.rows_outside} row(s) outside --start/--end skipped" if self.rows_outside else ""
        return (f"{self.source}: {self.rows_read} rows from {len(self.files)} file(s) -> {len(self.blobs)} day "
                f"blob(s) in {location} ({self.written} written, {self.unchanged} unchanged){outside}")


def default_source(spec: DatasetSpec, source: str | None) -> str:
    if source is not None:
        if source not in spec.sources:
            raise LandingError(f"spec {spec.name!r} has no source {source!r}; its sources: {sorted(spec.sources)}")
        return source
    if len(spec.sources) == 1:
        return next(iter(spec.sources))
    base = getattr(getattr(spec, "join", None), "base", None)
    if base in spec.sources:
        return base
    raise LandingError(f"spec {spec.name!r} has several sources {sorted(spec.sources)}: name one with --source")


def land_files(store: BlobStore, spec: DatasetSpec, paths: Sequence[str | Path], source: str | None = None,
               start: dt.date | None = None, end: dt.date | None = None, mode: Mode = "merge",
               progress: bool = False) -> LandReport:
    """Land CSV / Parquet / JSON Lines files (paths, folders or globs) of one source as day blobs.

    All files are read (into memory) before any blob is written, so a bad file lands nothing and a day
    spread over several files lands whole. Rows outside start..end (inclusive, either open) are skipped.
    """
    import pyarrow as pa

    if start is not None and end is not None and end < start:
        raise LandingError(f"end {end} is before start {start}")
    source = default_source(spec, source)
    files = find_files(list(paths))
    source_spec = spec.sources[source]
    tables = []
    with tqdm(files, desc=f"reading {source}", unit="file", disable=not progress) as bar:
        for path in bar:
            tables.append(read_file(path, source_spec, spec.zone))
    table = pa.concat_tables(tables) if tables else None
    report = LandReport(source, files, rows_read=table.num_rows if table is not None else 0)
    days = None
    if start is not None or end is not None:
        days = _days_in(table, source_spec, spec.zone, start, end)
    if table is not None:
        blobs, outside = _land_source(store, spec, source, table, days, mode, progress)
        report.blobs, report.rows_outside = blobs, outside
    return report


def land_tables(store: BlobStore, spec: DatasetSpec, tables: dict[str, pa.Table], days: Iterable[dt.date] | None,
                mode: Mode = "replace", progress: bool = False) -> list[LandedBlob]:
    """Typed tables (the spec's columns) of several sources as day blobs; days None: every day present."""
    unknown = sorted(set(tables) - set(spec.sources))
    if unknown:
        raise ValueError(f"frames for sources the spec does not declare: {unknown}")
    wanted = None if days is None else set(days)
    landed: list[LandedBlob] = []
    for source, table in tables.items():
        landed += _land_source(store, spec, source, table, wanted, mode, progress)[0]
    return landed


def _days_in(table, source_spec, zone, start, end) -> set[dt.date]:
    from ml_assets.ingest.days import row_days

    present = set(row_days(table, source_spec, zone).unique().to_pylist()) if table is not None else set()
    return {day for day in present if (start is None or day >= start) and (end is None or day <= end)}


def _land_source(store: BlobStore, spec: DatasetSpec, source: str, table: pa.Table, days: set[dt.date] | None,
                 mode: Mode, progress: bool) -> tuple[list[LandedBlob], int]:
    source_spec = spec.sources[source]
    keys = spec.source_keys(source)
    ordered, spans, outside = split_days(table, source_spec, keys, spec.zone, days)
    if not spans:
        return [], outside
    prepared = for_encoding(ordered, source_spec, spec.zone)
    # One listing of the source's blobs: recorded sha256s, nothing downloaded for blobs landed here.
    wanted = {blob_key(spec, source, day) for day, _, _ in spans}
    existing = {info.key: info for info in store.list(source_spec.prefix + "/") if info.key in wanted}
    landed: dict[dt.date, LandedBlob] = {}
    # Writes overlap (a local write waits on fsync, an Azure one on the network); encoding stays here.
    with ThreadPoolExecutor(WRITERS) as pool, \
            tqdm(total=len(spans), desc=f"landing {source}", unit="blob", disable=not progress) as bar:
        pending = {}
        for day, offset, length in spans:
            key = blob_key(spec, source, day)
            data = encode_day(prepared.slice(offset, length), source_spec, spec.zone, prepared=True)
            before, count = existing.get(key), length
            if before is not None and before.sha256 != sha256_hex(data) and mode == "merge":
                rows = merge_day(_landed_rows(store, spec, source, key, day), ordered.slice(offset, length),
                                 source_spec, keys)
                data, count = encode_day(rows, source_spec, spec.zone), rows.num_rows
            if before is not None and before.sha256 == sha256_hex(data):
                landed[day] = LandedBlob(source, day, before, count, written=False)
                bar.update()
                continue
            future = pool.submit(store.put, key, data)
            future.add_done_callback(lambda _: bar.update())
            pending[future] = (day, count)
        for future, (day, count) in pending.items():
            landed[day] = LandedBlob(source, day, future.result(), count)
    return [landed[day] for day, _, _ in spans], outside


def _landed_rows(store: BlobStore, spec: DatasetSpec, source: str, key: str, day: dt.date) -> pa.Table:
    try:
        return parse_blob(store.get(key), spec.sources[source], store.describe(key), day, spec.zone)
    except MalformedBlobError as exc:
        raise LandingError(f"cannot merge into the landed blob: {exc}; land with --replace to overwrite "
                           "the day") from None
