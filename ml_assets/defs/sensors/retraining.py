"""Sensors that turn monitoring into training runs: drift, live performance, and a cron fallback.

Each sensor reads the new materializations of its monitoring asset (a storage-id cursor, so every
report is read exactly once and none is skipped), keeps the latest verdict per day in its cursor
(a re-landed day replaces its verdict instead of counting twice), and asks ``ml_assets.ml.triggers``
whether the streak of flagged days is long enough and outside the cooldown of the previous
retrain. The cooldown comes from the run history (the latest run tagged as a retrain), so it holds
across sensors, restarts and cursor resets.
"""

import json

import dagster as dg

from ml_assets.defs.assets.monitoring import (
    champion_as_of,
    estimated_performance,
    feature_drift,
    live_performance,
)
from ml_assets.defs.assets.training import MODEL_NAME
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.jobs import training_job
from ml_assets.ml.labels import settled_days
from ml_assets.ml.triggers import DayVerdict, TriggerDecision, cooldown_end, decide
from ml_assets.resources.blob_store import BlobStoreResource

RETRAIN_TAG = "ml_assets/retrain"
TRIGGER_TAG = "ml_assets/trigger"
AS_OF_TAG = "ml_assets/as_of"
TRIGGER_DAYS_TAG = "ml_assets/trigger_days"
REASON_TAG = "ml_assets/trigger_reason"
RETRAINING = SPEC.monitoring.retraining
PERFORMANCE = SPEC.monitoring.performance
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def last_retrain(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={RETRAIN_TAG: "true"}), limit=1)
    return runs[0] if runs else None


def cooldown_start(run: dg.DagsterRun | None) -> str | None:
    """The day a retrain's cooldown counts from: the last judged day that triggered it, or its as-of day when
    later. With a label feed a retrain trains as of the last settled day, weeks before the trigger: counted from
    there, the cooldown would already be over and every further flagged day would request another retrain."""
    if run is None:
        return None
    days = [d for d in [run.tags.get(AS_OF_TAG), *run.tags.get(TRIGGER_DAYS_TAG, "").split(",")] if d]
    return max(days) if days else None


def retrain_in_progress(run: dg.DagsterRun | None) -> str | None:
    """Why not to request another retrain now, if `run` (the latest) has not finished."""
    if run is None or run.status in FINISHED:
        return None
    return f"retraining run {run.run_id} ({run.tags.get(TRIGGER_TAG)}) is still in progress"


def retrain_request(trigger: str, as_of: str, reason: str, days: tuple[str, ...] = (),
                    champion: int | None = None) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{trigger}:{as_of}:champion-v{champion if champion is not None else 'none'}",
        job_name=training_job.name,
        run_config={"ops": {"training_set": {"config": {"as_of": as_of}}}},
        tags={RETRAIN_TAG: "true", TRIGGER_TAG: trigger, AS_OF_TAG: as_of,
              TRIGGER_DAYS_TAG: ",".join(days), REASON_TAG: reason[:400]},
    )


def _read_new_reports(instance: dg.DagsterInstance, key: dg.AssetKey, state: dict, verdict_of,
                      until_day: str | None = None, slot: str = "") -> list[str]:
    """Fold the materializations after the cursor into state["verdicts" + slot]; the days read, in order.

    ``until_day`` (the replay judging day by day over a range run): stop before the first report of a
    later day and leave the cursor there, so the next tick reads it.
    """
    after, verdicts = f"after{slot}", state.setdefault(f"verdicts{slot}", {})
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, after_storage_id=state.get(after)), limit=10_000, ascending=True
    ).records
    days = []
    for record in records:
        materialization = record.asset_materialization
        if until_day is not None and materialization.partition and materialization.partition > until_day:
            break
        verdict = verdict_of(materialization.metadata)
        if verdict is not None and materialization.partition:
            verdicts[materialization.partition] = verdict
            days.append(materialization.partition)
        state[after] = record.storage_id
    return days


def _tick(context: dg.SensorEvaluationContext, blob_store: BlobStoreResource, *, signal: str, trigger: str,
          key: dg.AssetKey, verdict_of, on_no_champion=None, until_day: str | None = None, estimates=None):
    """One evaluation; ``estimates`` = (asset key, verdict_of) of a signal counted on days the main one has
    not judged yet (the CBPE estimate before labels land); a realised verdict replaces it."""
    state = json.loads(context.cursor) if context.cursor else {"after": None, "verdicts": {}}
    previously = set(state["verdicts"])
    read = _read_new_reports(context.instance, key, state, verdict_of, until_day)
    if estimates is not None:
        read += _read_new_reports(context.instance, estimates[0], state, estimates[1], until_day, slot="_estimated")
    news = f"{len(read)} new report(s) ({len(set(read) & previously)} re-judged day(s))" if read else "no new report"
    store = blob_store.models()
    champion = store.champion(MODEL_NAME).version

    def result(decision: TriggerDecision | str, request: dg.RunRequest | None = None) -> dg.SensorResult:
        reason = decision if isinstance(decision, str) else decision.reason
        cursor = json.dumps(state, sort_keys=True)
        if request is None:
            return dg.SensorResult(skip_reason=f"{news}; {reason}", cursor=cursor)
        context.log.info(f"{news}; requesting a retrain: {reason}")
        return dg.SensorResult(run_requests=[request], cursor=cursor)

    previous = last_retrain(context.instance)
    if busy := retrain_in_progress(previous):
        return result(busy)
    cooldown_until = cooldown_end(cooldown_start(previous), RETRAINING.cooldown_days)
    if champion is None:
        if on_no_champion is None:
            return result(f"{signal}: no champion yet, nothing to monitor")
        return on_no_champion(result, cooldown_until)

    as_of = champion_as_of(store.get(MODEL_NAME, champion).manifest)
    # Only this champion's reports on days it never saw count; the rest leave the cursor.
    for slot in ("verdicts", "verdicts_estimated"):
        if slot in state:
            state[slot] = {day: v for day, v in state[slot].items() if v[2] == champion and (as_of is None or day > as_of)}
    merged = {**state.get("verdicts_estimated", {}), **state["verdicts"]}
    verdicts = {day: DayVerdict(day, bool(v[0]), v[1]) for day, v in merged.items()}
    decision = decide(verdicts, signal=signal, debounce_days=RETRAINING.debounce_days, cooldown_until=cooldown_until)
    if not decision.request:
        return result(decision)
    labelled = _settled(blob_store.datasets())
    train_as_of = min(decision.as_of, labelled[-1]) if labelled else decision.as_of
    return result(decision, retrain_request(trigger, train_as_of, decision.reason, decision.days, champion))


def _drift_verdict(metadata) -> list | None:
    if "drifted" not in metadata:
        return None
    return [bool(metadata["drifted"].value), str(metadata["summary"].value), int(metadata["reference_version"].value)]


def _performance_verdict(metadata) -> list | None:
    if "judged" not in metadata or not metadata["judged"].value:
        return None  # too few labelled rows, or an undefined metric: reported, never counted
    return [bool(metadata["flagged"].value), str(metadata["summary"].value), int(metadata["champion_version"].value)]


def _settled(datasets) -> list[str]:
    """Labelled days a model can use: with a label feed, those whose outcomes reached the feed's coverage."""
    return settled_days(SPEC, datasets, datasets.partitions("labels"))


def _bootstrap(blob_store: BlobStoreResource):
    """Before any champion: train once a full window and holdout are labelled (and clustered, if they can be)."""
    needed = SPEC.training.window_days + SPEC.training.holdout_days

    def on_no_champion(result, cooldown_until):
        datasets = blob_store.datasets()
        labelled = _settled(datasets)
        if len(labelled) < needed:
            return result(f"no champion yet; {len(labelled)} of {needed} labelled days needed for the first model")
        # The promotion gate slices by cluster: wait for the days' clusters, unless too few feature days
        # exist for the cluster model to be fitted at all (then the model trains without them).
        if len(datasets.partitions("features")) >= SPEC.clustering.window_days:
            unclustered = sorted(set(labelled[-needed:]) - set(datasets.partitions("clusters")))
            if unclustered:
                return result(f"no champion yet; waiting for the clusters of {len(unclustered)} of the {needed} "
                              f"days to train on ({unclustered[0]}..{unclustered[-1]})")
        latest = labelled[-1]
        if cooldown_until is not None and latest <= cooldown_until:
            return result(f"no champion yet; the previous attempt's cooldown lasts until {cooldown_until}")
        reason = f"bootstrap: no champion yet and {len(labelled)} labelled days (needed {needed})"
        return result(reason, retrain_request("bootstrap", latest, reason))

    return on_no_champion


@dg.sensor(name="retrain_on_drift", job=training_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Retrains when the share of drifted features stays at or over its threshold for "
                       f"{RETRAINING.debounce_days} consecutive days; trains the first model once enough days are labelled.")
def retrain_on_drift_sensor(context: dg.SensorEvaluationContext, blob_store: BlobStoreResource):
    return drift_tick(context, blob_store)


def drift_tick(context: dg.SensorEvaluationContext, blob_store: BlobStoreResource, until_day: str | None = None):
    """The drift sensor's evaluation; ``until_day``: judged as of that day (the replay over range runs)."""
    return _tick(context, blob_store, signal="feature drift", trigger="drift", key=feature_drift.key,
                 verdict_of=_drift_verdict, on_no_champion=_bootstrap(blob_store), until_day=until_day)


@dg.sensor(name="retrain_on_performance", job=training_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description=f"Retrains when the champion's live {PERFORMANCE.metric} over the trailing "
                       f"{PERFORMANCE.window_days} labelled days is significantly more than {PERFORMANCE.max_drop} "
                       f"below its holdout value (rule {PERFORMANCE.rule}, {PERFORMANCE.confidence:.0%} interval) on "
                       f"{RETRAINING.debounce_days} consecutive days"
                       + ("; CBPE estimates count until labels land." if PERFORMANCE.use_estimate else "."))
def retrain_on_performance_sensor(context: dg.SensorEvaluationContext, blob_store: BlobStoreResource):
    return performance_tick(context, blob_store)


def performance_tick(context: dg.SensorEvaluationContext, blob_store: BlobStoreResource, until_day: str | None = None):
    """The performance sensor's evaluation; ``until_day``: judged as of that day (the replay over range runs)."""
    estimates = (estimated_performance.key, _performance_verdict) if PERFORMANCE.use_estimate else None
    return _tick(context, blob_store, signal="live performance", trigger="performance", key=live_performance.key,
                 verdict_of=_performance_verdict, until_day=until_day, estimates=estimates)


@dg.schedule(name="retrain_fallback", job=training_job, cron_schedule=RETRAINING.fallback_cron or "0 6 * * 1",
             execution_timezone=SPEC.timezone,
             default_status=dg.DefaultScheduleStatus.RUNNING if RETRAINING.fallback_cron else dg.DefaultScheduleStatus.STOPPED,
             description="Unconditional retrain on a cron (spec monitoring.retraining.fallback_cron; off when unset).")
def retrain_fallback_schedule(context: dg.ScheduleEvaluationContext, blob_store: BlobStoreResource):
    labelled = _settled(blob_store.datasets())
    if not labelled:
        return dg.SkipReason("no labelled day to train on")
    if busy := retrain_in_progress(last_retrain(context.instance)):
        return dg.SkipReason(busy)
    reason = f"scheduled fallback retrain ({RETRAINING.fallback_cron or 'manual start'})"
    champion = blob_store.models().champion(MODEL_NAME).version
    return retrain_request("schedule", labelled[-1], reason, champion=champion)
