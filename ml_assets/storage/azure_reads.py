"""The read side of AzureBlobStore: whole-blob reads checked against their recorded sha256,
streamed hashes of what is stored, and listings (split from azure.py; no Dagster here).

A read compares the content with the sha256 in the metadata that came with it: a mismatch
that changes from read to read is a torn read (retried), the same mismatch twice under one
etag is content replaced with its metadata kept (BlobCorruptError, at once).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceModifiedError

from ml_assets.storage.azure_sdk import SHA_KEY, recorded_sha, summary, timestamp, was_modified
from ml_assets.storage.base import (
    BlobCorruptError,
    BlobInfo,
    BlobNotFoundError,
    BlobStoreError,
    sha256_hex,
    validate_key,
)

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from azure.storage.blob import ContainerClient

log = logging.getLogger("ml_assets.storage.azure")
T = TypeVar("T")


class AzureReads:
    """Reads of AzureBlobStore (mixed in; the store provides the attributes below)."""

    container: ContainerClient
    max_concurrency: int
    read_attempts: int

    if TYPE_CHECKING:

        def describe(self, key: str) -> str: ...

        def _errors(
            self, action: str, key: str, *, reading: bool
        ) -> AbstractContextManager[Any]: ...

    def get(self, key: str) -> bytes:
        blob = self.container.get_blob_client(validate_key(key))

        def read() -> tuple[bytes, str, str | None, str]:
            stream = blob.download_blob(max_concurrency=self.max_concurrency)
            data = stream.readall()
            return data, sha256_hex(data), recorded_sha(stream), stream.properties.etag

        return self._verified_read(key, read)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The SDK pins the first chunk's etag for the rest of the download, and the content
        is checked against its sha256 (see `_verified_read`), so data and etag belong together."""
        blob = self.container.get_blob_client(validate_key(key))

        def read() -> tuple[tuple[bytes, str], str, str | None, str]:
            stream = blob.download_blob(max_concurrency=self.max_concurrency)
            data = stream.readall()
            etag = stream.properties.etag
            return (data, etag), sha256_hex(data), recorded_sha(stream), etag

        return self._verified_read(key, read)

    def download_file(self, key: str, path: Path) -> None:
        blob = self.container.get_blob_client(validate_key(key))
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "w+b") as handle:

                def read() -> tuple[None, str, str | None, str]:
                    handle.seek(0)
                    handle.truncate()
                    stream = blob.download_blob(max_concurrency=self.max_concurrency)
                    stream.readinto(handle)
                    handle.flush()
                    handle.seek(0)
                    digest = hashlib.file_digest(handle, "sha256").hexdigest()
                    return None, digest, recorded_sha(stream), stream.properties.etag

                self._verified_read(key, read)
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _verified_read(self, key: str, read: Callable[[], tuple[T, str, str | None, str]]) -> T:
        """Read a blob whole, or retry if it was replaced while being read.

        The SDK pins the etag of the first chunk, so a replace during a chunked download
        fails with ResourceModifiedError. On top of that, the content is checked against the
        sha256 recorded in the metadata that came with the first chunk: this also catches
        servers whose reads are not snapshot-consistent (Azurite can return blocks of two
        versions under one etag) and corruption in transit.

        A torn read differs from one read to the next; the same wrong content twice under the
        same etag is not torn but stored: the blob was replaced with its metadata kept (or
        damaged), and that fails at once with BlobCorruptError instead of retrying.
        """
        previous: tuple[str, str] | None = None
        for attempt in range(self.read_attempts):
            if attempt:
                time.sleep(min(0.02 * 2**attempt, 1.0))
            try:
                with self._errors("read", key, reading=True):
                    result, digest, expected, etag = read()
            except BlobStoreError as exc:
                if was_modified(exc) and attempt < self.read_attempts - 1:
                    continue
                raise
            if expected is None or digest == expected:
                return result
            if previous == (digest, etag):
                raise BlobCorruptError(
                    f"{self.describe(key)} does not hold the content its metadata describes: "
                    f"two reads of it (etag {etag}) gave sha256 {digest}, its metadata says "
                    f"{expected} - replaced with its metadata kept, or damaged"
                )
            previous = (digest, etag)
            log.info("torn read of %s (attempt %d): retrying", self.describe(key), attempt + 1)
        raise BlobStoreError(
            f"cannot read {self.describe(key)}: its content did not match its sha256 in "
            f"{self.read_attempts} attempts (replaced continuously while being read?)"
        )

    def content_digest(self, key: str) -> tuple[int, str]:
        """Streams the blob and hashes what arrived; no cache.

        A cache keyed by the etag would be sound on Azure (every write changes it), but reads
        cost about as much as the hash, artifacts are small, and the recorded metadata is
        exactly what a replace-with-metadata-kept leaves unchanged, so nothing is trusted.
        """
        blob = self.container.get_blob_client(validate_key(key))
        digest = hashlib.sha256()
        size = 0
        with self._errors("read", key, reading=True):
            # The SDK pins the first chunk's etag: a replace mid-read fails, never mixes.
            stream = blob.download_blob(max_concurrency=self.max_concurrency)
            for chunk in stream.chunks():
                digest.update(chunk)
                size += len(chunk)
        return size, digest.hexdigest()

    def info(self, key: str) -> BlobInfo:
        blob = self.container.get_blob_client(validate_key(key))
        with self._errors("read properties of", key, reading=True):
            props = blob.get_blob_properties()
        digest = (props.metadata or {}).get(SHA_KEY)
        if digest:
            return BlobInfo(key, props.size, digest, props.last_modified.timestamp())
        return self._hash_and_record(key, props.etag, props.metadata or {})

    def _hash_and_record(self, key: str, etag: str, metadata: dict[str, str]) -> BlobInfo:
        """A blob written without our metadata (by another tool): hash it once, then record it."""
        blob = self.container.get_blob_client(key)
        for attempt in range(self.read_attempts):
            digest = hashlib.sha256()
            size = 0
            try:
                with self._errors("hash", key, reading=True):
                    stream = blob.download_blob(
                        etag=etag, match_condition=MatchConditions.IfNotModified
                    )
                    for chunk in stream.chunks():
                        digest.update(chunk)
                        size += len(chunk)
                    last_modified = stream.properties.last_modified.timestamp()
                    try:
                        # Conditional on the etag, so a hash is never pinned to newer content.
                        result = blob.set_blob_metadata(
                            {**metadata, SHA_KEY: digest.hexdigest()},
                            etag=etag,
                            match_condition=MatchConditions.IfNotModified,
                        )
                        last_modified = timestamp(result)
                    except ResourceModifiedError:
                        pass  # replaced meanwhile: the hash is still that of what we read
                    except HttpResponseError as exc:  # e.g. a read-only credential
                        log.warning(
                            "cannot record sha256 of %s: %s", self.describe(key), summary(exc)
                        )
                return BlobInfo(key, size, digest.hexdigest(), last_modified)
            except BlobStoreError as exc:
                if not was_modified(exc) or attempt == self.read_attempts - 1:
                    raise
            # The blob changed between reading its properties and its content: start over.
            with self._errors("read properties of", key, reading=True):
                props = blob.get_blob_properties()
            if (props.metadata or {}).get(SHA_KEY):
                return BlobInfo(
                    key, props.size, props.metadata[SHA_KEY], props.last_modified.timestamp()
                )
            etag, metadata = props.etag, props.metadata or {}
        raise AssertionError("unreachable")

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        with self._errors("list", prefix, reading=False):
            items = sorted(
                self.container.list_blobs(name_starts_with=prefix or None, include=["metadata"]),
                key=lambda item: item.name,
            )
        return self._infos(items)

    def _infos(self, items) -> Iterator[BlobInfo]:
        for item in items:
            metadata = item.metadata or {}
            if metadata.get("hdi_isfolder") == "true":
                continue  # directory marker of a hierarchical-namespace account, not a blob
            if metadata.get(SHA_KEY):
                yield BlobInfo(
                    item.name, item.size, metadata[SHA_KEY], item.last_modified.timestamp()
                )
                continue
            try:
                yield self._hash_and_record(item.name, item.etag, metadata)
            except BlobNotFoundError:
                continue  # deleted since the listing
