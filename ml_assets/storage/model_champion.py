"""The champion pointer of ModelStore: read, promote (compare-and-swap), roll back.

Split from model_store.py. The pointer records the sha256 of the champion's manifest.json,
and each history entry the digest of the version it names, so every later load (and a
rollback) can refuse a manifest edited after it was verified.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ml_assets.storage.base import BlobConflictError, BlobNotFoundError, BlobStoreError
from ml_assets.storage.model_manifest import (
    CHAMPION,
    MANIFEST,
    ChampionPointer,
    ModelIntegrityError,
    PromotionConflictError,
    label,
    recorded_manifest_sha256,
)

if TYPE_CHECKING:
    from ml_assets.storage.base import BlobStore
    from ml_assets.storage.model_manifest import ModelVersion


class ChampionMixin:
    """The CHAMPION blob of each model name (mixed into ModelStore)."""

    blobs: BlobStore

    if TYPE_CHECKING:

        def _prefix(self, name: str) -> str: ...

        def verify(
            self, name: str, version: int, *, manifest_sha256: str | None = None
        ) -> ModelVersion: ...

        @staticmethod
        def _integrity(
            name: str, version: int, file: str, message: str
        ) -> ModelIntegrityError: ...

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
            digest = document.get("manifest_sha256")
            if (
                not (version is None or isinstance(version, int))
                or not isinstance(history, list)
                or not (digest is None or isinstance(digest, str))
            ):
                raise ValueError("unexpected types")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BlobStoreError(
                f"champion pointer {self.blobs.describe(key)} is not valid: {exc}"
            ) from exc
        return ChampionPointer(name, version, history, etag, digest)

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
        manifest_sha256: str | None = None,
    ) -> ChampionPointer:
        """Make `version` the champion if the champion is still `expected` (None: no champion).

        Compare-and-swap on the CHAMPION blob: the write succeeds only if the pointer still
        names `expected` and nobody replaced it since it was read, else PromotionConflictError
        (saying expected vs actual) and nothing changes. The version must be complete and the
        bytes of its stored files must match its manifest (`verify`), whose own sha256 must
        be `manifest_sha256` when given (e.g. the digest `publish` returned, or the history's):
        else ModelIntegrityError and the pointer does not move. The digest verified is
        recorded in the pointer and its history entry, for every later load to check.
        """
        model = self.verify(name, version, manifest_sha256=manifest_sha256)
        key = self._champion_key(name)
        current = self.champion(name)
        if current.version != expected:
            raise PromotionConflictError(
                f"cannot promote {name} to version {version}: expected champion "
                f"{label(expected)} but it is {label(current.version)}",
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
            "manifest_sha256": model.manifest_sha256,
        }
        history = [*current.history, entry]
        document = json.dumps(
            {
                "name": name,
                "version": version,
                "manifest_sha256": model.manifest_sha256,
                "updated_at": at,
                "history": history,
            },
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
                    f"{label(expected)} but another promotion won (champion is now "
                    f"{label(now)})",
                    name=name,
                    expected=expected,
                    actual=now,
                ) from exc
        if etag is None:  # a backend that does not report the etag of a write
            return self.champion(name)
        return ChampionPointer(name, version, history, etag, model.manifest_sha256)

    def rollback(self, name: str, version: int, *, reason: str, actor: str = "") -> ChampionPointer:
        """Move the champion back to an earlier, complete, intact version (CAS).

        The version's bytes are verified, and its manifest against the digest the history
        recorded when it was champion; a tampered version is refused (ModelIntegrityError
        saying why) and the pointer stays where it was.
        """
        current = self.champion(name)
        if current.version is None:
            raise ValueError(f"cannot roll {name} back to version {version}: it has no champion")
        if version >= current.version:
            raise ValueError(
                f"cannot roll {name} back to version {version}: not earlier than the champion, "
                f"version {current.version}"
            )
        try:
            return self.promote(
                name,
                version,
                expected=current.version,
                reason=reason,
                actor=actor,
                action="rollback",
                manifest_sha256=recorded_manifest_sha256(current.history, version),
            )
        except ModelIntegrityError as exc:
            raise self._integrity(
                name,
                version,
                exc.file or MANIFEST,
                f"refusing to roll {name} back to version {version} (the champion stays "
                f"version {current.version}): {exc}",
            ) from exc
