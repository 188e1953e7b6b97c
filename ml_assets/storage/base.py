"""The blob-store interface shared by every backend."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class BlobStoreError(Exception):
    """A storage operation failed; the message names the container and blob."""


class BlobNotFoundError(BlobStoreError, FileNotFoundError):
    """The named blob does not exist."""


class BlobCorruptError(BlobStoreError):
    """A blob's content does not match the sha256 recorded with it (replaced or damaged)."""


class BlobConflictError(BlobStoreError):
    """A conditional write (`put_if`) lost: the blob changed, appeared or vanished meanwhile."""


@dataclass(frozen=True)
class BlobInfo:
    """What a listing tells about one blob, without reading it."""

    key: str
    size: int
    sha256: str
    last_modified: float
    #: The blob's etag as written; set by writes (`put`, `put_file`, `put_if`), None from
    #: `info` and `list`. Pass it to `put_if` to replace exactly this version of the blob.
    etag: str | None = None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def validate_key(key: str) -> str:
    """Keys are relative, '/'-separated and never climb out of the store."""
    if not key or key.startswith("/") or key.endswith("/"):
        raise BlobStoreError(f"invalid blob key {key!r}: must be a relative path to a blob")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise BlobStoreError(f"invalid blob key {key!r}: empty, '.' or '..' path segment")
    return key


class BlobStore(ABC):
    """A flat namespace of immutable-once-written blobs addressed by '/'-separated keys.

    Every write is atomic: a reader sees the old blob or the new one, never a part of either.
    Each blob carries the sha256 of its content, so a listing tells whether a blob changed.

    `get_with_etag` and `put_if` add compare-and-swap: read a blob and its etag, compute the
    new content, and write it only if nobody replaced the blob meanwhile; on BlobConflictError
    read again and retry. Etags are opaque strings that change whenever the blob is replaced
    (Azure: the service's etag; local: content sha256 plus size, mtime and inode).
    """

    #: Human-readable location used in error messages, e.g. "local:/data/store" or "azure:ml-assets".
    location: str

    @abstractmethod
    def put(self, key: str, data: bytes) -> BlobInfo:
        """Write (or replace) one blob atomically."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> BlobInfo:
        """Upload a local file as one blob, atomically, without reading it whole into memory."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Read one blob; raises BlobNotFoundError naming the blob if it is missing."""

    @abstractmethod
    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """Read one blob and the etag of exactly that content; BlobNotFoundError if missing."""

    @abstractmethod
    def put_if(self, key: str, data: bytes, etag: str | None) -> BlobInfo:
        """Write one blob atomically only if its current etag is `etag`.

        With `etag=None` the write only creates: it succeeds only if the blob does not exist.
        Otherwise (the blob was replaced, created or deleted since `etag` was read) nothing is
        written and BlobConflictError, naming the blob, is raised. The returned BlobInfo carries
        the new etag.

        As with any conditional write over a network, a write whose response was lost may be
        retried by the client and then report a conflict although it took effect; callers
        that must tell the two apart write unique content and compare on conflict.
        """

    @abstractmethod
    def download_file(self, key: str, path: Path) -> None:
        """Stream one blob into a local file (written atomically)."""

    @abstractmethod
    def info(self, key: str) -> BlobInfo:
        """Size, sha256 and modification time of one blob."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Blobs whose key starts with prefix, in key order."""

    def list_keys(self, prefix: str = "") -> list[str]:
        """Keys of the blobs whose key starts with prefix, in key order: `list` without the
        sizes and hashes, for callers that only need names (backends override it to skip them)."""
        return [blob.key for blob in self.list(prefix)]

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one blob; removing a missing blob is not an error."""

    def content_digest(self, key: str) -> tuple[int, str]:
        """Size and sha256 of the blob's content as read now, never a recorded or cached value.

        For integrity checks (see ModelStore.verify): `info` and `list` return the sha256
        recorded when the blob was written, which bit rot or a replace that kept the
        metadata leaves unchanged. Backends override this to stream instead of buffering.
        """
        data = self.get(key)
        return len(data), sha256_hex(data)

    def stale_temp_files(self, older_than: float) -> list[tuple[str, int]]:
        """(name, bytes) of temp files a killed write left, untouched since `older_than` (epoch s).

        Only backends that write temp files have any (the local folder); names are relative
        to the store and are passed back to `delete_temp_file`.
        """
        return []

    def delete_temp_file(self, name: str) -> None:
        """Remove one temp file named by `stale_temp_files` (missing is not an error)."""
        raise BlobStoreError(f"{self.location} keeps no temp files: cannot delete {name}")

    def exists(self, key: str) -> bool:
        try:
            self.info(key)
        except BlobNotFoundError:
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list_keys(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def local_dir(self, prefix: str, cache_dir: Path) -> Path:
        """A local directory holding every blob under prefix (for engines such as Spark).

        Backends on local disk return the directory itself; remote backends download into
        cache_dir. Callers must only use this for prefixes whose blobs never change
        (versioned dataset folders), so a cached copy is never stale.
        """
        prefix = prefix.rstrip("/") + "/"
        target = cache_dir / prefix
        marker = target / ".complete"
        if marker.exists():
            return target
        blobs = list(self.list(prefix))
        if not blobs:
            raise BlobNotFoundError(f"no blobs under {self.location}/{prefix}")
        for blob in blobs:
            self.download_file(blob.key, cache_dir / blob.key)
        marker.touch()
        return target

    def describe(self, key: str) -> str:
        return f"{self.location}/{key}"
