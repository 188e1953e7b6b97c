"""What describes a model version: constants, errors, records and the file-hash helpers.

Split from model_store.py (plain code, no Dagster): the manifest layout and how files are
compared with it, shared by ModelStore and the garbage collector (model_gc).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_assets.storage.base import BlobStoreError

MANIFEST = "manifest.json"
RESERVED = ".reserved"
CHAMPION = "CHAMPION"
#: Keys `publish` adds to the caller's manifest (a caller's manifest must not set them).
MANIFEST_KEYS = ("name", "version", "created_at", "files")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SERVING_GRAPHS = ("saved_model.pb", "saved_model.pbtxt")


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
    #: sha256 of the manifest.json bytes as stored: what the champion pointer records.
    manifest_sha256: str = ""


@dataclass(frozen=True)
class ChampionPointer:
    name: str
    version: int | None  # None: never promoted
    history: list[dict] = field(default_factory=list)
    #: etag of the CHAMPION blob as read; None when there is no pointer blob yet.
    etag: str | None = None
    #: sha256 of the champion's manifest.json when it was promoted (None: older pointer).
    manifest_sha256: str | None = None


# -- helpers ----------------------------------------------------------------------------------


def recorded_manifest_sha256(history: list[dict], version: int) -> str | None:
    """The manifest digest the newest history entry naming `version` recorded, if any."""
    for entry in reversed(history):
        if isinstance(entry, dict) and entry.get("version") == version:
            digest = entry.get("manifest_sha256")
            if isinstance(digest, str):
                return digest
    return None


def hash_tree(root: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            if any(part.startswith(".tmp-") for part in rel.split("/")):
                raise BlobStoreError(
                    f"cannot publish {path}: names starting with '.tmp-' are reserved for "
                    "temporary files"
                )
            files[rel] = hash_file(path)
    return files


def hash_file(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        size = os.fstat(handle.fileno()).st_size
    return {"sha256": digest, "size": size}


def local_files(root: Path) -> dict[str, tuple[int, str]]:
    found = {}
    for path in root.rglob("*"):
        if path.is_file() or path.is_symlink():
            info = hash_file(path) if path.is_file() else {"size": -1, "sha256": "symlink"}
            found[path.relative_to(root).as_posix()] = (info["size"], info["sha256"])
    return found


def compare_files(
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
            want = expected[rel] if isinstance(expected[rel], dict) else {}
            if (size, sha) != (want.get("size"), want.get("sha256")):
                problems.append(
                    (
                        rel,
                        f"changed ({size} bytes, sha256 {sha}; manifest: {want.get('size')} "
                        f"bytes, sha256 {want.get('sha256')})",
                    )
                )
    return problems


def upload_order(rel: str) -> tuple[int, str]:
    # Like TFX's Pusher: the graph after the variables, so a poller never sees a graph
    # without its variables.
    return (1 if rel in _SERVING_GRAPHS else 0, rel)


def label(version: int | None) -> str:
    return "none" if version is None else f"version {version}"


def peek(document: Any, key: str) -> Any:
    return document.get(key) if isinstance(document, dict) else None
