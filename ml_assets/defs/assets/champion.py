"""The champion as monitoring sees it: its version and manifest, its loaded model, its scores on a day."""

from collections.abc import Callable, Iterator

import dagster as dg

from ml_assets.defs.assets.training import MODEL_NAME
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import permanent_failure
from ml_assets.ml.raw import PARTITION_COLUMN
from ml_assets.resources.blob_store import BlobStoreResource

MONITORING_GROUP = "monitoring"


def champion_or_fail(blob_store: BlobStoreResource) -> tuple[int, dict]:
    """The champion's version and manifest; monitoring has nothing to compare with before one exists."""
    store = blob_store.models()
    version = store.champion(MODEL_NAME).version
    if version is None:
        raise permanent_failure(f"{MODEL_NAME} has no champion yet: monitoring starts after the first deployment")
    return version, store.get(MODEL_NAME, version).manifest


def champion_as_of(manifest: dict) -> str | None:
    """The last day the model saw (its last holdout day): only later days are live for it."""
    holdout = (manifest.get("data_window") or {}).get("holdout_days") or []
    return holdout[-1] if holdout else None


_MODELS: dict[tuple[str, int], object] = {}


def champion_model(blob_store: BlobStoreResource, version: int, manifest: dict):
    """Loaded once per process and version (a SavedModel takes a second to load; versions never change)."""
    from ml_assets.ml.models import FeatureColumns, load_model

    store = blob_store.models()
    key = (f"{store.blobs.location}/{MODEL_NAME}", version)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_model(store.fetch(MODEL_NAME, version), manifest["flavor"],
                                  FeatureColumns(**manifest["columns"]))
    return _MODELS[key]


# Scores of (store, model version, day, features version[, labels version]): a trailing window re-reads
# the same days run after run, and a range run judges overlapping windows; versions never change content.
class KeptDict(dict):
    """A dict that forgets its oldest entries beyond `size` (a process-wide cache of immutable results)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def __setitem__(self, key, value) -> None:
        while len(self) >= self.size:
            del self[next(iter(self))]
        super().__setitem__(key, value)


_SCORES_KEPT = 64
_SCORES: KeptDict = KeptDict(_SCORES_KEPT)


def _remember(key: tuple, value: tuple) -> tuple:
    _SCORES[key] = value
    return value


def day_probabilities(blob_store: BlobStoreResource, version: int, manifest: dict, day: str):
    """The champion's probabilities on every row of the day's features (no labels needed)."""
    datasets = blob_store.datasets()
    features = datasets.current("features", day)
    if features is None:
        raise permanent_failure(f"features has no data for {day}")
    key = (datasets.blobs.location, version, day, features.version)
    if key not in _SCORES:
        frame = datasets.read_frame("features", [day])
        _remember(key, (champion_model(blob_store, version, manifest).predict_proba(frame),))
    return _SCORES[key][0]


def _labelled_frame(datasets, day: str):
    """The day's labelled rows: its features joined to its labels by key."""
    keys = [*SPEC.key_columns, PARTITION_COLUMN]
    frame = datasets.read_frame("features", [day]).merge(
        datasets.read_frame("labels", [day], columns=[*keys, SPEC.label.name]), on=keys, how="inner")
    return frame[frame[SPEC.label.name].notna()]


def day_labelled_scores(blob_store: BlobStoreResource, version: int, manifest: dict, day: str,
                        labels_version: str):
    """(labels, probabilities) of the day's labelled rows (labels joined to features by key)."""
    datasets = blob_store.datasets()
    features = datasets.require("features", day)
    key = (datasets.blobs.location, version, day, features.version, labels_version)
    if key not in _SCORES:
        frame = _labelled_frame(datasets, day)
        probabilities = champion_model(blob_store, version, manifest).predict_proba(frame)
        _remember(key, (frame[SPEC.label.name].to_numpy().astype("int8"), probabilities))
    return _SCORES[key]


def prefetch_labelled_scores(blob_store: BlobStoreResource, version: int, manifest: dict,
                             days: dict[str, str]) -> None:
    """Score the labelled rows of the days (day -> labels version) not kept yet in ONE predict_proba call,
    so that day_labelled_scores finds them: a range run's windows need a dozen new days, and each call
    costs ~10 ms of preprocessing besides its rows.

    Only an sklearn champion, and only days whose frames have the same columns and dtypes: its scores
    are computed row by row (trees, then the calibrator), so a row scores the same in any batch. A
    Keras graph's matrix products may block differently with the batch size (last bits)."""
    from ml_assets.ml.models import SKLEARN

    if manifest.get("flavor") != SKLEARN:
        return
    datasets = blob_store.datasets()
    todo = []
    for day, labels_version in days.items():
        features = datasets.current("features", day)
        if features is None or datasets.current("labels", day) is None:
            continue  # day_labelled_scores says what is missing, if the day is judged at all
        key = (datasets.blobs.location, version, day, features.version, labels_version)
        if key not in _SCORES:
            todo.append((key, _labelled_frame(datasets, day)))
    if len(todo) < 2 or len(todo) > _SCORES_KEPT // 2:
        return
    dtypes = todo[0][1].dtypes
    if any(not frame.dtypes.equals(dtypes) for _, frame in todo):
        return
    import numpy as np
    import pandas as pd

    probabilities = champion_model(blob_store, version, manifest).predict_proba(
        pd.concat([frame for _, frame in todo], ignore_index=True))
    ends = np.cumsum([len(frame) for _, frame in todo])
    for (key, frame), day_probabilities in zip(todo, np.split(probabilities, ends[:-1]), strict=True):
        _remember(key, (frame[SPEC.label.name].to_numpy().astype("int8"), day_probabilities))


def per_day(context: dg.AssetExecutionContext, judge_day: Callable[[str], dict | None]) -> Iterator:
    """Run ``judge_day`` for each day of the run: one day (automation, the UI) gives a MaterializeResult
    and fails as the day does; a range (single-run backfill, the replay) gives one materialization per
    day, in day order, and a failing day is logged and skipped so that it does not fail the others."""
    days = list(context.partition_keys)
    if len(days) == 1:
        metadata = judge_day(days[0])
        if metadata is not None:
            yield dg.MaterializeResult(metadata=metadata)
        return
    skipped = []
    for day in days:
        try:
            metadata = judge_day(day)
        except dg.Failure as exc:
            context.log.warning(f"{context.asset_key.to_user_string()} {day} skipped: {exc.description}")
            skipped.append(day)
            continue
        if metadata is not None:
            yield dg.AssetMaterialization(asset_key=context.asset_key, partition=day, metadata=metadata)
    if skipped:
        context.log.warning(f"{len(skipped)} of {len(days)} day(s) skipped: {', '.join(skipped)}")
