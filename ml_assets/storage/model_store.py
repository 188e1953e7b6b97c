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

Integrity: `verify` (run by promote and rollback) and `fetch` (run by every load) hash the
bytes they read, never a digest recorded beside them (sidecar, blob metadata), so bit rot
with the mtime kept or a blob replaced with its metadata kept is refused. The pointer and
each history entry record the sha256 of the manifest.json bytes; `get`/`verify`/`fetch` given
that digest refuse a manifest edited afterwards (any byte, metrics included). Debris of
killed publishes is removed by `model_gc.collect_garbage` (`ml-assets gc`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from ml_assets.fileio import exclusive_lock
from ml_assets.storage.base import (
    BlobConflictError,
    BlobCorruptError,
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
    sha256_hex,
)
from ml_assets.storage.model_champion import ChampionMixin
from ml_assets.storage.model_manifest import (
    CHAMPION,
    MANIFEST,
    MANIFEST_KEYS,
    NAME_PATTERN,
    RESERVED,
    ChampionPointer,
    ModelIntegrityError,
    ModelVersion,
    PromotionConflictError,
    compare_files,
    hash_tree,
    local_files,
    peek,
    upload_order,
)

__all__ = [
    "CHAMPION",
    "MANIFEST",
    "MANIFEST_KEYS",
    "RESERVED",
    "ChampionPointer",
    "ModelIntegrityError",
    "ModelStore",
    "ModelVersion",
    "PromotionConflictError",
]

_MAX_RESERVE_ATTEMPTS = 1000


class ModelStore(ChampionMixin):
    """Publishes, verifies, fetches and promotes versions of named models."""

    def __init__(self, blobs: BlobStore, cache_dir: Path):
        self.blobs = blobs
        self.cache_dir = Path(cache_dir)

    # -- keys -------------------------------------------------------------------------------

    @staticmethod
    def _prefix(name: str) -> str:
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
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

    def names(self) -> list[str]:
        """Every model name with at least one blob in the store."""
        return sorted({blob.key.split("/")[1] for blob in self.blobs.list("models/")
                       if blob.key.count("/") >= 2})

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
        files = hash_tree(local_dir)
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

        version, token = self._reserve(name)
        vprefix = f"{prefix}/{version}"
        uploaded: list[str] = []
        try:
            for rel in sorted(files, key=upload_order):
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
            # `ml-assets gc` replaces the claim of a version it collects: a publish that
            # outlived the grace period must not then make its emptied version visible.
            if self.blobs.get(f"{vprefix}/{RESERVED}") != token:
                raise BlobStoreError(
                    f"cannot publish {name} version {version}: its reservation in "
                    f"{self._where(name, version)} was collected by `ml-assets gc` while the "
                    "publish ran (it outlived the grace period)"
                )
        except BaseException:
            self._discard(uploaded)
            raise
        published = ModelVersion(name, version, full, sha256_hex(document))
        # Last, and create-only: the version becomes visible with this one write.
        manifest_key = f"{vprefix}/{MANIFEST}"
        try:
            self.blobs.put_if(manifest_key, document, None)
        except BaseException:
            # The write may have taken effect although it reported a failure (a lost response,
            # or a retry that then conflicted with it): never discard files of a visible version.
            stored = self._read_if_possible(manifest_key)
            if stored == document:
                return published
            if stored is None:
                self._discard(uploaded)
            raise  # (stored is False: cannot tell, so everything stays in place)
        return published

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

    def _reserve(self, name: str) -> tuple[int, bytes]:
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
                return candidate, token
            except BlobConflictError:
                # Our own create whose response was lost (then retried) also lands here.
                with suppress(BlobNotFoundError):
                    if self.blobs.get(key) == token:
                        return candidate, token
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

    def get(self, name: str, version: int, *, manifest_sha256: str | None = None) -> ModelVersion:
        """The manifest of one version; ModelIntegrityError if it is incomplete.

        With `manifest_sha256` (what the champion pointer or its history recorded), a
        manifest.json whose bytes hash differently is refused: edited after it was promoted.
        """
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
        except BlobCorruptError as exc:
            raise self._integrity(name, version, MANIFEST, str(exc)) from exc
        digest = sha256_hex(raw)
        if manifest_sha256 is not None and digest != manifest_sha256:
            raise self._integrity(
                name,
                version,
                MANIFEST,
                f"{MANIFEST} of {name} version {version} in {self._where(name, version)} was "
                f"changed after it was promoted: its bytes hash to sha256 {digest}, the champion "
                f"pointer recorded {manifest_sha256}",
            )
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            raise self._integrity(
                name,
                version,
                MANIFEST,
                f"{MANIFEST} of {name} version {version} in {self._where(name, version)} is not "
                f"valid JSON: {exc}",
            ) from exc
        if (
            not isinstance(manifest, dict)
            or manifest.get("name") != name
            or manifest.get("version") != version
            or not isinstance(manifest.get("files"), dict)
        ):
            raise self._integrity(
                name,
                version,
                MANIFEST,
                f"{MANIFEST} in {self._where(name, version)} does not describe {name} version "
                f"{version} (name={peek(manifest, 'name')!r}, "
                f"version={peek(manifest, 'version')!r})",
            )
        return ModelVersion(name, version, manifest, digest)

    @staticmethod
    def _integrity(name: str, version: int, file: str, message: str) -> ModelIntegrityError:
        return ModelIntegrityError(message, name=name, version=version, file=file)

    def _mismatch(self, name: str, version: int, what: str, problems) -> ModelIntegrityError:
        return self._integrity(
            name,
            version,
            problems[0][0],
            f"{what} of {name} version {version} in {self._where(name, version)} does not "
            "match its manifest: " + "; ".join(f"{rel}: {why}" for rel, why in problems),
        )

    def verify(
        self, name: str, version: int, *, manifest_sha256: str | None = None
    ) -> ModelVersion:
        """Read every stored file of one version and check the bytes against its manifest.

        Every manifest file must exist with its size and the sha256 of the content read now
        (no recorded or cached digest is trusted: a size+mtime+inode key misses a byte that
        rots in place, blob metadata misses a replace that kept it), and no other file may be
        there. Raises ModelIntegrityError naming the first bad file (the message lists all).
        """
        model = self.get(name, version, manifest_sha256=manifest_sha256)
        files = model.manifest["files"]
        vprefix = self._version_prefix(name, version) + "/"
        listed = {blob.key[len(vprefix) :] for blob in self.blobs.list(vprefix)}
        listed -= {MANIFEST, RESERVED}
        actual: dict[str, tuple[int, str]] = {}
        for rel in sorted(listed):
            if rel not in files:
                actual[rel] = (-1, "")  # extra: reported by compare_files, not read
                continue
            with suppress(BlobNotFoundError):  # deleted since the listing: reported missing
                actual[rel] = self.blobs.content_digest(vprefix + rel)
        problems = compare_files(files, actual)
        if problems:
            raise self._mismatch(name, version, "the stored files", problems)
        return model

    def fetch(self, name: str, version: int, *, manifest_sha256: str | None = None) -> Path:
        """A local directory holding exactly the files of one version, each verified.

        On every call the manifest is read (and checked against `manifest_sha256` if given)
        and the cached copy, if any, is re-hashed file by file, no cache of hashes (artifacts
        are small; bench/bench_verify.py measures it). A cached copy that no longer matches
        (changed, missing or extra file: local tampering or damage) is discarded and
        downloaded again; the download is hashed as written and must match the manifest
        before it replaces the cached copy. Both backends return a copy under cache_dir,
        never the store's own files. Callers must not write into it.
        """
        model = self.get(name, version, manifest_sha256=manifest_sha256)
        files = model.manifest["files"]
        vprefix = self._version_prefix(name, version)
        # The listing's recorded digests are not proof (the bytes hashed below are), but
        # they make a copy in the cache unable to hide a store replaced the ordinary way.
        listed = {
            blob.key[len(vprefix) + 1 :]: (blob.size, blob.sha256)
            for blob in self.blobs.list(vprefix + "/")
        }
        listed.pop(MANIFEST, None)
        listed.pop(RESERVED, None)
        problems = compare_files(files, listed)
        if problems:
            raise self._mismatch(name, version, "the stored files", problems)
        target = self.cache_dir / name / str(version)
        with self._cache_lock(name, version):
            if target.is_dir() and not compare_files(files, local_files(target)):
                return target
            staging = self.cache_dir / name / f".tmp-{version}-{uuid.uuid4().hex}"
            try:
                for rel in files:
                    try:
                        self.blobs.download_file(f"{vprefix}/{rel}", staging / rel)
                    except BlobCorruptError as exc:
                        raise self._mismatch(
                            name, version, "a download", [(rel, str(exc))]
                        ) from exc
                    except BlobNotFoundError as exc:
                        raise self._mismatch(
                            name, version, "a download", [(rel, "missing")]
                        ) from exc
                problems = compare_files(files, local_files(staging))
                if problems:
                    raise self._mismatch(name, version, "a download", problems)
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
