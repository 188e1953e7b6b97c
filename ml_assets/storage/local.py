"""Blob store on a local folder: the embedded default."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat as stat_module
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ml_assets.storage.base import (
    BlobInfo,
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
    sha256_hex,
    validate_key,
)

# Content hashes live beside the blobs so that listing never reads blob content.
_SIDECAR_DIR = ".sha256"
_TMP_PREFIX = ".tmp-"


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
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _record(self, key: str, digest: str) -> BlobInfo:
        stat = self._path(key).stat()
        payload = json.dumps({"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
        self._atomic_write(self._sidecar(key), lambda h: h.write(payload.encode()))
        return BlobInfo(key=key, size=stat.st_size, sha256=digest, last_modified=stat.st_mtime)

    def put(self, key: str, data: bytes) -> BlobInfo:
        target = self._path(key)
        try:
            self._atomic_write(target, lambda h: h.write(data))
        except OSError as exc:
            raise BlobStoreError(f"cannot write {self.describe(key)}: {exc}") from exc
        return self._record(key, sha256_hex(data))

    def put_file(self, key: str, path: Path) -> BlobInfo:
        target = self._path(key)
        digest = hashlib.sha256()

        def copy(handle) -> None:
            with open(path, "rb") as source:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    digest.update(chunk)
                    handle.write(chunk)

        try:
            self._atomic_write(target, copy)
        except OSError as exc:
            raise BlobStoreError(f"cannot write {self.describe(key)} from {path}: {exc}") from exc
        return self._record(key, digest.hexdigest())

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        # A folder (a prefix of other blobs) or a path through a blob is no blob either.
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise BlobNotFoundError(f"blob not found: {self.describe(key)}") from exc

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
        digest = self._cached_digest(key, stat)
        return BlobInfo(key=key, size=stat.st_size, sha256=digest, last_modified=stat.st_mtime)

    def _cached_digest(self, key: str, stat: os.stat_result) -> str:
        sidecar = self._sidecar(key)
        try:
            recorded = json.loads(sidecar.read_text())
            if recorded["size"] == stat.st_size and recorded["mtime_ns"] == stat.st_mtime_ns:
                return recorded["sha256"]
        except (FileNotFoundError, ValueError, KeyError):
            pass
        # Written by something other than this store (e.g. copied in by hand): hash it once.
        return self._record(key, sha256_hex(self._path(key).read_bytes())).sha256

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        base = self.root
        # Walk only the deepest folder the prefix names, not the whole store.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = base / folder if folder else base
        if not start.is_dir():
            return iter(())
        keys = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = Path(dirpath).relative_to(base).as_posix()
            if rel_dir == _SIDECAR_DIR or rel_dir.startswith(_SIDECAR_DIR + "/"):
                dirnames[:] = []
                continue
            for name in filenames:
                if name.startswith(_TMP_PREFIX):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return (self.info(key) for key in sorted(keys))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        self._sidecar(key).unlink(missing_ok=True)
        # Drop folders the delete left empty, up to the root.
        parent = self._path(key).parent
        while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

    def local_dir(self, prefix: str, cache_dir: Path) -> Path:
        path = self.root / prefix.rstrip("/")
        if not path.is_dir():
            raise BlobNotFoundError(f"no blobs under {self.describe(prefix)}")
        return path
