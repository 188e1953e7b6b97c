"""Blob store on a local folder: the embedded default."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat as stat_module
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from ml_assets.fileio import atomic_write, exclusive_lock
from ml_assets.storage.base import (
    BlobConflictError,
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
    sha256_hex,
    validate_key,
)

# Content hashes live beside the blobs so that listing never reads blob content.
_SIDECAR_DIR = ".sha256"
# flock(2) lock files that serialise the replace step of writes to one key (see `_locked`).
_LOCK_DIR = ".locks"
_INTERNAL_DIRS = (_SIDECAR_DIR, _LOCK_DIR)
_LOCK_STRIPES = 256
_TMP_PREFIX = ".tmp-"
# `put_if` argument meaning "no condition" (None already means "only if missing").
_UNCONDITIONAL = object()


def _etag(digest: str, stat: os.stat_result) -> str:
    """Changes whenever the blob is replaced: every write renames a fresh inode into place.

    The content hash alone would make compare-and-swap correct (a swap succeeds only if the
    content is still what the caller read); size, mtime and inode make it change on a rewrite
    of identical content too, as Azure's etag does.
    """
    return f'"{digest}-{stat.st_size:x}-{stat.st_mtime_ns:x}-{stat.st_ino:x}"'


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_ino, b.st_size, b.st_mtime_ns)


class LocalBlobStore(BlobStore):
    """Blobs as files under a root folder; writes go to a temp file, then os.replace."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.location = f"local:{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _sidecar(self, key: str) -> Path:
        return self.root / _SIDECAR_DIR / (key + ".json")

    def _atomic_write(self, target: Path, write) -> None:
        atomic_write(target, write, prefix=_TMP_PREFIX)

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """Hold the exclusive flock(2) lock guarding key, across threads and processes.

        flock locks belong to an open file description, so two threads of one process that
        each open the lock file exclude each other just like two processes do. Keys share
        `_LOCK_STRIPES` lock files by hash: a per-key lock file could never be removed safely
        (unlinking a lock file someone waits on lets a third party lock a new one), so they
        would pile up forever; a stripe only costs rare, short waits between unrelated keys.
        """
        stripe = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4]) % _LOCK_STRIPES
        with exclusive_lock(self.root / _LOCK_DIR / f"{stripe:03d}.lock"):
            yield

    def _write_sidecar(self, key: str, digest: str, stat: os.stat_result) -> None:
        payload = json.dumps(
            {
                "sha256": digest,
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "ino": stat.st_ino,
            }
        )
        self._atomic_write(self._sidecar(key), lambda h: h.write(payload.encode()))

    def _temp_beside(self, target: Path) -> tuple[int, str]:
        # A concurrent delete may remove the (empty) folder between mkdir and mkstemp.
        for attempt in range(3):
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                return tempfile.mkstemp(prefix=_TMP_PREFIX, dir=target.parent)
            except FileNotFoundError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _write(
        self,
        key: str,
        write: Callable[[IO[bytes]], str],
        *,
        source: Path | None = None,
        expected: object = _UNCONDITIONAL,
    ) -> BlobInfo:
        """Write a temp file beside the blob, then (under the key's lock) check and replace.

        `write` fills the temp file and returns the sha256 of what it wrote. Only the check
        against `expected`, the rename and the sidecar update happen under the lock, so a
        large upload never holds it. Every writer of the store takes the lock, so a `put_if`
        also orders correctly against plain `put`s and deletes of the same key.
        """
        target = self._path(key)
        origin = f" from {source}" if source is not None else ""
        tmp: str | None = None
        try:
            fd, tmp = self._temp_beside(target)
            with os.fdopen(fd, "wb") as handle:
                digest = write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            with self._locked(key):
                if expected is not _UNCONDITIONAL:
                    current = self._current_etag(key)
                    if current != expected:
                        raise BlobConflictError(self._conflict_message(key, expected, current))
                os.replace(tmp, target)
                tmp = None
                stat = target.stat()
                self._write_sidecar(key, digest, stat)
        except BlobStoreError:
            raise
        except OSError as exc:
            raise BlobStoreError(f"cannot write {self.describe(key)}{origin}: {exc}") from exc
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        return BlobInfo(
            key=key,
            size=stat.st_size,
            sha256=digest,
            last_modified=stat.st_mtime,
            etag=_etag(digest, stat),
        )

    def _conflict_message(self, key: str, expected: object, current: str | None) -> str:
        if expected is None:
            return f"conflict writing {self.describe(key)}: it already exists"
        if current is None:
            return f"conflict writing {self.describe(key)}: it no longer exists"
        return (
            f"conflict writing {self.describe(key)}: it was replaced since it was read "
            f"(etag {current}, expected {expected})"
        )

    def _read_with_stat(self, key: str) -> tuple[bytes, os.stat_result]:
        """Content and stat of one and the same file, even if it is replaced meanwhile."""
        try:
            with open(self._path(key), "rb") as handle:
                stat = os.fstat(handle.fileno())
                if not stat_module.S_ISREG(stat.st_mode):
                    raise IsADirectoryError(key)
                return handle.read(), stat
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise BlobNotFoundError(f"blob not found: {self.describe(key)}") from exc

    def _current_etag(self, key: str) -> str | None:
        try:
            data, stat = self._read_with_stat(key)
        except BlobNotFoundError:
            return None
        return _etag(sha256_hex(data), stat)

    def put(self, key: str, data: bytes) -> BlobInfo:
        return self._write(key, lambda h: (h.write(data), sha256_hex(data))[1])

    def put_file(self, key: str, path: Path) -> BlobInfo:
        def copy(handle) -> str:
            digest = hashlib.sha256()
            with open(path, "rb") as source:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    digest.update(chunk)
                    handle.write(chunk)
            return digest.hexdigest()

        return self._write(key, copy, source=path)

    def put_if(self, key: str, data: bytes, etag: str | None) -> BlobInfo:
        return self._write(key, lambda h: (h.write(data), sha256_hex(data))[1], expected=etag)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        data, stat = self._read_with_stat(key)
        return data, _etag(sha256_hex(data), stat)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        # A folder (a prefix of other blobs) or a path through a blob is no blob either.
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise BlobNotFoundError(f"blob not found: {self.describe(key)}") from exc

    def content_digest(self, key: str) -> tuple[int, str]:
        # Reads every byte: the sidecar is trusted only by `info`/`list`, whose size+mtime+inode
        # key does not change when a byte rots in place.
        try:
            with open(self._path(key), "rb") as handle:
                if not stat_module.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise IsADirectoryError(key)
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
                return handle.tell(), digest
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise BlobNotFoundError(f"blob not found: {self.describe(key)}") from exc
        except OSError as exc:
            raise BlobStoreError(f"cannot read {self.describe(key)}: {exc}") from exc

    def stale_temp_files(self, older_than: float) -> list[tuple[str, int]]:
        """Temp files of writes that never finished (killed between mkstemp and rename)."""
        found = []
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for name in filenames:
                if not name.startswith(_TMP_PREFIX):
                    continue
                path = Path(dirpath) / name
                try:
                    stat = path.lstat()
                except FileNotFoundError:
                    continue  # renamed into place or removed meanwhile
                if stat_module.S_ISREG(stat.st_mode) and stat.st_mtime < older_than:
                    found.append((path.relative_to(self.root).as_posix(), stat.st_size))
        return sorted(found)

    def delete_temp_file(self, name: str) -> None:
        path = self.root / name
        if not path.name.startswith(_TMP_PREFIX) or self.root not in path.resolve().parents:
            raise BlobStoreError(f"refusing to delete {self.describe(name)}: not a temp file")
        path.unlink(missing_ok=True)

    def download_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise BlobNotFoundError(f"blob not found: {self.describe(key)}")

        def copy(handle) -> None:
            with open(source, "rb") as blob:
                shutil.copyfileobj(blob, handle)

        self._atomic_write(Path(path), copy)

    def info(self, key: str) -> BlobInfo:
        path = self._path(key)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise BlobNotFoundError(f"blob not found: {self.describe(key)}") from exc
        if not stat_module.S_ISREG(stat.st_mode):
            raise BlobNotFoundError(f"blob not found: {self.describe(key)}")
        recorded = self._recorded_digest(key, stat)
        if recorded is None:
            # Written by something other than this store (e.g. copied in by hand): hash it once.
            recorded, stat = self._hash_and_record(key)
        return BlobInfo(key=key, size=stat.st_size, sha256=recorded, last_modified=stat.st_mtime)

    def _recorded_digest(self, key: str, stat: os.stat_result) -> str | None:
        try:
            recorded = json.loads(self._sidecar(key).read_text())
            if (
                recorded["size"] == stat.st_size
                and recorded["mtime_ns"] == stat.st_mtime_ns
                # Sidecars written before inodes were recorded: size and mtime only.
                and recorded.get("ino", stat.st_ino) == stat.st_ino
            ):
                return recorded["sha256"]
        except (FileNotFoundError, NotADirectoryError, ValueError, KeyError, TypeError):
            pass
        return None

    def _hash_and_record(self, key: str) -> tuple[str, os.stat_result]:
        try:
            with open(self._path(key), "rb") as handle:
                stat = os.fstat(handle.fileno())
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise BlobNotFoundError(f"blob not found: {self.describe(key)}") from exc
        with self._locked(key):
            # Record it only if the file hashed is still the blob (not replaced meanwhile).
            try:
                still = _same_file(self._path(key).stat(), stat)
            except FileNotFoundError:
                still = False
            if still:
                self._write_sidecar(key, digest, stat)
        return digest, stat

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        return self._infos(self.list_keys(prefix))

    def list_keys(self, prefix: str = "") -> list[str]:
        # Names only: no stat, no hash, no sidecar written (Spark's output has none, and
        # hashing every staged file just to learn its name was most of a range's publish time).
        base = self.root
        # Walk only the deepest folder the prefix names, not the whole store.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = base / folder if folder else base
        if not start.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = Path(dirpath).relative_to(base).as_posix()
            if rel_dir.split("/", 1)[0] in _INTERNAL_DIRS:
                dirnames[:] = []
                continue
            for name in filenames:
                if name.startswith(_TMP_PREFIX):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def _infos(self, keys: list[str]) -> Iterator[BlobInfo]:
        for key in keys:
            try:
                yield self.info(key)
            except BlobNotFoundError:
                continue  # deleted since the listing

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._locked(key):
            path.unlink(missing_ok=True)
            self._sidecar(key).unlink(missing_ok=True)
        self._prune(self._path(key).parent)

    def delete_prefix(self, prefix: str) -> int:
        deleted = super().delete_prefix(prefix)
        # Also the folders left with no file: a rename out of them (DatasetStore publishing staged
        # files) deletes nothing there, so no delete pruned them.
        folder = self.root / prefix.rstrip("/")
        if prefix.strip("/") and folder.is_dir() and self.root in folder.resolve().parents:
            for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                if not any(sub.iterdir()):
                    with suppress(OSError):  # a concurrent write put something there again
                        sub.rmdir()
        self._prune(folder)
        return deleted

    def _prune(self, folder: Path) -> None:
        """Drop `folder` and its parents while they are empty, up to the root."""
        while folder != self.root and folder.is_dir() and not any(folder.iterdir()):
            try:
                folder.rmdir()
            except OSError:
                break  # a concurrent write put something there again
            folder = folder.parent

    def local_dir(self, prefix: str, cache_dir: Path) -> Path:
        path = self.root / prefix.rstrip("/")
        if not path.is_dir():
            raise BlobNotFoundError(f"no blobs under {self.describe(prefix)}")
        return path
