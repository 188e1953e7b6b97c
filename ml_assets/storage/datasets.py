"""Partitioned, versioned Parquet datasets on top of a BlobStore.

Layout for table T, partition P:

    tables/T/P/_CURRENT          one small blob naming the live version
    tables/T/P/v=<version>/...   the files of each version, immutable once written

A version's files are uploaded first and become visible only when `_CURRENT` is replaced,
which is a single atomic blob write: a reader sees the old partition or the new one, and a
failed write leaves the old one in place. The previous version is kept for readers that
resolved it just before the swap; older ones are deleted.


Spark reads and writes (`spark_paths`, `new_staging`, `publish_staged`) go through `spark_root`,
the URI under which every node of a cluster reaches the store's blobs: the local store's root
folder (a shared path on a cluster: NFS or the like), or an abfss://, wasbs:// root of the Azure
container read through Hadoop's connector. Without one (the Azure store by default), Spark reads
copies downloaded into the driver's cache and writes into a driver-local folder: `local[*]` only.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ml_assets.storage.base import BlobNotFoundError, BlobStore, BlobStoreError
from ml_assets.storage.local import LocalBlobStore

_POINTER = "_CURRENT"
#: Where Spark writes an output before its partitions are published (inside the store, so that
#: the executors' files and the driver's publish step see the same folder).
STAGING_PREFIX = "_staging"
#: Partitions of a range published at once (threads: remote stores spend it in round trips).
PUBLISH_WORKERS = 8
#: Bytes of partition versions' Arrow tables `read_frame` keeps in memory, least recently read
#: dropped first: weeks of days of a table at flights' ~1,000 rows (~0.1 MB) a day, a few at 100k.
VERSION_TABLES_MAX_BYTES = 256 * 2**20
# (store location, version prefix, columns) -> (the version's tables, their bytes). Arrow tables are immutable.
_VERSION_TABLES: OrderedDict[tuple, tuple[list, int]] = OrderedDict()
_VERSION_TABLES_LOCK = threading.Lock()
#: Footer key-value entry in which Spark records the schema of the DataFrame it wrote.
SPARK_SCHEMA_KEY = b"org.apache.spark.sql.parquet.row.metadata"
# Characters Hadoop expands as a glob in a path Spark reads.
_GLOB_CHARS = frozenset("*?[]{}\\")


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

    def __init__(self, blobs: BlobStore, cache_dir: Path, spark_root: str | None = None):
        self.blobs = blobs
        self.cache_dir = Path(cache_dir)
        if spark_root is None and isinstance(blobs, LocalBlobStore):
            spark_root = str(blobs.root)
        self.spark_root = spark_root.rstrip("/") if spark_root else None

    @property
    def shared(self) -> bool:
        """True if Spark executors read and write the store itself, not the driver's copies."""
        return self.spark_root is not None

    def spark_uri(self, prefix: str) -> str:
        if self.spark_root is None:
            raise BlobStoreError(f"{self.blobs.location} has no Spark root: executors cannot reach it")
        return f"{self.spark_root}/{prefix}"

    def spark_paths(self, table: str, partitions: Iterable[str]) -> list[str]:
        """Where Spark reads the live version of each partition: the store itself if shared,
        else the driver's downloaded copies (local[*] only)."""
        partitions = list(partitions)
        if self.spark_root is None:
            return self.local_paths(table, partitions)
        return [self.spark_uri(self.require(table, p).prefix) for p in partitions]

    def new_staging(self, table: str) -> str:
        """A fresh prefix inside the store for Spark to write one output into."""
        return f"{STAGING_PREFIX}/{table}-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"

    def staged_files(self, staging: str) -> dict[str, list[str]]:
        """Parquet data files under staging, by the first folder below it (Spark's partition folder)."""
        found: dict[str, list[str]] = {}
        # Keys only (`list_keys`): Spark's files carry no recorded hash, and `list` would hash each.
        for key in self.blobs.list_keys(f"{staging}/"):
            parts = key[len(staging) + 1 :].split("/")
            if len(parts) == 2 and parts[1].endswith(".parquet") and _is_data_file(Path(parts[1])):
                found.setdefault(parts[0], []).append(key)
        return found

    def footer_rows(self, keys: Iterable[str]) -> int | None:
        """Rows in these Parquet blobs from their footers, if the store is a folder the driver
        reads directly; None otherwise (count with Spark)."""
        if not isinstance(self.blobs, LocalBlobStore):
            return None
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(self.blobs.root / key).metadata.num_rows for key in keys)

    def footer_spark_schema(self, folders: Iterable[str]) -> str | None:
        """The Spark schema (JSON) that Spark recorded in the footer of every Parquet file in these
        folders (what Spark's own schema inference would read), if the driver reads them directly
        and they all carry the same one; None otherwise (let Spark infer it).

        Conservative: a remote store, a path that is not a plain local folder, a subfolder (Spark's
        partition discovery), a summary or other `_` file, an unreadable footer, a file without
        the key, or two different schemas all give None.
        """
        if self.shared and not isinstance(self.blobs, LocalBlobStore):
            return None  # executors read the remote store itself: the driver has no footers at hand
        import pyarrow.parquet as pq

        schemas: set[bytes] = set()
        for folder in folders:
            if not os.path.isabs(folder) or any(char in folder for char in _GLOB_CHARS):
                return None
            try:
                entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
            except OSError:
                return None
            for entry in entries:
                if entry.name.startswith("."):
                    continue  # hidden files (checksums) are not data for Spark either
                if entry.name.startswith("_") or entry.name.endswith("._COPYING_") or not entry.is_file():
                    return None
                try:
                    metadata = pq.read_metadata(entry.path).metadata or {}
                except (OSError, ValueError):  # not Parquet, truncated: Spark reports it
                    return None
                if SPARK_SCHEMA_KEY not in metadata:
                    return None
                schemas.add(metadata[SPARK_SCHEMA_KEY])
        if len(schemas) != 1:
            return None
        return schemas.pop().decode()

    def publish_staged(self, table: str, partition: str, files: list[str]) -> PartitionVersion:
        """Make staged Parquet blobs (from `staged_files`) the new version of one partition.

        The local store renames them into place (same file system, no copy); others copy.
        """
        if not files:
            raise BlobStoreError(
                f"refusing to publish an empty version of {table}/{partition_dirname(partition)}"
            )
        version = PartitionVersion(table, partition, f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}")
        for key in files:
            self._move(key, f"{version.prefix}/{key.rsplit('/', 1)[1]}")
        return self._make_live(version)

    def publish_staged_many(
        self, table: str, files: dict[str, list[str]], workers: int = PUBLISH_WORKERS
    ) -> dict[str, PartitionVersion]:
        """`publish_staged` for many partitions at once (a range), `workers` at a time.

        Partitions are independent and each one's pointer swap stays a single atomic write; a
        remote store spends its time in round trips, which threads overlap. Every partition is
        attempted; the first failure is raised after the others finished (each is all-or-nothing).
        """
        if len(files) <= 1 or workers <= 1:
            return {key: self.publish_staged(table, key, keys) for key, keys in files.items()}
        with ThreadPoolExecutor(min(workers, len(files)), thread_name_prefix="publish") as pool:
            futures = {key: pool.submit(self.publish_staged, table, key, keys) for key, keys in files.items()}
        return {key: future.result() for key, future in futures.items()}

    def discard(self, staging: str) -> None:
        """Remove what is left under a staging prefix (Spark's markers, a failed write's files)."""
        self.blobs.delete_prefix(f"{staging}/")

    def _move(self, src: str, dst: str) -> None:
        if isinstance(self.blobs, LocalBlobStore):
            # A rename within the store's folder. The hash recorded when staging was listed stays
            # valid (same inode, size and mtime): move it along instead of leaving it orphaned.
            for source, target in ((self.blobs.root / src, self.blobs.root / dst),
                                   (self.blobs._sidecar(src), self.blobs._sidecar(dst))):
                if source.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(source, target)
            return
        scratch = self.cache_dir / STAGING_PREFIX
        scratch.mkdir(parents=True, exist_ok=True)
        local = scratch / uuid.uuid4().hex
        try:
            self.blobs.download_file(src, local)
            self.blobs.put_file(dst, local)
        finally:
            local.unlink(missing_ok=True)
        self.blobs.delete(src)

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
        return self._make_live(version)

    def _make_live(self, version: PartitionVersion) -> PartitionVersion:
        table, partition = version.table, version.partition
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
        """The live versions of the partitions as one pandas frame (no Spark: small reads only).

        Each partition version's Arrow tables are kept in memory (``_VERSION_TABLES``): a version's
        files never change, and monitoring reads the same days again for every trailing window."""
        import pyarrow as pa

        partitions = list(partitions)
        pieces = []
        for partition in partitions:
            pieces += self._version_tables(self.require(table, partition), columns)
        if not pieces:
            raise BlobNotFoundError(f"{table} has no Parquet files in partitions {partitions}")
        return pa.concat_tables(pieces, promote_options="permissive").to_pandas()

    def _version_tables(self, version: PartitionVersion, columns: list[str] | None) -> list:
        import pyarrow.parquet as pq

        key = (self.blobs.location, version.prefix, None if columns is None else tuple(columns))
        with _VERSION_TABLES_LOCK:
            if key in _VERSION_TABLES:
                _VERSION_TABLES.move_to_end(key)
                return _VERSION_TABLES[key][0]
        path = self.blobs.local_dir(version.prefix, self.cache_dir)
        tables = [pq.read_table(file, columns=columns) for file in sorted(Path(path).rglob("*.parquet"))]
        size = sum(t.nbytes for t in tables)
        with _VERSION_TABLES_LOCK:
            _VERSION_TABLES[key] = (tables, size)
            total = sum(kept for _, kept in _VERSION_TABLES.values())
            while total > VERSION_TABLES_MAX_BYTES and _VERSION_TABLES:
                total -= _VERSION_TABLES.popitem(last=False)[1][1]
        return tables

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
        for key in self.blobs.list_keys(f"tables/{table}/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == _POINTER and parts[2].startswith("date="):
                found.append(parts[2].removeprefix("date="))
        return sorted(found)

    def _drop_old_versions(self, table: str, partition: str, keep: set[str]) -> None:
        # Keep the new version and the one that was live before it (readers may still hold
        # it), not merely the newest two: a failed publish leaves a half-uploaded version
        # that is newer than the live one but was never live.
        prefix = f"{partition_prefix(table, partition)}/v="
        versions = sorted({key[len(prefix) :].split("/", 1)[0] for key in self.blobs.list_keys(prefix)})
        for stale in versions:
            if stale not in keep:
                self.blobs.delete_prefix(f"{prefix}{stale}/")


def _is_data_file(path: Path) -> bool:
    # Spark leaves _SUCCESS and .crc files beside its output; they are not data.
    return not (path.name.startswith(("_", ".")) or path.name.endswith(".crc"))
