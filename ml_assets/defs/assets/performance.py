"""Live performance of the champion: realised over a trailing window of labelled days (with its interval),
and estimated from its probabilities alone (CBPE) as soon as a day's features land.

With a label feed a day is judged once its own labels reach their coverage, and every window holding a
day whose labels change later (late outcomes) or settle is judged again: the newest verdict of a day wins."""

import datetime as dt
import hashlib

import dagster as dg

from ml_assets.defs.assets.champion import (
    MONITORING_GROUP,
    KeptDict,
    champion_as_of,
    champion_or_fail,
    day_labelled_scores,
    day_probabilities,
    per_day,
    prefetch_labelled_scores,
)
from ml_assets.defs.assets.deployment import deployed_model
from ml_assets.defs.assets.features import features
from ml_assets.defs.assets.labels import labels
from ml_assets.defs.assets.training import MODEL_NAME
from ml_assets.defs.automation import no_failed_blocking_check_upstream, on_day_changed_ignoring
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.execution import STORE_RETRY, permanent_failure
from ml_assets.defs.partitions import daily_partitions
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.storage import BlobNotFoundError

PERFORMANCE = SPEC.monitoring.performance
FEED = SPEC.label_feed


def estimate_blob(day: str) -> str:
    return f"artifacts/estimates/{MODEL_NAME}/{day}.json"


def _day(day: str, offset: int) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=offset)).isoformat()


def label_state(datasets, day: str) -> tuple[bool, float | None, str | None, str]:
    """(ready to judge, label coverage, labels version, why not) of the day's labels.

    With a label feed: ready once the share of the day's examples whose outcome landed reaches
    min_label_coverage (stored by the labels asset, ml_assets.ml.labels). Without one: complete once
    the labels of the day label_lag_days later exist (the lag is simulated).
    """
    from ml_assets.ml.labels import stored_label_stats

    current = datasets.current("labels", day)
    if current is None:
        return False, None, None, f"labels of {day} have not landed"
    if FEED is not None:
        stats = stored_label_stats(datasets, day)
        need = PERFORMANCE.min_label_coverage or FEED.min_coverage
        if stats is None:
            return False, None, current.version, f"the label coverage of {day} is not stored yet"
        coverage = float(stats["coverage"])
        why = "" if coverage >= need else f"label coverage of {day} is {coverage:.0%} < {need:.0%}"
        return coverage >= need, coverage, current.version, why
    settled = _day(day, PERFORMANCE.label_lag_days)
    if datasets.current("labels", settled) is None:
        return False, None, current.version, (f"labels of {day} are not complete until the labels of {settled} exist "
                                              f"(label_lag_days={PERFORMANCE.label_lag_days})")
    return True, None, current.version, ""


def _stored_estimate(blob_store: BlobStoreResource, day: str, version: int) -> dict | None:
    try:
        stored = blob_store.get_json(estimate_blob(day))
    except BlobNotFoundError:
        return None
    return stored if stored.get("champion_version") == version else None


def judged_window(datasets, day: str, as_of: str | None,
                  states: dict | None = None) -> list[tuple[str, float | None, str, str]]:
    """The days judged together with `day`, oldest first, as (day, label coverage, labels version, features
    version): the window_days ending at `day` whose features exist and whose labels are ready (label_state),
    less - for a day after the champion's as_of - the days it trained or was held out on (they say nothing
    about it live). ``states``: label_state per day, filled as read (one read per day over many windows)."""
    states = {} if states is None else states
    inside = bool(as_of and day <= as_of)
    window = []
    for back in reversed(range(PERFORMANCE.window_days)):
        d = _day(day, -back)
        if d != day and (not inside and as_of and d <= as_of):
            continue
        features_version = datasets.current("features", d)
        if features_version is None:
            continue
        if d not in states:
            states[d] = label_state(datasets, d)
        ready, coverage, version, _ = states[d]
        if ready:
            window.append((d, coverage, version, features_version.version))
    return window


def window_fingerprint(window: list[tuple[str, float | None, str, str]]) -> str:
    """Digest of what a window's judgement reads: each day's features and labels versions. A late label
    that changes (or settles) any day of the window changes it, so every window holding that day is re-judged."""
    parts = [f"{d}:{features}:{labels}" for d, _, labels, features in window]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def window_keys(blob_store: BlobStoreResource, days: list[str]) -> dict[str, str]:
    """Of `days`, those the champion can be judged on now (features stored, labels ready), each with the
    fingerprint of its window: the replay re-runs a day when it changed, as the asset re-judges only then."""
    _version, manifest = champion_or_fail(blob_store)
    return {day: window_fingerprint(window) for day, window in _judgeable_windows(blob_store, manifest, days).items()}


def _judgeable_windows(blob_store: BlobStoreResource, manifest: dict, days: list[str]) -> dict[str, list]:
    """Of `days`, those with features and ready labels, each with its judged_window (labels read once a day)."""
    datasets = blob_store.datasets()
    as_of = champion_as_of(manifest)
    states: dict = {}
    windows = {}
    for day in days:
        if datasets.current("features", day) is None:
            continue
        if day not in states:
            states[day] = label_state(datasets, day)
        if states[day][0]:
            windows[day] = judged_window(datasets, day, as_of, states)
    return windows


def _judged_before(context: dg.AssetExecutionContext, day: str, version: int, fingerprint: str) -> bool:
    """Whether the day's latest judgement was by this champion on this window (the same days, same versions)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[day]), limit=1).records
    if not records:
        return False
    stored = records[0].asset_materialization.metadata
    return (stored.get("champion_version") is not None and stored["champion_version"].value == version
            and stored.get("window_labels") is not None and stored["window_labels"].value == fingerprint)


# A day's own metric value by (store, champion version, day, features version, labels version, metric,
# threshold): every window holding the day shows it, and the versions fix its rows and scores.
_DAY_VALUES = KeptDict(256)


def _judge_window(context: dg.AssetExecutionContext, blob_store: BlobStoreResource, day: str) -> dict | None:
    import numpy as np

    from ml_assets.ml.evaluation import compute_metrics
    from ml_assets.ml.performance import holdout_standard_error, window_performance, window_table

    datasets = blob_store.datasets()
    ready, coverage, labels_version, why = label_state(datasets, day)
    if not ready:
        # Not a failure: automation may ask before the labels settle; their landing asks again.
        context.log.info(f"{day} not judged yet: {why}")
        return None
    if datasets.current("features", day) is None:
        raise permanent_failure(f"features has no data for {day}")
    version, manifest = champion_or_fail(blob_store)
    as_of = champion_as_of(manifest)
    inside = bool(as_of and day <= as_of)
    judged = judged_window(datasets, day, as_of, {day: (ready, coverage, labels_version, why)})
    fingerprint = window_fingerprint(judged)
    if FEED is not None and _judged_before(context, day, version, fingerprint):
        # A feed day re-materializes every labels day it reaches, changed or not: only a changed window is re-judged.
        context.log.info(f"{day} not re-judged: champion v{version} already judged this window ({fingerprint})")
        return None
    window, per_day_rows, ys, ps = [], [], [], []
    for d, d_coverage, d_version, features_version in judged:
        y, p = day_labelled_scores(blob_store, version, manifest, d, d_version)
        window.append(d)
        ys.append(y)
        ps.append(p)
        value_key = (datasets.blobs.location, version, d, features_version, d_version, PERFORMANCE.metric,
                     SPEC.promotion.decision_threshold)
        if value_key not in _DAY_VALUES:
            _DAY_VALUES[value_key] = getattr(compute_metrics(y, p, SPEC.promotion.decision_threshold),
                                             PERFORMANCE.metric) if y.size else None
        value = _DAY_VALUES[value_key]
        estimate = _stored_estimate(blob_store, d, version) or {}
        per_day_rows.append({"day": d, "rows": int(y.size), "positives": int(y.sum()), "coverage": d_coverage,
                             "value": value, "estimate": estimate.get("expected"),
                             "estimate_low": estimate.get("low"), "estimate_high": estimate.get("high")})
    holdout_metrics = manifest["metrics"]["holdout"]
    result = window_performance(
        np.concatenate(ys), np.concatenate(ps), metric=PERFORMANCE.metric,
        holdout_value=holdout_metrics.get(PERFORMANCE.metric), max_drop=PERFORMANCE.max_drop,
        confidence=PERFORMANCE.confidence, rule=PERFORMANCE.rule, min_rows=PERFORMANCE.min_rows,
        min_class_rows=PERFORMANCE.min_class_rows, threshold=SPEC.promotion.decision_threshold, days=window,
        holdout_se=holdout_standard_error(PERFORMANCE.metric, holdout_metrics))
    today = per_day_rows[-1]
    na = "n/a"
    return {
        "champion_version": version, "metric": PERFORMANCE.metric,
        "live": result.live if result.live is not None else na, "holdout": result.holdout,
        "low": result.low if result.low is not None else na, "high": result.high if result.high is not None else na,
        "drop": result.drop if result.drop is not None else na,
        "drop_low": result.drop_low if result.drop_low is not None else na,
        "drop_high": result.drop_high if result.drop_high is not None else na,
        "max_drop": result.max_drop, "confidence": PERFORMANCE.confidence, "rule": PERFORMANCE.rule,
        "judged": result.judged, "flagged": result.flagged, "rows": result.rows, "positives": result.positives,
        "summary": result.summary, "in_champion_window": inside,
        "window": f"{window[0]}..{window[-1]} ({len(window)} days)", "window_days": dg.MetadataValue.json(window),
        "day_rows": today["rows"], "day_value": today["value"] if today["value"] is not None else na,
        "labels_version": labels_version or na, "window_labels": fingerprint, "label_coverage": coverage if coverage is not None else na,
        "estimate": today["estimate"] if today["estimate"] is not None else na,
        "performance_table": dg.MetadataValue.md(window_table(result, per_day_rows)),
    }


def labels_read(feed, performance) -> dg.TimeWindowPartitionMapping:
    """The labels days live_performance of day D depends on. With a label feed, its whole trailing window
    D-(window_days-1)..D: Dagster maps a new labels version of day X down to every window holding X
    (X..X+window_days-1), so a late label re-judges each of them, not only X. Without one (the lag is
    simulated, labels never land late): D..D+label_lag_days, so D waits for the labels that settle it."""
    if feed is not None:
        return dg.TimeWindowPartitionMapping(start_offset=1 - performance.window_days, end_offset=0,
                                             allow_nonexistent_upstream_partitions=True)
    return dg.TimeWindowPartitionMapping(start_offset=0, end_offset=performance.label_lag_days,
                                         allow_nonexistent_upstream_partitions=True)


def judge_condition(feed) -> dg.AutomationCondition:
    """When live_performance of a day is requested. Both ways, the day's run must not race the run of labels
    it reads: requested in the same tick they would be two runs, and the day would be judged on the old labels."""
    not_racing = ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
    if feed is None:
        return (on_day_changed_ignoring(deployed_model) & not_racing).with_label(
            "the day's data and its settling labels landed, and no dependency is being requested")
    # A window's other days may have no labels (a day without data, a day held back): only the day's own
    # features must exist. Whether its own labels reached their coverage is read from the store by the
    # asset (Dagster cannot see it): a day still filling up records nothing, and its settling asks again.
    return (
        dg.AutomationCondition.any_deps_updated().ignore(dg.AssetSelection.assets(deployed_model)).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing().allow(dg.AssetSelection.assets(features))
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & no_failed_blocking_check_upstream
        & not_racing
    ).with_label("the labels of a day of its window or the day's features changed, and nothing it reads is being requested")


@dg.asset(group_name=MONITORING_GROUP, partitions_def=daily_partitions, kinds={"python"}, code_version="2",
          deps=[features, dg.AssetDep(labels, partition_mapping=labels_read(FEED, PERFORMANCE)), deployed_model],
          automation_condition=judge_condition(FEED), retry_policy=STORE_RETRY, output_required=False)
def live_performance(context: dg.AssetExecutionContext, blob_store: BlobStoreResource):
    """The champion's metric over the trailing window of labelled days, with its interval, against its holdout value."""
    days = list(context.partition_keys)
    scored: set[str] = set()

    def judge(day: str) -> dict | None:
        if len(days) > 1 and day not in scored:
            # A range: the windows of the next window_days days scored in one model call.
            block = days[days.index(day):][:PERFORMANCE.window_days]
            scored.update(block)
            _prefetch_scores(blob_store, block)
        return _judge_window(context, blob_store, day)

    yield from per_day(context, judge)


def _prefetch_scores(blob_store: BlobStoreResource, block: list[str]) -> None:
    """Score every day the windows of `block` judge in one model call (prefetch_labelled_scores); only a
    speed-up: each day's judgement reads (or computes) its scores as before, and reports what is missing."""
    try:
        version, manifest = champion_or_fail(blob_store)
    except dg.Failure:
        return  # every day of the block fails with it
    wanted = {d: labels_version for window in _judgeable_windows(blob_store, manifest, block).values()
              for d, _, labels_version, _ in window}
    prefetch_labelled_scores(blob_store, version, manifest, wanted)


def _estimate_day(blob_store: BlobStoreResource, day: str) -> dict:
    from ml_assets.ml.cbpe import estimate
    from ml_assets.ml.performance import holdout_standard_error, judge_estimate

    version, manifest = champion_or_fail(blob_store)
    probabilities = day_probabilities(blob_store, version, manifest, day)
    if len(probabilities) == 0:
        raise permanent_failure(f"features of {day} hold no rows to estimate performance on")
    threshold = SPEC.promotion.decision_threshold
    est = estimate(probabilities, threshold=threshold, samples=PERFORMANCE.estimate_samples,
                   confidence=PERFORMANCE.confidence)
    holdout_metrics = manifest["metrics"]["holdout"]
    result = judge_estimate(est, metric=PERFORMANCE.metric, holdout_value=holdout_metrics.get(PERFORMANCE.metric),
                            max_drop=PERFORMANCE.max_drop, rule=PERFORMANCE.rule, day=day,
                            holdout_se=holdout_standard_error(PERFORMANCE.metric, holdout_metrics))
    as_of = champion_as_of(manifest)
    blob_store.put_json(estimate_blob(day), {
        "day": day, "champion_version": version, "metric": PERFORMANCE.metric, "expected": result.live,
        "low": result.low, "high": result.high, "estimate": est.as_dict(), "verdict": result.as_dict(),
    })
    na = "n/a"

    def band(value, low, high) -> str:
        return na if value is None else f"{value:.4f} [{low:.4f}, {high:.4f}]"

    table = "\n".join([
        "| metric | CBPE estimate [band] | holdout |", "|---|---|---|",
        f"| accuracy | {band(est.accuracy, est.accuracy_low, est.accuracy_high)} | "
        f"{manifest['metrics']['holdout'].get('accuracy', na)} |",
        f"| roc_auc | {band(est.roc_auc, est.roc_auc_low, est.roc_auc_high)} | "
        f"{manifest['metrics']['holdout'].get('roc_auc', na)} |",
    ])
    return {
        "champion_version": version, "metric": PERFORMANCE.metric,
        "expected": result.live if result.live is not None else na,
        "low": result.low if result.low is not None else na, "high": result.high if result.high is not None else na,
        "holdout": result.holdout, "drop": result.drop if result.drop is not None else na,
        "drop_low": result.drop_low if result.drop_low is not None else na,
        "drop_high": result.drop_high if result.drop_high is not None else na,
        "max_drop": result.max_drop, "rule": PERFORMANCE.rule, "confidence": PERFORMANCE.confidence, "judged": result.judged, "flagged": result.flagged,
        "summary": "CBPE estimate: " + result.summary, "rows": est.n, "in_champion_window": bool(as_of and day <= as_of),
        "expected_accuracy": est.accuracy, "expected_roc_auc": est.roc_auc if est.roc_auc is not None else na,
        "estimate_table": dg.MetadataValue.md(table),
    }


@dg.asset(group_name=MONITORING_GROUP, partitions_def=daily_partitions, deps=[features, deployed_model],
          kinds={"python"}, code_version="1", automation_condition=on_day_changed_ignoring(deployed_model),
          retry_policy=STORE_RETRY, output_required=False)
def estimated_performance(context: dg.AssetExecutionContext, blob_store: BlobStoreResource):
    """The champion's expected accuracy and ROC AUC on the day from its calibrated probabilities alone (CBPE), with a band."""
    yield from per_day(context, lambda day: _estimate_day(blob_store, day))
