"""Monitoring: the champion's reference statistics, daily feature drift and daily live performance."""

import base64
import datetime as dt
from collections.abc import Iterator

import dagster as dg

from ml_assets.defs.assets.deployment import deployed_model
from ml_assets.defs.assets.features import features, labels
from ml_assets.defs.assets.training import MODEL_NAME
from ml_assets.defs.automation import on_day_changed_ignoring
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import STORE_RETRY, permanent_failure
from ml_assets.defs.partitions import daily_partitions
from ml_assets.ml.raw import PARTITION_COLUMN
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.storage import BlobNotFoundError

MONITORING_GROUP = "monitoring"
DRIFT = SPEC.monitoring.drift
PERFORMANCE = SPEC.monitoring.performance


def reference_blob(champion_version: int) -> str:
    return f"artifacts/reference/{MODEL_NAME}/v{champion_version}.json"


def drift_blob(day: str) -> str:
    return f"artifacts/drift/{MODEL_NAME}/{day}.json"


def drift_plot_blob(day: str) -> str:
    return f"artifacts/drift/{MODEL_NAME}/{day}.png"


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
    return dg.MaterializeResult(metadata={
        "champion_version": version, "reused": reused, "reference_blob": key,
        "window": f"{reference.window[0]}..{reference.window[-1]} ({len(reference.window)} days)",
        "features": dg.MetadataValue.md("\n".join(rows)),
    })


@dg.asset(group_name=MONITORING_GROUP, partitions_def=daily_partitions, deps=[features, reference_stats],
          kinds={"python"}, code_version="1", automation_condition=on_day_changed_ignoring(reference_stats),
          retry_policy=STORE_RETRY)
def feature_drift(context: dg.AssetExecutionContext, blob_store: BlobStoreResource) -> dg.MaterializeResult:
    """Per-feature drift of the day (and its trailing window) against the champion's stored reference."""
    from ml_assets.ml.drift import DriftThresholds, ReferenceStats, drift, plot_drift

    day = context.partition_key
    version, _ = champion_or_fail(blob_store)
    try:
        reference = ReferenceStats.from_json(blob_store.blob_store().get(reference_blob(version)).decode())
    except BlobNotFoundError:
        raise permanent_failure(f"no reference statistics for champion v{version}: materialize reference_stats") from None
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
    drifted = report.drifted_share >= DRIFT.share_threshold
    summary = (f"{len(report.drifted_features)}/{len(report.counted_features)} features drifted "
               f"({report.drifted_share:.0%} {'>=' if drifted else '<'} {DRIFT.share_threshold:.0%})")
    plot = plot_drift(report)
    blob_store.blob_store().put(drift_plot_blob(day), plot)
    blob_store.put_json(drift_blob(day), {
        "day": day, "window": window, "reference_version": version, "drifted": drifted, "summary": summary,
        "share_threshold": DRIFT.share_threshold, "report": report.as_dict(), "table": report.table_markdown(),
    })
    return dg.MaterializeResult(metadata={
        "drifted_share": report.drifted_share, "drifted": drifted, "summary": summary,
        "drifted_features": dg.MetadataValue.json(report.drifted_features),
        "reference_version": version, "current_rows": report.n_current,
        "window": f"{window[0]}..{window[-1]} ({len(window)} days)",
        "drift_table": dg.MetadataValue.md(report.table_markdown()), "drift_plot": _png_md("drift", plot),
    })


_MODELS: dict[tuple[str, int], object] = {}


def _champion_model(blob_store: BlobStoreResource, version: int, manifest: dict):
    """Loaded once per process and version (a SavedModel takes a second to load; versions never change)."""
    from ml_assets.ml.models import FeatureColumns, load_model

    store = blob_store.models()
    key = (f"{store.blobs.location}/{MODEL_NAME}", version)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_model(store.fetch(MODEL_NAME, version), manifest["flavor"],
                                  FeatureColumns(**manifest["columns"]))
    return _MODELS[key]


labels_settled = dg.TimeWindowPartitionMapping(start_offset=0, end_offset=PERFORMANCE.label_lag_days,
                                               allow_nonexistent_upstream_partitions=True)


# The day's run must not race the run of the later labels it waits for: requested in the same tick,
# they would be two runs (two partitions), and a day run first is not judged and not asked again.
judge_when_labels_settled = (
    on_day_changed_ignoring(deployed_model)
    & ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
).with_label("the day's data and its settling labels landed, and no dependency is being requested")


@dg.asset(group_name=MONITORING_GROUP, partitions_def=daily_partitions, kinds={"python"}, code_version="1",
          deps=[features, dg.AssetDep(labels, partition_mapping=labels_settled), deployed_model],
          automation_condition=judge_when_labels_settled, retry_policy=STORE_RETRY, output_required=False)
def live_performance(context: dg.AssetExecutionContext, blob_store: BlobStoreResource) -> Iterator[dg.MaterializeResult]:
    """The champion's metric on the day's labels, once they are complete, against its holdout value."""
    from ml_assets.ml.performance import live_performance as judge

    day = context.partition_key
    datasets = blob_store.datasets()
    settled = (dt.date.fromisoformat(day) + dt.timedelta(days=PERFORMANCE.label_lag_days)).isoformat()
    if datasets.current("labels", settled) is None:
        # Not a failure: automation may ask in the tick that also requests the later day's labels;
        # their materialization asks again (labels of `settled` are a dependency of this day).
        context.log.info(f"not judged yet: labels of {day} are not complete until the labels of {settled} exist "
                         f"(label_lag_days={PERFORMANCE.label_lag_days})")
        return
    version, manifest = champion_or_fail(blob_store)
    keys = [*SPEC.key_columns, PARTITION_COLUMN]
    frame = datasets.read_frame("features", [day]).merge(
        datasets.read_frame("labels", [day], columns=[*keys, SPEC.label.name]), on=keys, how="inner")
    holdout = manifest["metrics"]["holdout"].get(PERFORMANCE.metric)
    model = _champion_model(blob_store, version, manifest)
    probabilities = model.predict_proba(frame)  # an empty day gives an empty array: not judged
    result = judge(frame[SPEC.label.name].to_numpy(), probabilities, metric=PERFORMANCE.metric,
                   holdout_value=holdout, max_drop=PERFORMANCE.max_drop, min_rows=PERFORMANCE.min_rows,
                   threshold=SPEC.promotion.decision_threshold)
    as_of = champion_as_of(manifest)
    yield dg.MaterializeResult(metadata={
        "champion_version": version, "metric": PERFORMANCE.metric,
        "live": result.live if result.live is not None else "n/a", "holdout": result.holdout,
        "drop": result.drop if result.drop is not None else "n/a", "max_drop": result.max_drop,
        "judged": result.judged, "flagged": result.flagged, "rows": result.rows, "positives": result.positives,
        "summary": result.summary, "in_champion_window": bool(as_of and day <= as_of),
    })
