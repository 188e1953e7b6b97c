"""Land raw data into a blob store the way an upstream system would: one blob per source per day.

Two ways in, one path (ml_assets/ingest/): `land_files` reads users' CSV / Parquet / JSON Lines files,
`land` takes in-memory frames (the bundled examples); both split rows into days by the timestamp rules
(ml_assets/ml/timestamps.py), encode each day canonically and write only the blobs whose bytes change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import pandas as pd

from ml_assets.ingest import LandedBlob, LandingError, LandReport, blob_key, land_files, land_tables
from ml_assets.ml.raw import typed_table
from ml_assets.ml.raw_folder import MalformedBlobError
from ml_assets.ml.timestamps import local_dates, to_instants
from ml_assets.spec.model import DatasetSpec
from ml_assets.storage.base import BlobStore

__all__ = ["LandReport", "LandedBlob", "LandingError", "blob_key", "days_between", "land", "land_files",
           "local_days"]


def local_days(frame: pd.DataFrame, column: str, zone) -> pd.Series:
    """Each row's local date by the timestamp rules (iso; naive values are local to `zone`)."""
    import pyarrow as pa

    stamps = to_instants(pa.array(frame[column], from_pandas=True), "iso", zone)
    return pd.Series(local_dates(stamps, zone).to_pylist(), index=frame.index)


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
    """Write each source's rows of each day as one blob, replacing what was there (same bytes: untouched).

    A day on which a source has no rows gets no blob: downstream sees that day as missing.
    """
    import pyarrow as pa

    unknown = sorted(set(frames) - set(spec.sources))
    if unknown:
        raise ValueError(f"frames for sources the spec does not declare: {unknown}")
    tables = {}
    for source, frame in frames.items():
        try:
            tables[source] = typed_table(pa.Table.from_pandas(frame, preserve_index=False), spec.sources[source],
                                         f"{source} rows", spec.zone)
        except MalformedBlobError as exc:
            raise LandingError(str(exc)) from None
    return land_tables(store, spec, tables, days, mode="replace", progress=progress)
