"""Clean-up of what killed writes leave behind: incomplete model versions and temp files.

A publish killed before its manifest leaves an invisible version folder (its files, no
manifest.json); a write killed between its temp file and the rename leaves a `.tmp-*` file in
a local store; a fetch killed mid-download leaves a `.tmp-*` folder in the cache; a Spark
write killed before it was published leaves its `_staging/<table>-<id>/` folder in the store
(DatasetStore.new_staging). None of them is ever read again. `collect_garbage` finds them once they are older than a grace period
(so a publish or write still running is never touched) and, with `apply=True`, deletes them.

Never collected: any version the champion pointer or its history names (even if damaged:
that is evidence, and a rollback target), complete versions, and the `.reserved` claim of a
collected version, which is kept (a few bytes) so its number is never handed out again. The
claim is overwritten with a tombstone first, and a publish checks its claim just before
writing its manifest, so a publish that outlived the grace period fails instead of making
an emptied version visible. If the store cannot tell what the pointer names (unreadable
pointer), that model is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ml_assets.storage.base import (
    BlobConflictError,
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
)
from ml_assets.storage.datasets import STAGING_PREFIX
from ml_assets.storage.model_manifest import MANIFEST, RESERVED
from ml_assets.storage.model_store import ModelStore

log = logging.getLogger(__name__)

#: Default grace period: far longer than any publish, fetch or write takes.
DEFAULT_GRACE_HOURS = 24.0
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Debris:
    kind: str  # "incomplete version", "spark staging", "temp file", "cache temp"
    where: str  # the blob / file / folder, as a reader can find it
    size: int


@dataclass
class GcReport:
    applied: bool
    grace_seconds: float
    debris: list[Debris] = field(default_factory=list)
    #: Incomplete versions left in place, with why (named by the pointer, too young, ...).
    kept: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(item.size for item in self.debris)


def collect_garbage(
    models: ModelStore, *, grace_seconds: float, apply: bool = False, now: float | None = None
) -> GcReport:
    """Find (and with apply=True delete) debris older than grace_seconds; see the module doc."""
    if not grace_seconds >= 0:
        raise ValueError(f"grace period must be >= 0 seconds, got {grace_seconds!r}")
    cutoff = (time.time() if now is None else now) - grace_seconds
    report = GcReport(applied=apply, grace_seconds=grace_seconds)
    for name in models.names():
        _incomplete_versions(models, name, cutoff, report)
    _spark_staging(models.blobs, cutoff, report)
    for temp, size in models.blobs.stale_temp_files(cutoff):
        report.debris.append(Debris("temp file", models.blobs.describe(temp), size))
        if apply:
            models.blobs.delete_temp_file(temp)
    for path, size in _cache_temps(models.cache_dir, cutoff):
        report.debris.append(Debris("cache temp", str(path), size))
        if apply:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return report


def _incomplete_versions(models: ModelStore, name: str, cutoff: float, report: GcReport) -> None:
    try:
        pointer = models.champion(name)
    except BlobStoreError as exc:
        report.kept.append(f"model {name}: skipped, its champion pointer cannot be read ({exc})")
        return
    named = {pointer.version}
    for entry in pointer.history:
        if isinstance(entry, dict):
            named.update({entry.get("version"), entry.get("previous")})
    prefix = f"models/{name}/"
    folders: dict[int, list] = {}
    for blob in models.blobs.list(prefix):
        head, _, rest = blob.key[len(prefix) :].partition("/")
        if head.isdigit() and rest:
            folders.setdefault(int(head), []).append(blob)
    for version, blobs in sorted(folders.items()):
        rels = {blob.key[len(prefix) + len(str(version)) + 1 :] for blob in blobs}
        files = [blob for blob in blobs if not blob.key.endswith(f"/{RESERVED}")]
        if MANIFEST in rels or not files:
            continue  # complete, or already collected (only its claim is left)
        where = models.blobs.describe(f"{prefix}{version}")
        if version in named:
            report.kept.append(f"{where}: incomplete but named by the champion pointer/history")
            continue
        newest = max(blob.last_modified for blob in blobs)
        if newest >= cutoff:
            report.kept.append(f"{where}: incomplete, younger than the grace period")
            continue
        if report.applied and not _tombstone(models, name, version):
            report.kept.append(f"{where}: its publish finished or moved meanwhile; left alone")
            continue
        for blob in files:
            report.debris.append(
                Debris("incomplete version", models.blobs.describe(blob.key), blob.size)
            )
            if report.applied:
                models.blobs.delete(blob.key)


def _spark_staging(blobs: BlobStore, cutoff: float, report: GcReport) -> None:
    """Staging folders of Spark writes, each collected whole once all of it is past cutoff."""
    folders: dict[str, list] = {}
    for blob in blobs.list(f"{STAGING_PREFIX}/"):
        folder = blob.key.split("/", 2)[1]
        folders.setdefault(folder, []).append(blob)
    for items in folders.values():
        if max(blob.last_modified for blob in items) >= cutoff:
            continue  # a write may still be running
        for blob in items:
            report.debris.append(Debris("spark staging", blobs.describe(blob.key), blob.size))
            if report.applied:
                blobs.delete(blob.key)


def _tombstone(models: ModelStore, name: str, version: int) -> bool:
    """Overwrite the version's claim (CAS), then make sure no manifest appeared meanwhile."""
    vprefix = f"models/{name}/{version}"
    key = f"{vprefix}/{RESERVED}"
    tombstone = json.dumps(
        {"collected_by": "ml-assets gc", "at": datetime.now(UTC).isoformat(), "pid": os.getpid()}
    ).encode()
    try:
        try:
            _, etag = models.blobs.get_with_etag(key)
        except BlobNotFoundError:
            etag = None
        models.blobs.put_if(key, tombstone, etag)
    except BlobConflictError:
        return False
    return not models.blobs.exists(f"{vprefix}/{MANIFEST}")


def _cache_temps(cache_dir: Path, cutoff: float) -> list[tuple[Path, int]]:
    """`.tmp-*` files and folders in the model cache (killed fetches), untouched since cutoff."""
    found = []
    if not cache_dir.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(cache_dir):
        for entry in [*dirnames, *filenames]:
            if not entry.startswith(_TMP_PREFIX):
                continue
            path = Path(dirpath) / entry
            try:
                size, newest = _size_and_newest(path)
            except FileNotFoundError:
                continue  # renamed into place or removed meanwhile
            if newest < cutoff:
                found.append((path, size))
        dirnames[:] = [d for d in dirnames if not d.startswith(_TMP_PREFIX)]
    return sorted(found)


def _size_and_newest(path: Path) -> tuple[int, float]:
    stat = path.lstat()
    if not path.is_dir():
        return stat.st_size, stat.st_mtime
    size, newest = 0, stat.st_mtime
    for dirpath, _, filenames in os.walk(path):
        newest = max(newest, os.lstat(dirpath).st_mtime)
        for filename in filenames:
            with_stat = os.lstat(os.path.join(dirpath, filename))
            size += with_stat.st_size
            newest = max(newest, with_stat.st_mtime)
    return size, newest


def describe(report: GcReport) -> str:
    """Human-readable summary: each item, then the bytes freed (or that would be)."""
    lines = [f"{item.kind}: {item.where} ({item.size} bytes)" for item in report.debris]
    lines += [f"kept: {why}" for why in report.kept]
    verb = "freed" if report.applied else "dry run: would free"
    lines.append(
        f"{verb} {report.bytes} bytes ({report.bytes / (1 << 20):.1f} MiB) in "
        f"{len(report.debris)} items older than {report.grace_seconds / 3600:g} h"
        + ("" if report.applied else "; --apply deletes them")
    )
    return "\n".join(lines)
