"""Partitioned, versioned Parquet datasets on top of a BlobStore.

Layout for table T, partition P:

    tables/T/P/_CURRENT          one small blob naming the live version
    tables/T/P/v=<version>/...   the files of each version, immutable once written

A version's files are uploaded first and become visible only when `_CURRENT` is replaced,
which is a single atomic blob write: a reader sees the old partition or the new one, and a
failed write leaves the old one in place. The previous version is kept for readers that
resolved it just before the swap; older ones are deleted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ml_assets.storage.base import BlobNotFoundError, BlobStore, BlobStoreError

_POINTER = "_CURRENT"


@dataclass(frozen=True)
class PartitionVersion:
    table: str
    partition: str
    version: str

    @property
    def prefix(self) -> str:
        return f"{partition_prefix(self.table, self.partition)}/v={self.version}"


def partition_prefix(table: str, partition: str) -> str:
    return f"tables/{table}/{partition_dirname(partition)}"


def partition_dirname(partition: str) -> str:
    return f"date={partition}" if partition else "all"


class DatasetStore:
    """Publishes and resolves partition versions of named tables."""

    def __init__(self, blobs: BlobStore, cache_dir: Path):
        self.blobs = blobs
        self.cache_dir = Path(cache_dir)

    def publish(self, table: str, partition: str, local_dir: Path) -> PartitionVersion:
        """Upload every file of local_dir as the new version of one partition."""
        files = sorted(p for p in Path(local_dir).rglob("*") if p.is_file() and _is_data_file(p))
        if not files:
            raise BlobStoreError(
                f"refusing to publish an empty version of {table}/{partition_dirname(partition)}"
            )
        version = PartitionVersion(table, partition, f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}")
        for path in files:
            self.blobs.put_file(f"{version.prefix}/{path.relative_to(local_dir).as_posix()}", path)
        previous = self.current(table, partition)
        self.blobs.put(f"{partition_prefix(table, partition)}/{_POINTER}", version.version.encode())
        keep = {version.version} | ({previous.version} if previous else set())
        self._drop_old_versions(table, partition, keep)
        return version

    def current(self, table: str, partition: str) -> PartitionVersion | None:
        try:
            raw = self.blobs.get(f"{partition_prefix(table, partition)}/{_POINTER}")
        except BlobNotFoundError:
            return None
        return PartitionVersion(table, partition, raw.decode().strip())

    def require(self, table: str, partition: str) -> PartitionVersion:
        version = self.current(table, partition)
        if version is None:
            raise BlobNotFoundError(
                f"{table} has no data for partition {partition or '(unpartitioned)'} in "
                f"{self.blobs.describe(partition_prefix(table, partition))}"
            )
        return version

    def local_paths(self, table: str, partitions: Iterable[str]) -> list[str]:
        """Local folders (downloaded if the store is remote) of the live version of each partition."""
        return [
            str(self.blobs.local_dir(self.require(table, p).prefix, self.cache_dir)) for p in partitions
        ]

    def read_frame(self, table: str, partitions: Iterable[str], columns: list[str] | None = None):
        """The live versions of the partitions as one pandas frame (no Spark: small reads only)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        partitions = list(partitions)
        pieces = []
        for path in self.local_paths(table, partitions):
            for file in sorted(Path(path).rglob("*.parquet")):
                pieces.append(pq.read_table(file, columns=columns))
        if not pieces:
            raise BlobNotFoundError(f"{table} has no Parquet files in partitions {partitions}")
        return pa.concat_tables(pieces, promote_options="permissive").to_pandas()

    def row_count(self, table: str, partition: str) -> int | None:
        """Rows in the live version of a partition, from Parquet footers; None if it has none."""
        import pyarrow.parquet as pq

        if self.current(table, partition) is None:
            return None
        (path,) = self.local_paths(table, [partition])
        return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(Path(path).rglob("*.parquet")))

    def partitions(self, table: str) -> list[str]:
        """Partitions of table that have a live version."""
        found = []
        for blob in self.blobs.list(f"tables/{table}/"):
            parts = blob.key.split("/")
            if len(parts) == 4 and parts[3] == _POINTER and parts[2].startswith("date="):
                found.append(parts[2].removeprefix("date="))
        return sorted(found)

    def _drop_old_versions(self, table: str, partition: str, keep: set[str]) -> None:
        # Keep the new version and the one that was live before it (readers may still hold
        # it), not merely the newest two: a failed publish leaves a half-uploaded version
        # that is newer than the live one but was never live.
        prefix = f"{partition_prefix(table, partition)}/v="
        versions = sorted({blob.key[len(prefix) :].split("/", 1)[0] for blob in self.blobs.list(prefix)})
        for stale in versions:
            if stale not in keep:
                self.blobs.delete_prefix(f"{prefix}{stale}/")


def _is_data_file(path: Path) -> bool:
    # Spark leaves _SUCCESS and .crc files beside its output; they are not data.
    return not (path.name.startswith(("_", ".")) or path.name.endswith(".crc"))
