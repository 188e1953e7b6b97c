"""Monitoring: the champion's reference statistics and daily feature drift; live performance (realised over a
window, and estimated before labels by CBPE) lives in defs/assets/performance.py and is re-exported here."""

import base64
import datetime as dt

import dagster as dg

from ml_assets.defs.assets.champion import (
    MONITORING_GROUP,
    champion_as_of,
    champion_or_fail,
    per_day,
)
from ml_assets.defs.assets.deployment import deployed_model
from ml_assets.defs.assets.features import features
from ml_assets.defs.assets.performance import estimated_performance, live_performance
from ml_assets.defs.assets.training import MODEL_NAME
from ml_assets.defs.automation import on_day_changed_ignoring
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import STORE_RETRY, permanent_failure
from ml_assets.defs.partitions import daily_partitions
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.storage import BlobNotFoundError

__all__ = ["champion_as_of", "champion_or_fail", "drift_blob", "drift_plot_blob", "estimated_performance",
           "feature_drift", "live_performance", "reference_blob", "reference_stats"]
DRIFT = SPEC.monitoring.drift


def reference_blob(champion_version: int) -> str:
    return f"artifacts/reference/{MODEL_NAME}/v{champion_version}.json"


def drift_blob(day: str) -> str:
    return f"artifacts/drift/{MODEL_NAME}/{day}.json"


def drift_plot_blob(day: str) -> str:
    return f"artifacts/drift/{MODEL_NAME}/{day}.png"


def importance_blob(champion_version: int) -> str:
    return f"artifacts/importance/{MODEL_NAME}/v{champion_version}.json"


def _png_md(name: str, png: bytes) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})")


@dg.asset(group_name=MONITORING_GROUP, deps=[deployed_model], kinds={"python"}, code_version="1",
          automation_condition=dg.AutomationCondition.eager(), retry_policy=STORE_RETRY)
def reference_stats(context: dg.AssetExecutionContext, blob_store: BlobStoreResource) -> dg.MaterializeResult:
    """Fixed bins and category frequencies of the champion's training window, computed once per champion."""
    from ml_assets.ml.drift import NumericReference, ReferenceStats
    from ml_assets.ml.drift import reference_stats as summarise

    version, manifest = champion_or_fail(blob_store)
    key = reference_blob(version)
    blobs = blob_store.blob_store()
    try:
        reference = ReferenceStats.from_json(blobs.get(key).decode())
        reused = True
    except BlobNotFoundError:
        window = (manifest.get("data_window") or {}).get("train_days")
        if not window:
            raise permanent_failure(f"{MODEL_NAME} v{version}'s manifest names no training days") from None
        frame = blob_store.datasets().read_frame("features", window, columns=SPEC.features.names)
        reference = summarise(frame, SPEC.features.numeric_names, SPEC.features.categorical_names, window,
                              bins=DRIFT.bins, sample_size=DRIFT.sample_size, top_k=DRIFT.top_k)
        blobs.put(key, reference.to_json().encode())
        reused = False
    rows = ["| feature | kind | bins / categories | null rate | rows |", "|---|---|---|---|---|"]
    for name, ref in reference.features.items():
        numeric = isinstance(ref, NumericReference)
        size = len(ref.bin_fractions) if numeric else len(ref.frequencies)
        rows.append(f"| {name} | {'numeric' if numeric else 'categorical'} | {size} | {ref.null_rate:.1%} | {ref.n} |")
    context.log.info(f"reference of champion v{version}: {'reused' if reused else 'computed'} ({key})")
    metadata = {
        "champion_version": version, "reused": reused, "reference_blob": key,
        "window": f"{reference.window[0]}..{reference.window[-1]} ({len(reference.window)} days)",
        "features": dg.MetadataValue.md("\n".join(rows)),
    }
    if DRIFT.needs_importance:
        importance = _champion_importance(blob_store, version, manifest)
        ranked = sorted(importance["importance"].items(), key=lambda kv: -kv[1])
        metadata["importance"] = dg.MetadataValue.md("\n".join(
            ["| feature | ROC AUC lost when shuffled |", "|---|---|"] + [f"| {n} | {v:.4f} |" for n, v in ranked]
            + ([f"\n{importance['note']}"] if importance["note"] else [])))
    return dg.MaterializeResult(metadata=metadata)


def _champion_importance(blob_store: BlobStoreResource, version: int, manifest: dict) -> dict:
    """The champion's permutation importance on its labelled holdout days, computed once per champion."""
    from ml_assets.defs.assets.champion import champion_model
    from ml_assets.ml.importance import permutation_importance
    from ml_assets.ml.raw import PARTITION_COLUMN

    key = importance_blob(version)
    try:
        return blob_store.get_json(key)
    except BlobNotFoundError:
        pass
    days = (manifest.get("data_window") or {}).get("holdout_days") or []
    datasets = blob_store.datasets()
    days = [day for day in days if datasets.current("labels", day) is not None]
    names = SPEC.features.names
    note, importance = "", {name: 0.0 for name in names}
    if not days:
        note = "no labelled holdout day: every feature weighs the same"
    else:
        keys = [*SPEC.key_columns, PARTITION_COLUMN]
        frame = datasets.read_frame("features", days).merge(
            datasets.read_frame("labels", days, columns=[*keys, SPEC.label.name]), on=keys, how="inner")
        frame = frame[frame[SPEC.label.name].notna()].reset_index(drop=True)
        y = frame[SPEC.label.name].to_numpy().astype("int8")
        if len(set(y.tolist())) < 2:
            note = f"the {len(frame)} labelled holdout rows have one class: every feature weighs the same"
        else:
            model = champion_model(blob_store, version, manifest)
            importance = permutation_importance(model.predict_proba, frame, y, names,
                                                repeats=DRIFT.importance_repeats)
    stored = {"champion_version": version, "days": days, "metric": "roc_auc", "importance": importance, "note": note}
    blob_store.put_json(key, stored)
    return stored


@dg.asset(group_name=MONITORING_GROUP, partitions_def=daily_partitions, deps=[features, reference_stats],
          kinds={"python"}, code_version="1", automation_condition=on_day_changed_ignoring(reference_stats),
          retry_policy=STORE_RETRY, output_required=False)
def feature_drift(context: dg.AssetExecutionContext, blob_store: BlobStoreResource):
    """Per-feature drift of the day (and its trailing window) against the champion's stored reference."""
    yield from per_day(context, lambda day: _drift_day(blob_store, day))


# The last reference parsed, with the bytes it was parsed from: every day of a range (and every range
# until the next champion) reads the same blob, and parsing its samples costs more than reading it.
_REFERENCE: dict[str, tuple[bytes, object]] = {}


def _stored_reference(blob_store: BlobStoreResource, version: int):
    from ml_assets.ml.drift import ReferenceStats

    blobs = blob_store.blob_store()
    key = reference_blob(version)
    try:
        raw = blobs.get(key)
    except BlobNotFoundError:
        raise permanent_failure(f"no reference statistics for champion v{version}: materialize reference_stats") from None
    where = f"{blobs.location}/{key}"
    if where not in _REFERENCE or _REFERENCE[where][0] != raw:
        _REFERENCE.clear()
        _REFERENCE[where] = (raw, ReferenceStats.from_json(raw.decode()))
    return _REFERENCE[where][1]


def _drift_day(blob_store: BlobStoreResource, day: str) -> dict:
    from ml_assets.ml.drift import DriftThresholds, drift, plot_drift
    from ml_assets.ml.drift_rule import judge

    version, manifest = champion_or_fail(blob_store)
    reference = _stored_reference(blob_store, version)
    datasets = blob_store.datasets()
    # One pointer read per day of the window, not a listing of every stored partition.
    last = dt.date.fromisoformat(day)
    days = [(last - dt.timedelta(days=back)).isoformat() for back in reversed(range(DRIFT.current_days))]
    window = [d for d in days if datasets.current("features", d) is not None]
    if day not in window:
        raise permanent_failure(f"features has no data for {day}")
    current = datasets.read_frame("features", window, columns=list(reference.features))
    thresholds = DriftThresholds(psi=DRIFT.psi, wasserstein=DRIFT.wasserstein, js_distance=DRIFT.js_distance,
                                 numeric_rule=DRIFT.numeric_rule, min_count=DRIFT.min_count)
    report = drift(reference, current, thresholds, exclude_from_share=DRIFT.exclude_from_share)
    importance = _champion_importance(blob_store, version, manifest)["importance"] if DRIFT.needs_importance else None
    verdict = judge(report, share_threshold=DRIFT.share_threshold, weighting=DRIFT.weighting,
                    importance=importance, any_of_top=DRIFT.any_of_top)
    drifted, summary = verdict.drifted, verdict.summary
    plot = plot_drift(report)
    blob_store.blob_store().put(drift_plot_blob(day), plot)
    blob_store.put_json(drift_blob(day), {
        "day": day, "window": window, "reference_version": version, "drifted": drifted, "summary": summary,
        "share_threshold": DRIFT.share_threshold, "weighting": DRIFT.weighting, "weights": verdict.weights,
        "report": report.as_dict(), "table": report.table_markdown(),
    })
    # drifted_share is the share the rule compared (of features, or of the champion's importance).
    return {
        "drifted_share": verdict.share, "feature_share": report.drifted_share, "drifted": drifted, "summary": summary,
        "drifted_features": dg.MetadataValue.json(report.drifted_features),
        "reference_version": version, "current_rows": report.n_current,
        "window": f"{window[0]}..{window[-1]} ({len(window)} days)",
        "drift_table": dg.MetadataValue.md(report.table_markdown()), "drift_plot": _png_md("drift", plot),
    }
