"""Blob store on an Azure Blob Storage container (or Azurite, its local emulator).

Every blob is a block blob whose content only becomes visible when its block list is
committed, so writes are atomic: `put` uses one Put Blob (or the SDK's staged upload for
large payloads) and `put_file` stages blocks itself and commits them at the end. The sha256
of the content travels in the blob's metadata, set in the same commit, so listings never
read content. Reads check the content against that sha256 and retry when a concurrent
replace tore them (see `_verified_read`).

Every request gives up after about `timeout_s` (see `azure_sdk.client_timeouts`): a store that accepts
connections but never answers fails the operation with a BlobStoreError instead of hanging.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock, BlobServiceClient, ContainerClient

from ml_assets.storage.azure_sdk import (
    DEFAULT_TIMEOUT_S,
    REQUEST_ATTEMPTS,
    SHA_KEY,
    client_timeouts,
    container_note,
    recorded_sha,
    summary,
    timestamp,
    was_modified,
)
from ml_assets.storage.base import (
    BlobConflictError,
    BlobCorruptError,
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
    sha256_hex,
    validate_key,
)

log = logging.getLogger(__name__)

_MIB = 1 << 20
T = TypeVar("T")

class AzureBlobStore(BlobStore):
    """Blobs in one container; `location` is `azure:<account>/<container>`."""

    def __init__(
        self,
        container: str,
        *,
        connection_string: str | None = None,
        account_url: str | None = None,
        credential: Any = None,
        create_if_missing: bool = True,
        max_single_put_size: int = 8 * _MIB,
        max_block_size: int = 4 * _MIB,
        max_concurrency: int = 4,
        read_attempts: int = 10,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        **client_kwargs: Any,
    ):
        if (connection_string is None) == (account_url is None):
            raise ValueError("AzureBlobStore needs exactly one of connection_string or account_url")
        if max_block_size <= 0 or max_single_put_size <= 0 or max_concurrency <= 0:
            raise ValueError("block sizes and concurrency must be positive")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        for setting, value in client_timeouts(self.timeout_s).items():
            client_kwargs.setdefault(setting, value)
        self.max_single_put_size = max_single_put_size
        self.max_block_size = max_block_size
        self.max_concurrency = max_concurrency
        # A read that races a replace of the same blob is retried this many times in all.
        self.read_attempts = max(1, read_attempts)
        client_kwargs.setdefault("max_single_put_size", max_single_put_size)
        client_kwargs.setdefault("max_block_size", max_block_size)
        if connection_string is not None:
            service = BlobServiceClient.from_connection_string(
                connection_string, credential=credential, **client_kwargs
            )
        else:
            service = BlobServiceClient(account_url, credential=credential, **client_kwargs)
        self.service: BlobServiceClient = service
        self.container_name = container
        self.account_name: str = service.account_name or "unknown-account"
        self.location = f"azure:{self.account_name}/{container}"
        self.container: ContainerClient = service.get_container_client(container)
        if create_if_missing:
            self._create_container()

    @classmethod
    def from_connection_string(
        cls, container: str, connection_string: str, **kwargs: Any
    ) -> AzureBlobStore:
        return cls(container, connection_string=connection_string, **kwargs)

    @classmethod
    def from_account_url(
        cls, container: str, account_url: str, credential: Any = None, **kwargs: Any
    ) -> AzureBlobStore:
        return cls(container, account_url=account_url, credential=credential, **kwargs)

    def close(self) -> None:
        self.service.close()

    # -- errors -----------------------------------------------------------------------------

    def _create_container(self) -> None:
        try:
            self.container.create_container()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise BlobStoreError(
                f"cannot create container {self.location}: {self._error_summary(exc)}"
            ) from exc

    def _error_summary(self, exc: AzureError) -> str:
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            # No HTTP answer at all: refused, reset, or nothing within the timeouts.
            return (
                f"no answer from the store ({summary(exc)}); gave up after {REQUEST_ATTEMPTS} "
                f"tries within the store timeout of {self.timeout_s:g} s"
            )
        return summary(exc)

    @contextmanager
    def _errors(self, action: str, key: str, *, reading: bool):
        """Turn SDK exceptions into BlobStoreError naming the container and the blob."""
        try:
            yield
        except ResourceNotFoundError as exc:
            if reading:
                raise BlobNotFoundError(
                    f"blob not found: {self.describe(key)}{container_note(exc)}"
                ) from exc
            raise BlobStoreError(f"cannot {action} {self.describe(key)}: {summary(exc)}") from exc
        except AzureError as exc:
            raise BlobStoreError(f"cannot {action} {self.describe(key)}: {self._error_summary(exc)}") from exc

    # -- writes -----------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> BlobInfo:
        with self._errors("write", key, reading=False):
            return self._upload(key, data)

    def _upload(self, key: str, data: bytes, **condition: Any) -> BlobInfo:
        """One upload with the sha256 in its metadata, under an optional match condition."""
        blob = self.container.get_blob_client(validate_key(key))
        digest = sha256_hex(data)
        # Above max_single_put_size the SDK stages blocks and commits them with the
        # metadata in one Put Block List, so the replace stays atomic either way.
        result = blob.upload_blob(
            data,
            overwrite=True,
            metadata={SHA_KEY: digest},
            max_concurrency=self.max_concurrency,
            **condition,
        )
        return BlobInfo(
            key=key,
            size=len(data),
            sha256=digest,
            last_modified=timestamp(result),
            etag=result.get("etag"),
        )

    def put_if(self, key: str, data: bytes, etag: str | None) -> BlobInfo:
        """Put Blob (or Put Block List) with If-Match: etag, or If-None-Match: * for etag=None.

        The service checks the condition and replaces the blob in one step, so this is a true
        compare-and-swap; the sha256 metadata is set in the same write, as in `put`.
        """
        if etag is None:
            condition: dict[str, Any] = {"match_condition": MatchConditions.IfMissing}
        else:
            condition = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        with self._errors("write", key, reading=False):
            try:
                return self._upload(key, data, **condition)
            except (ResourceExistsError, ResourceModifiedError) as exc:
                # 409 BlobAlreadyExists for If-None-Match: *, 412 ConditionNotMet for If-Match.
                raise BlobConflictError(self._conflict_message(key, etag, exc)) from exc
            except ResourceNotFoundError as exc:
                if getattr(exc, "error_code", None) == "ContainerNotFound":
                    raise
                # If-Match on a blob that was deleted meanwhile.
                raise BlobConflictError(self._conflict_message(key, etag, exc)) from exc

    def _conflict_message(self, key: str, etag: str | None, exc: AzureError) -> str:
        if etag is None:
            return f"conflict writing {self.describe(key)}: it already exists ({summary(exc)})"
        return (
            f"conflict writing {self.describe(key)}: it was replaced or deleted since it was "
            f"read (expected etag {etag}; {summary(exc)})"
        )

    def put_file(self, key: str, path: Path) -> BlobInfo:
        """Stage the file block by block while hashing it, then commit with the hash.

        The blob (and its metadata) changes only at the final commit: a failure while
        reading or uploading leaves the previous blob untouched, and the staged blocks are
        discarded by the service.
        """
        blob = self.container.get_blob_client(validate_key(key))
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as source:
                first = source.read(self.max_single_put_size + 1)
                if len(first) <= self.max_single_put_size:
                    return self.put(key, first)
                digest.update(first)
                with self._errors("write", key, reading=False):
                    block_ids, size = self._stage_blocks(blob, first, source, digest)
                    result = blob.commit_block_list(
                        [BlobBlock(block_id=block_id) for block_id in block_ids],
                        metadata={SHA_KEY: digest.hexdigest()},
                    )
        except OSError as exc:
            raise BlobStoreError(f"cannot write {self.describe(key)} from {path}: {exc}") from exc
        return BlobInfo(
            key=key,
            size=size,
            sha256=digest.hexdigest(),
            last_modified=timestamp(result),
            etag=result.get("etag"),
        )

    def _stage_blocks(self, blob, first: bytes, source, digest) -> tuple[list[str], int]:
        # Ids are unique per upload, so concurrent writers of one blob never share a block.
        upload_id = uuid.uuid4().hex
        block_ids: list[str] = []
        size = 0
        pending: set[Future] = set()

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(first), self.max_block_size):
                yield first[start : start + self.max_block_size]
            while chunk := source.read(self.max_block_size):
                digest.update(chunk)
                yield chunk

        with ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="azure-put") as pool:
            try:
                for index, chunk in enumerate(chunks()):
                    block_id = f"{upload_id}-{index:06d}"
                    block_ids.append(block_id)
                    size += len(chunk)
                    pending.add(pool.submit(blob.stage_block, block_id, chunk, length=len(chunk)))
                    # Bound memory: at most 2 * max_concurrency blocks in flight.
                    if len(pending) >= 2 * self.max_concurrency:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            future.result()
                for future in pending:
                    future.result()
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        return block_ids, size

    # -- reads ------------------------------------------------------------------------------

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

    def _verified_read(
        self, key: str, read: Callable[[], tuple[T, str, str | None, str]]
    ) -> T:
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

    def delete(self, key: str) -> None:
        blob = self.container.get_blob_client(validate_key(key))
        # Already gone (or never written) is not an error.
        with self._errors("delete", key, reading=False), suppress(ResourceNotFoundError):
            blob.delete_blob(delete_snapshots="include")

    def delete_prefix(self, prefix: str) -> int:
        # Names only: no need to hash blobs that are about to go.
        with self._errors("list", prefix, reading=False):
            names = sorted(self.container.list_blob_names(name_starts_with=prefix or None))
        for name in names:
            self.delete(name)
        return len(names)
