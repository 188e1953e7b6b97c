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
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobBlock, BlobServiceClient, ContainerClient

from ml_assets.storage.azure_reads import AzureReads
from ml_assets.storage.azure_sdk import (
    DEFAULT_TIMEOUT_S,
    REQUEST_ATTEMPTS,
    SHA_KEY,
    client_timeouts,
    container_note,
    summary,
    timestamp,
)
from ml_assets.storage.base import (
    BlobConflictError,
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

class AzureBlobStore(AzureReads, BlobStore):
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

    def delete(self, key: str) -> None:
        blob = self.container.get_blob_client(validate_key(key))
        # Already gone (or never written) is not an error.
        with self._errors("delete", key, reading=False), suppress(ResourceNotFoundError):
            blob.delete_blob(delete_snapshots="include")

    def list_keys(self, prefix: str = "") -> list[str]:
        # The keys `list` yields, without hashing blobs written by others (Spark's output has
        # no sha256 metadata: `list` would download each one). Folder markers are skipped alike.
        with self._errors("list", prefix, reading=False):
            items = self.container.list_blobs(name_starts_with=prefix or None, include=["metadata"])
            return sorted(
                item.name for item in items if (item.metadata or {}).get("hdi_isfolder") != "true"
            )

    def delete_prefix(self, prefix: str) -> int:
        # Names only: no need to hash blobs that are about to go (folder markers go too).
        with self._errors("list", prefix, reading=False):
            names = sorted(self.container.list_blob_names(name_starts_with=prefix or None))
        for name in names:
            self.delete(name)
        return len(names)
