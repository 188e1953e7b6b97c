"""Versioned model artifacts and the champion pointer, on any BlobStore (no Dagster here).

Layout for model M (TensorFlow Serving's base-path layout: integer version folders):

    models/M/1/...              the files of version 1, immutable once published
    models/M/1/.reserved        claims the version number (created with put_if(etag=None))
    models/M/1/manifest.json    written LAST: caller's manifest + name, version, created_at, files
    models/M/2/...
    models/M/CHAMPION           JSON pointer {name, version, updated_at, history}, moved by CAS

"Complete before visible": a version exists for `versions`, `get`, `fetch` and `promote` only
once its manifest.json exists, and the manifest is written after every file was uploaded. A
publish that fails midway leaves an invisible, reserved number behind (never reused).

TensorFlow Serving pointed at a synced copy of `models/M/` serves every version folder as
is (the extra `.reserved` and `manifest.json` files are ignored by its SavedModel loader), but
TF Serving itself knows nothing of manifests: sync only versions that `versions()` lists (or
serve directories returned by `fetch`), never the raw prefix, or it may load a half-uploaded
version. Like TFX's Pusher, `publish` uploads `saved_model.pb` after the variables, which
narrows that window for tools that poll the raw layout, but does not close it.

The champion pointer is TF Serving's `specific { versions: [...] }` pin / MLflow's
`@champion` alias: one small blob replaced by compare-and-swap (`BlobStore.put_if`), so two
deployers deciding from the same champion cannot both win, and it carries the append-only
history of every promotion and rollback.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml_assets.fileio import exclusive_lock
from ml_assets.storage.base import (
    BlobConflictError,
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
)

MANIFEST = "manifest.json"
RESERVED = ".reserved"
CHAMPION = "CHAMPION"
#: Keys `publish` adds to the caller's manifest (a caller's manifest must not set them).
MANIFEST_KEYS = ("name", "version", "created_at", "files")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SERVING_GRAPHS = ("saved_model.pb", "saved_model.pbtxt")
_MAX_RESERVE_ATTEMPTS = 1000


class ModelIntegrityError(BlobStoreError):
    """A version is incomplete or its files do not match its manifest."""

    def __init__(self, message: str, *, name: str, version: int, file: str | None = None):
        super().__init__(message)
        self.name = name
        self.version = version
        self.file = file


class PromotionConflictError(BlobStoreError):
    """The champion moved since the caller looked: someone else promoted first."""

    def __init__(self, message: str, *, name: str, expected: int | None, actual: int | None):
        super().__init__(message)
        self.name = name
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    manifest: dict


@dataclass(frozen=True)
class ChampionPointer:
    name: str
    version: int | None  # None: never promoted
    history: list[dict] = field(default_factory=list)
    #: etag of the CHAMPION blob as read; None when there is no pointer blob yet.
    etag: str | None = None


class ModelStore:
    """Publishes, verifies, fetches and promotes versions of named models."""

    def __init__(self, blobs: BlobStore, cache_dir: Path):
        self.blobs = blobs
        self.cache_dir = Path(cache_dir)

    # -- keys -------------------------------------------------------------------------------

    @staticmethod
    def _prefix(name: str) -> str:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"invalid model name {name!r}: letters, digits, '.', '_' and '-' only, "
                "starting with a letter or digit"
            )
        return f"models/{name}"

    def _version_prefix(self, name: str, version: int) -> str:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"invalid version {version!r} of model {name}: an integer >= 1")
        return f"{self._prefix(name)}/{version}"

    def _where(self, name: str, version: int) -> str:
        return self.blobs.describe(self._version_prefix(name, version))

    # -- publish ----------------------------------------------------------------------------

    def publish(self, name: str, local_dir: Path, manifest: dict) -> ModelVersion:
        """Upload every file of local_dir as the next version of `name`; return it.

        Everything that can be checked locally (files, manifest) is checked before a version
        number is claimed. Empty folders are not kept (a blob store has none).
        """
        prefix = self._prefix(name)
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise BlobStoreError(f"cannot publish {name}: {local_dir} is not a directory")
        clashing = sorted(set(manifest) & set(MANIFEST_KEYS))
        if clashing:
            raise ValueError(f"manifest of {name} must not set {clashing}: publish sets them")
        files = _hash_tree(local_dir)
        if not files:
            raise BlobStoreError(f"refusing to publish an empty version of {name} from {local_dir}")
        for reserved in (MANIFEST, RESERVED):
            if reserved in files:
                raise BlobStoreError(
                    f"cannot publish {name} from {local_dir}: a model file may not be "
                    f"named {reserved} (the store writes it)"
                )
        # Serialised now, so an unserialisable manifest fails before a number is claimed.
        json.dumps(manifest)

        version = self._reserve(name)
        vprefix = f"{prefix}/{version}"
        uploaded: list[str] = []
        try:
            for rel in sorted(files, key=_upload_order):
                key = f"{vprefix}/{rel}"
                info = self.blobs.put_file(key, local_dir / rel)
                uploaded.append(key)
                if (info.sha256, info.size) != (files[rel]["sha256"], files[rel]["size"]):
                    raise ModelIntegrityError(
                        f"{local_dir / rel} changed while {name} version {version} was being "
                        f"published (uploaded {info.size} bytes, sha256 {info.sha256}; hashed "
                        f"{files[rel]['size']} bytes, sha256 {files[rel]['sha256']})",
                        name=name,
                        version=version,
                        file=rel,
                    )
            full = {
                **manifest,
                "name": name,
                "version": version,
                "created_at": datetime.now(UTC).isoformat(),
                "files": files,
            }
            document = json.dumps(full, indent=2, sort_keys=True).encode()
        except BaseException:
            self._discard(uploaded)
            raise
        # Last, and create-only: the version becomes visible with this one write.
        manifest_key = f"{vprefix}/{MANIFEST}"
        try:
            self.blobs.put_if(manifest_key, document, None)
        except BaseException:
            # The write may have taken effect although it reported a failure (a lost response,
            # or a retry that then conflicted with it): never discard files of a visible version.
            stored = self._read_if_possible(manifest_key)
            if stored == document:
                return ModelVersion(name, version, full)
            if stored is None:
                self._discard(uploaded)
            raise  # (stored is False: cannot tell, so everything stays in place)
        return ModelVersion(name, version, full)

    def _read_if_possible(self, key: str) -> bytes | bool | None:
        """The blob's content, None if it does not exist, False if that cannot be told."""
        try:
            return self.blobs.get(key)
        except BlobNotFoundError:
            return None
        except Exception:
            return False

    def _discard(self, keys: list[str]) -> None:
        """Best effort: a failed version stays reserved (its number is never reused) but empty."""
        for key in keys:
            with suppress(Exception):
                self.blobs.delete(key)

    def _reserve(self, name: str) -> int:
        """Claim the lowest version number above every folder ever started (complete or not)."""
        candidate = max(self._all_version_folders(name), default=0) + 1
        token = json.dumps(
            {
                "token": uuid.uuid4().hex,
                "reserved_at": datetime.now(UTC).isoformat(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
            }
        ).encode()
        for _ in range(_MAX_RESERVE_ATTEMPTS):
            key = f"{self._prefix(name)}/{candidate}/{RESERVED}"
            try:
                self.blobs.put_if(key, token, None)
                return candidate
            except BlobConflictError:
                # Our own create whose response was lost (then retried) also lands here.
                with suppress(BlobNotFoundError):
                    if self.blobs.get(key) == token:
                        return candidate
                candidate += 1
        raise BlobStoreError(
            f"cannot reserve a version of {name} in {self.blobs.describe(self._prefix(name))}: "
            f"{_MAX_RESERVE_ATTEMPTS} attempts lost to concurrent publishers"
        )

    def _all_version_folders(self, name: str) -> set[int]:
        prefix = self._prefix(name) + "/"
        found = set()
        for blob in self.blobs.list(prefix):
            head = blob.key[len(prefix) :].split("/", 1)[0]
            if head.isdigit() and "/" in blob.key[len(prefix) :]:
                found.add(int(head))
        return found

    # -- read -------------------------------------------------------------------------------

    def versions(self, name: str) -> list[int]:
        """Complete (manifest written) versions of `name`, ascending."""
        prefix = self._prefix(name) + "/"
        found = []
        for blob in self.blobs.list(prefix):
            parts = blob.key[len(prefix) :].split("/")
            if len(parts) == 2 and parts[0].isdigit() and parts[1] == MANIFEST:
                found.append(int(parts[0]))
        return sorted(found)

    def get(self, name: str, version: int) -> ModelVersion:
        """The manifest of one version; ModelIntegrityError if it is incomplete."""
        vprefix = self._version_prefix(name, version)
        try:
            raw = self.blobs.get(f"{vprefix}/{MANIFEST}")
        except BlobNotFoundError:
            if any(True for _ in self.blobs.list(vprefix + "/")):
                raise ModelIntegrityError(
                    f"{name} version {version} is incomplete: {self._where(name, version)} has "
                    f"no {MANIFEST} (its publish failed or is still running)",
                    name=name,
                    version=version,
                    file=MANIFEST,
                ) from None
            raise BlobNotFoundError(
                f"model {name} has no version {version} in {self._where(name, version)}"
            ) from None
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            raise ModelIntegrityError(
                f"{MANIFEST} of {name} version {version} in {self._where(name, version)} is not "
                f"valid JSON: {exc}",
                name=name,
                version=version,
                file=MANIFEST,
            ) from exc
        if (
            not isinstance(manifest, dict)
            or manifest.get("name") != name
            or manifest.get("version") != version
            or not isinstance(manifest.get("files"), dict)
        ):
            raise ModelIntegrityError(
                f"{MANIFEST} in {self._where(name, version)} does not describe {name} version "
                f"{version} (name={_peek(manifest, 'name')!r}, "
                f"version={_peek(manifest, 'version')!r})",
                name=name,
                version=version,
                file=MANIFEST,
            )
        return ModelVersion(name, version, manifest)

    def verify(self, name: str, version: int) -> ModelVersion:
        """Check the stored files against the manifest from the listing alone (no download).

        Every manifest file must exist with its size and sha256, and no other file may be
        there. Raises ModelIntegrityError naming the first bad file (the message lists all).
        """
        model = self.get(name, version)
        vprefix = self._version_prefix(name, version) + "/"
        stored = {
            blob.key[len(vprefix) :]: (blob.size, blob.sha256) for blob in self.blobs.list(vprefix)
        }
        stored.pop(MANIFEST, None)
        stored.pop(RESERVED, None)
        problems = _compare(model.manifest["files"], stored)
        if problems:
            raise ModelIntegrityError(
                f"{name} version {version} in {self._where(name, version)} does not match its "
                f"manifest: " + "; ".join(f"{rel}: {why}" for rel, why in problems),
                name=name,
                version=version,
                file=problems[0][0],
            )
        return model

    def fetch(self, name: str, version: int) -> Path:
        """A local directory holding exactly the files of one version, each verified.

        On every call: the stored files are checked against the manifest from the listing
        (`verify`), and the cached copy, if any, is re-hashed file by file (artifacts are
        small). A cached copy that no longer matches (changed, missing or extra file: local
        tampering or damage) is discarded and downloaded again; the download is verified
        against the manifest before it replaces the cached copy. Both backends return a copy
        under cache_dir, never the store's own files. Callers must not write into it.
        """
        model = self.verify(name, version)
        files = model.manifest["files"]
        target = self.cache_dir / name / str(version)
        with self._cache_lock(name, version):
            if target.is_dir() and not _compare(files, _local_files(target)):
                return target
            staging = self.cache_dir / name / f".tmp-{version}-{uuid.uuid4().hex}"
            try:
                vprefix = self._version_prefix(name, version)
                for rel in files:
                    self.blobs.download_file(f"{vprefix}/{rel}", staging / rel)
                problems = _compare(files, _local_files(staging))
                if problems:
                    raise ModelIntegrityError(
                        f"download of {name} version {version} from {self._where(name, version)} "
                        f"does not match its manifest: "
                        + "; ".join(f"{rel}: {why}" for rel, why in problems),
                        name=name,
                        version=version,
                        file=problems[0][0],
                    )
                if target.exists():  # a stale or damaged copy
                    stale = target.with_name(f".tmp-stale-{version}-{uuid.uuid4().hex}")
                    target.rename(stale)
                    shutil.rmtree(stale, ignore_errors=True)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return target

    @contextmanager
    def _cache_lock(self, name: str, version: int) -> Iterator[None]:
        """One fetch of a version at a time into this cache, across threads and processes."""
        with exclusive_lock(self.cache_dir / name / f".{version}.lock"):
            yield

    # -- champion ---------------------------------------------------------------------------

    def _champion_key(self, name: str) -> str:
        return f"{self._prefix(name)}/{CHAMPION}"

    def champion(self, name: str) -> ChampionPointer:
        key = self._champion_key(name)
        try:
            raw, etag = self.blobs.get_with_etag(key)
        except BlobNotFoundError:
            return ChampionPointer(name, None, [], None)
        return self._parse_pointer(name, key, raw, etag)

    def _parse_pointer(self, name: str, key: str, raw: bytes, etag: str) -> ChampionPointer:
        try:
            document = json.loads(raw)
            version = document["version"]
            history = document["history"]
            if not (version is None or isinstance(version, int)) or not isinstance(history, list):
                raise ValueError("unexpected types")
        except (ValueError, KeyError, TypeError) as exc:
            raise BlobStoreError(
                f"champion pointer {self.blobs.describe(key)} is not valid: {exc}"
            ) from exc
        return ChampionPointer(name, version, history, etag)

    def history(self, name: str) -> list[dict]:
        """Every promotion and rollback of `name`, oldest first."""
        return self.champion(name).history

    def promote(
        self,
        name: str,
        version: int,
        *,
        expected: int | None,
        reason: str,
        forced: bool = False,
        actor: str = "",
        action: str = "promote",
    ) -> ChampionPointer:
        """Make `version` the champion if the champion is still `expected` (None: no champion).

        Compare-and-swap on the CHAMPION blob: the write succeeds only if the pointer still
        names `expected` and nobody replaced it since it was read, else PromotionConflictError
        (saying expected vs actual) and nothing changes. The version must be complete and its
        stored files must match its manifest.
        """
        self.verify(name, version)
        key = self._champion_key(name)
        current = self.champion(name)
        if current.version != expected:
            raise PromotionConflictError(
                f"cannot promote {name} to version {version}: expected champion "
                f"{_label(expected)} but it is {_label(current.version)}",
                name=name,
                expected=expected,
                actual=current.version,
            )
        at = datetime.now(UTC).isoformat()
        entry = {
            "action": action,
            "version": version,
            "previous": current.version,
            "reason": reason,
            "forced": bool(forced),
            "actor": actor,
            "at": at,
        }
        history = [*current.history, entry]
        document = json.dumps(
            {"name": name, "version": version, "updated_at": at, "history": history},
            indent=2,
        ).encode()
        try:
            info = self.blobs.put_if(key, document, current.etag)
            etag = info.etag
        except BlobConflictError as exc:
            try:
                raw, etag = self.blobs.get_with_etag(key)
            except BlobNotFoundError:
                raw, etag = b"", None
            if raw != document:  # (equal: our own write, whose response was lost)
                now = self._parse_pointer(name, key, raw, etag).version if raw else None
                raise PromotionConflictError(
                    f"cannot promote {name} to version {version}: expected champion "
                    f"{_label(expected)} but another promotion won (champion is now "
                    f"{_label(now)})",
                    name=name,
                    expected=expected,
                    actual=now,
                ) from exc
        if etag is None:  # a backend that does not report the etag of a write
            return self.champion(name)
        return ChampionPointer(name, version, history, etag)

    def rollback(self, name: str, version: int, *, reason: str, actor: str = "") -> ChampionPointer:
        """Move the champion back to an earlier, complete version (CAS against the current one)."""
        current = self.champion(name)
        if current.version is None:
            raise ValueError(f"cannot roll {name} back to version {version}: it has no champion")
        if version >= current.version:
            raise ValueError(
                f"cannot roll {name} back to version {version}: not earlier than the champion, "
                f"version {current.version}"
            )
        return self.promote(
            name,
            version,
            expected=current.version,
            reason=reason,
            actor=actor,
            action="rollback",
        )


# -- helpers ----------------------------------------------------------------------------------


def _hash_tree(root: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            if any(part.startswith(".tmp-") for part in rel.split("/")):
                raise BlobStoreError(
                    f"cannot publish {path}: names starting with '.tmp-' are reserved for "
                    "temporary files"
                )
            files[rel] = _hash_file(path)
    return files


def _hash_file(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        size = os.fstat(handle.fileno()).st_size
    return {"sha256": digest, "size": size}


def _local_files(root: Path) -> dict[str, tuple[int, str]]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file() or path.is_symlink():
            info = _hash_file(path) if path.is_file() else {"size": -1, "sha256": "symlink"}
            found[path.relative_to(root).as_posix()] = (info["size"], info["sha256"])
    return found


def _compare(
    expected: dict[str, dict[str, Any]], actual: dict[str, tuple[int, str]]
) -> list[tuple[str, str]]:
    """(file, problem) for every missing, changed or extra file, in file order."""
    problems = []
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            problems.append((rel, "missing"))
        elif rel not in expected:
            problems.append((rel, "extra file, not in the manifest"))
        else:
            size, sha = actual[rel]
            want = expected[rel]
            if (size, sha) != (want.get("size"), want.get("sha256")):
                problems.append(
                    (
                        rel,
                        f"changed ({size} bytes, sha256 {sha}; manifest: {want.get('size')} "
                        f"bytes, sha256 {want.get('sha256')})",
                    )
                )
    return problems


def _upload_order(rel: str) -> tuple[int, str]:
    # Like TFX's Pusher: the graph after the variables, so a poller never sees a graph
    # without its variables.
    return (1 if rel in _SERVING_GRAPHS else 0, rel)


def _label(version: int | None) -> str:
    return "none" if version is None else f"version {version}"


def _peek(document: Any, key: str) -> Any:
    return document.get(key) if isinstance(document, dict) else None
