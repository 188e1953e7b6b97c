"""Which model versions the server holds in memory, and the hot swap of the champion.

`ModelRegistry` serves ONE model name from a `ModelStore`:

- `current` is the loaded champion. `refresh()` reads the champion pointer and, when it moved,
  fetches, loads and warms up the new version completely (one real prediction) BEFORE it
  replaces `current` with a single reference assignment. A request that already holds the old
  `LoadedModel` finishes on it; nothing is ever half-loaded, dropped or failed by a swap
  (TF Serving's availability-preserving policy: load the new version, then unload the old one,
  so memory is briefly about twice one model).
- A small LRU holds versions asked for explicitly (`/versions/{v}`) and the champions that were
  swapped out, so a rollback to the previous champion swaps instantly.
- A version that fails to load is remembered with its error and retried after
  `retry_interval` seconds; the previous champion keeps serving meanwhile.
- Every load verifies the bytes: the manifest against the digest the champion pointer (or its
  history) recorded, and each file against the manifest (`ModelStore.fetch`). A tampered
  version is refused like any failed load (`failures()` says why). A server that starts with
  a refused champion serves the newest earlier champion of the history that verifies.

Everything here is blocking (store IO, model loading); the HTTP app calls it from threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ml_assets.ml.models import FeatureColumns, TabularModel
    from ml_assets.storage.model_store import ModelStore

from ml_assets.storage.model_manifest import recorded_manifest_sha256

log = logging.getLogger(__name__)

#: Earlier champions tried when a restarted server's champion is refused.
_FALLBACK_TRIES = 3
#: `_load_cached(digest=...)` default: look the digest up in the pointer's history.
_FROM_HISTORY = object()


class ModelNotFoundError(LookupError):
    """The model name, or one version of it, does not exist (the server answers 404)."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One model version, loaded and warmed up, ready to predict."""

    name: str
    version: int
    model: TabularModel
    manifest: dict[str, Any]
    columns: FeatureColumns
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0
    #: A verified faster equivalent of model.predict_proba (see serving.fastpath), if any.
    fast_predict: Callable[[list[dict]], np.ndarray] | None = field(default=None, repr=False)
    #: Per-process state the HTTP app attaches to this version (its batcher, request schema).
    state: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def flavor(self) -> str:
        return str(self.manifest.get("flavor", getattr(self.model, "flavor", "")))

    def predict(self, records: list[dict]) -> np.ndarray:
        """P(label = 1) per record: the fast path when there is one, else predict_proba.

        Records must be valid (the serving app checks them first); the fast path does not
        re-validate.
        """
        if self.fast_predict is not None:
            return self.fast_predict(records)
        return self.model.predict_proba(records)


def columns_from_manifest(manifest: dict[str, Any]) -> FeatureColumns:
    from ml_assets.ml.models import FeatureColumns

    columns = manifest.get("columns")
    if not isinstance(columns, dict):
        raise ValueError(
            "model manifest has no 'columns' mapping {'numeric': [...], 'categorical': [...]}"
        )
    return FeatureColumns(
        numeric=list(columns.get("numeric", [])), categorical=list(columns.get("categorical", []))
    )


def warmup_record(columns: FeatureColumns) -> dict[str, Any]:
    """A synthetic instance: 0.0 for every numeric feature, an unseen (empty) category."""
    record: dict[str, Any] = dict.fromkeys(columns.numeric, 0.0)
    record.update(dict.fromkeys(columns.categorical, ""))
    return record


class ModelRegistry:
    """The champion of one model name, plus an LRU of other loaded versions."""

    def __init__(
        self,
        store: ModelStore,
        name: str,
        *,
        max_cached_versions: int = 4,
        retry_interval: float = 30.0,
        accelerate: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store = store
        self.name = name
        self.max_cached_versions = max(0, int(max_cached_versions))
        self.retry_interval = retry_interval
        self.accelerate = accelerate
        self._clock = clock
        # `_current` is only ever replaced by one assignment (atomic for readers, no lock needed).
        self._current: LoadedModel | None = None
        self._cache: OrderedDict[int, LoadedModel] = OrderedDict()
        self._failures: dict[int, tuple[float, str]] = {}
        self._lock = threading.Lock()  # guards _cache and _failures
        self._load_locks: dict[int, threading.Lock] = {}
        self._refresh_lock = threading.Lock()
        self.champion_etag: str | None = None
        self.swaps = 0

    # ------------------------------------------------------------------ reading (non-blocking)

    @property
    def current(self) -> LoadedModel | None:
        """The champion being served; None until a champion has been loaded."""
        return self._current

    def peek(self, version: int | None = None) -> LoadedModel | None:
        """The loaded model for `version` (None = champion) if it is in memory; never loads."""
        current = self._current
        if version is None or (current is not None and current.version == version):
            return current
        with self._lock:
            loaded = self._cache.get(version)
            if loaded is not None:
                self._cache.move_to_end(version)
            return loaded

    def loaded_versions(self) -> list[int]:
        current = self._current
        with self._lock:
            versions = set(self._cache)
        if current is not None:
            versions.add(current.version)
        return sorted(versions)

    def failures(self) -> dict[int, str]:
        """Versions whose last load failed, with the error message."""
        with self._lock:
            return {version: message for version, (_, message) in self._failures.items()}

    # ------------------------------------------------------------------ loading (blocking)

    def get(self, version: int | None = None) -> LoadedModel:
        """The champion (version None) or one specific version, loading it if needed.

        Raises ModelNotFoundError when there is no champion yet or the version does not exist.
        """
        loaded = self.peek(version)
        if loaded is not None:
            return loaded
        if version is None:
            raise ModelNotFoundError(f"Could not find any versions of model {self.name}")
        if version not in self._existing_versions():
            raise ModelNotFoundError(f"Could not find version {version} of model {self.name}")
        return self._load_cached(version)

    def refresh(self) -> bool:
        """Swap to the champion the store names, if it moved; True when a swap happened.

        The new version is fetched, loaded and warmed up before `current` changes. If that fails
        the old champion stays, the error is remembered (see `failures()`) and the load is retried
        on a later refresh after `retry_interval` seconds. Store errors propagate.
        """
        with self._refresh_lock:
            pointer = self.store.champion(self.name)
            self.champion_etag = getattr(pointer, "etag", None)
            target = pointer.version
            current = self._current
            if target is None or (current is not None and current.version == target):
                return False
            with self._lock:
                failed = self._failures.get(target)
            if failed is not None and self._clock() - failed[0] < self.retry_interval:
                return False
            try:
                loaded = self._load_cached(target, cache=False, digest=pointer.manifest_sha256)
            except Exception as error:  # keep serving the old champion
                log.error(
                    "model %s version %s failed to load; keeping version %s: %s",
                    self.name,
                    target,
                    current.version if current else None,
                    error,
                )
                if current is not None:
                    return False
                fallback = self._earlier_champion(pointer.history, target)
                if fallback is None:
                    return False
                loaded = fallback
            self._current = loaded  # the swap: one reference assignment
            self.swaps += 1
            with self._lock:
                self._cache.pop(target, None)
                if current is not None:  # the previous champion stays warm for a rollback
                    self._remember(current)
            log.info(
                "model %s: now serving version %s (was %s, loaded in %.2fs)",
                self.name,
                target,
                current.version if current else None,
                loaded.load_seconds,
            )
            return True

    def _earlier_champion(self, history: list[dict], refused: int) -> LoadedModel | None:
        """After a restart with a refused champion: the newest earlier champion that verifies.

        Each is checked against the manifest digest its own history entry recorded. Tried at
        most `_FALLBACK_TRIES` versions, so a long history of damage cannot stall a refresh.
        """
        tried: list[int] = []
        for entry in reversed(history):
            version = entry.get("version") if isinstance(entry, dict) else None
            if not isinstance(version, int) or version == refused or version in tried:
                continue
            tried.append(version)
            try:
                loaded = self._load_cached(
                    version, cache=False, digest=recorded_manifest_sha256(history, version)
                )
            except Exception as error:
                log.error(
                    "model %s: earlier champion %s is refused too: %s", self.name, version, error
                )
            else:
                log.warning(
                    "model %s: champion version %s is refused; serving version %s, the newest "
                    "earlier champion that verifies",
                    self.name,
                    refused,
                    version,
                )
                return loaded
            if len(tried) >= _FALLBACK_TRIES:
                break
        return None

    def _existing_versions(self) -> list[int]:
        return list(self.store.versions(self.name))

    def _load_lock(self, version: int) -> threading.Lock:
        with self._lock:
            return self._load_locks.setdefault(version, threading.Lock())

    def _load_cached(
        self, version: int, *, cache: bool = True, digest: str | object | None = _FROM_HISTORY
    ) -> LoadedModel:
        """Load one version once, even when several threads ask for it at the same time.

        `digest`: the manifest sha256 to check (None: none recorded); by default the one the
        champion pointer's history recorded for this version, if any.
        """
        with self._load_lock(version):
            loaded = self.peek(version)
            if loaded is not None:
                return loaded
            try:
                if digest is _FROM_HISTORY:
                    digest = recorded_manifest_sha256(self.store.history(self.name), version)
                loaded = self._load(version, digest)
            except Exception as error:
                with self._lock:
                    self._failures[version] = (self._clock(), f"{type(error).__name__}: {error}")
                raise
            with self._lock:
                self._failures.pop(version, None)
            if cache:
                with self._lock:
                    self._remember(loaded)
            return loaded

    def _remember(self, loaded: LoadedModel) -> None:
        """Put a version in the LRU (caller holds `_lock`)."""
        if self.max_cached_versions == 0:
            return
        self._cache[loaded.version] = loaded
        self._cache.move_to_end(loaded.version)
        while len(self._cache) > self.max_cached_versions:
            self._cache.popitem(last=False)

    def _load(self, version: int, digest: str | None) -> LoadedModel:
        from ml_assets.ml.models import load_model

        started = time.perf_counter()
        stored = self.store.get(self.name, version, manifest_sha256=digest)
        manifest = dict(stored.manifest)
        if "flavor" not in manifest:
            raise ValueError(f"manifest of {self.name} version {version} has no 'flavor'")
        columns = columns_from_manifest(manifest)
        # The same manifest bytes as above (a manifest replaced in between is refused).
        local_dir = self.store.fetch(self.name, version, manifest_sha256=stored.manifest_sha256)
        model = load_model(local_dir, manifest["flavor"], columns)
        # Warm-up: one real prediction before the version can be served (TF Serving's warm-up
        # records do the same); the first call also pays lazy initialisation (tf.function tracing).
        record = warmup_record(columns)
        probability = model.predict_proba([record])
        if len(probability) != 1:
            raise ValueError(f"warm-up prediction returned {len(probability)} values for 1 record")
        fast = None
        if self.accelerate:
            from ml_assets.serving.fastpath import accelerate

            fast = accelerate(model)  # verified against predict_proba, or None
            if fast is not None:
                fast([record])
        return LoadedModel(
            name=self.name,
            version=version,
            model=model,
            manifest=manifest,
            columns=columns,
            load_seconds=time.perf_counter() - started,
            fast_predict=fast,
        )
