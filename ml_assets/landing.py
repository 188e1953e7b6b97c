"""Land raw data into a blob store the way an upstream system would: one blob per source per day."""

from __future__ import annotations

import datetime as dt
import gzip
import io
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
from tqdm import tqdm

from ml_assets.spec.model import DatasetSpec
from ml_assets.storage.base import BlobInfo, BlobStore


@dataclass(frozen=True)
class LandedBlob:
    source: str
    day: dt.date
    blob: BlobInfo
    rows: int


def blob_key(spec: DatasetSpec, source: str, day: dt.date) -> str:
    source_spec = spec.sources[source]
    extension = "csv.gz" if source_spec.format == "csv" and source_spec.compression == "gzip" else source_spec.format
    return f"{spec.blob_prefix(source, day)}/{source}.{extension}"


def local_days(frame: pd.DataFrame, column: str, zone) -> pd.Series:
    stamps = pd.to_datetime(frame[column], utc=True)
    return stamps.dt.tz_convert(zone.key).dt.date


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    return [start + dt.timedelta(days=offset) for offset in range((end - start).days + 1)]


def land(
    store: BlobStore,
    spec: DatasetSpec,
    frames: dict[str, pd.DataFrame],
    days: Iterable[dt.date],
    progress: bool = False,
) -> list[LandedBlob]:
    """Write each source's rows of each day as one blob, replacing what was there.

    A day on which a source has no rows gets no blob: downstream sees that day as missing.
    """
    unknown = sorted(set(frames) - set(spec.sources))
    if unknown:
        raise ValueError(f"frames for sources the spec does not declare: {unknown}")
    days = list(days)
    landed: list[LandedBlob] = []
    with tqdm(total=len(days) * len(frames), desc="landing", unit="blob", disable=not progress) as bar:
        for source, frame in frames.items():
            source_spec = spec.sources[source]
            by_day = frame.groupby(local_days(frame, source_spec.timestamp_column, spec.zone))
            groups = {day: rows for day, rows in by_day}
            for day in days:
                rows = groups.get(day)
                bar.update()
                if rows is None or rows.empty:
                    continue
                key = blob_key(spec, source, day)
                info = store.put(key, _encode(rows, source_spec.format, source_spec.compression == "gzip"))
                landed.append(LandedBlob(source, day, info, len(rows)))
    return landed


def _encode(rows: pd.DataFrame, file_format: str, gzipped: bool = False) -> bytes:
    if file_format == "csv":
        text = rows.to_csv(index=False).encode("utf-8")
        # mtime=0: the same rows give the same bytes, so relanding them keeps the blob's sha256.
        return gzip.compress(text, mtime=0) if gzipped else text
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False)
    return buffer.getvalue()
