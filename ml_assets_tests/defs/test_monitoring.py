"""Monitoring assets and retraining sensors on a real store, a real instance and a real sklearn champion.

Feature and label tables are written straight into the dataset store (flights-shaped draws with a
known label rule), so these tests need no Spark; the model is really trained, on tiny data.
"""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ml_assets.defs.assets.monitoring import (
    drift_blob,
    feature_drift,
    live_performance,
    reference_blob,
    reference_stats,
)
from ml_assets.defs.assets.training import MODEL_NAME
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.sensors.reports import compose_cycle_report
from ml_assets.defs.sensors.retraining import (
    AS_OF_TAG,
    RETRAIN_TAG,
    TRIGGER_DAYS_TAG,
    TRIGGER_TAG,
    retrain_fallback_schedule,
    retrain_on_drift_sensor,
    retrain_on_performance_sensor,
)
from ml_assets.ml.evaluation import compute_metrics
from ml_assets.ml.models import FeatureColumns, SklearnParams, save_model, train_sklearn
from ml_assets_tests.ml.test_drift import flights_like

TRAIN = [f"2013-01-{d:02d}" for d in range(1, 15)]
HOLDOUT = [f"2013-01-{d:02d}" for d in range(15, 22)]
ROWS = 400
SHIFTED = ("distance", "temp", "dewp", "humid", "wind_speed", "pressure", "sched_dep_hour")


def day_frames(day: str, seed: int, shift: bool = False, flip_labels: bool = False):
    """(features, labels) of one day; `shift` moves 7 of 14 features, `flip_labels` inverts the label rule."""
    rng = np.random.default_rng(seed)
    frame = flights_like(ROWS, seed)
    if shift:
        for column in SHIFTED:
            frame[column] = frame[column] + 3 * frame[column].std()
    frame["flight"] = np.arange(ROWS, dtype="int64")
    frame["time_hour"] = pd.Timestamp(day) + pd.to_timedelta(np.arange(ROWS), unit="min")
    frame["date"] = dt.date.fromisoformat(day)
    logit = (frame["temp"] - 55) / 8 + (frame["sched_dep_hour"] - 14) / 3
    label = rng.random(ROWS) < 1 / (1 + np.exp(-logit))
    keys = [*SPEC.key_columns, "date"]
    labels = frame[keys].assign(**{SPEC.label.name: (~label if flip_labels else label).astype("int32")})
    return frame, labels


def publish_day(store, tmp_path: Path, day: str, seed: int, tables=("features", "labels"), **kwargs) -> None:
    """Publish the day's tables; the same seed gives the same rows, so labels can land later."""
    frames = dict(zip(("features", "labels"), day_frames(day, seed, **kwargs), strict=True))
    for table in tables:
        folder = tmp_path / "staging" / table / day / str(seed)
        folder.mkdir(parents=True)
        frames[table].to_parquet(folder / "part-0.parquet", index=False)
        store.datasets().publish(table, day, folder)


def record_retrain_run(instance, tags: dict) -> str:
    """A finished run carrying retraining tags, as the training job would leave behind."""

    @dg.asset
    def stand_in_training_run():
        return 1

    return dg.materialize([stand_in_training_run], instance=instance, tags=tags).run_id


def publish_champion(store, tmp_path: Path, train: list[str], holdout: list[str], seed: int = 0) -> int:
    """Train sklearn on `train`, score `holdout`, publish it and make it the champion."""
    frames = [day_frames(day, seed + i) for i, day in enumerate(train + holdout)]
    columns = FeatureColumns.from_spec(SPEC)
    train_x = pd.concat([f for f, _ in frames[: len(train)]])
    train_y = pd.concat([lab for _, lab in frames[: len(train)]])[SPEC.label.name].to_numpy()
    model = train_sklearn(train_x, train_y, columns, SklearnParams(max_iter=30), seed=0)
    holdout_x = pd.concat([f for f, _ in frames[len(train):]])
    holdout_y = pd.concat([lab for _, lab in frames[len(train):]])[SPEC.label.name].to_numpy()
    metrics = compute_metrics(holdout_y, model.predict_proba(holdout_x)).as_dict()
    folder = tmp_path / f"model-{seed}"
    save_model(model, folder)
    models = store.models()
    version = models.publish(MODEL_NAME, folder, {
        "flavor": "sklearn", "columns": {"numeric": columns.numeric, "categorical": columns.categorical},
        "data_window": {"train_days": train, "holdout_days": holdout}, "metrics": {"holdout": metrics},
    }).version
    models.promote(MODEL_NAME, version, expected=models.champion(MODEL_NAME).version, reason="test")
    return version


@pytest.fixture
def one_day_windows(monkeypatch):
    """Score each day alone, so a shift is visible on the day it starts."""
    from ml_assets.defs.assets import monitoring

    monkeypatch.setattr(monitoring, "DRIFT", SPEC.monitoring.drift.model_copy(update={"current_days": 1}))


@pytest.fixture
def champion_store(local_resource, tmp_path, one_day_windows):
    """Train and holdout days published, with a champion trained on them."""
    for i, day in enumerate(TRAIN + HOLDOUT):
        publish_day(local_resource, tmp_path, day, seed=i)
    version = publish_champion(local_resource, tmp_path, TRAIN, HOLDOUT)
    return local_resource, version


def run(assets, store, instance, partition_key=None, raise_on_error=True):
    return dg.materialize(assets, resources={"blob_store": store}, instance=instance,
                          partition_key=partition_key, raise_on_error=raise_on_error)


def metadata(result, asset):
    (materialization,) = result.asset_materializations_for_node(asset.key.to_user_string())
    return {k: v.value for k, v in materialization.metadata.items()}


def tick(sensor, instance, store, cursor=None):
    with dg.build_sensor_context(instance=instance, resources={"blob_store": store}, cursor=cursor) as context:
        return sensor(context)


# --- reference statistics --------------------------------------------------------------------


@pytest.mark.integration
def test_reference_is_computed_once_per_champion_and_reused(store_resource, tmp_path, instance, monkeypatch,
                                                           one_day_windows):
    for i, day in enumerate(TRAIN + HOLDOUT + ["2013-01-22", "2013-01-23"]):
        publish_day(store_resource, tmp_path, day, seed=i)
    version = publish_champion(store_resource, tmp_path, TRAIN, HOLDOUT)
    first = metadata(run([reference_stats], store_resource, instance), reference_stats)
    assert first["reused"] is False and first["champion_version"] == version
    assert first["window"] == f"{TRAIN[0]}..{TRAIN[-1]} ({len(TRAIN)} days)"
    stored = store_resource.blob_store().info(reference_blob(version))

    def never(*args, **kwargs):
        raise AssertionError("reference statistics recomputed")

    monkeypatch.setattr("ml_assets.ml.drift.reference_stats", never)
    assert metadata(run([reference_stats], store_resource, instance), reference_stats)["reused"] is True
    for day in ("2013-01-22", "2013-01-23"):
        drift = metadata(run([feature_drift], store_resource, instance, partition_key=day), feature_drift)
        assert drift["reference_version"] == version and drift["current_rows"] == ROWS
    assert store_resource.blob_store().info(reference_blob(version)).etag == stored.etag

    # A new champion gets its own reference, computed from its own window.
    monkeypatch.undo()
    newer = publish_champion(store_resource, tmp_path, TRAIN[7:] + HOLDOUT[:3], HOLDOUT[3:], seed=50)
    second = metadata(run([reference_stats], store_resource, instance), reference_stats)
    assert second["reused"] is False and second["champion_version"] == newer
    assert second["window"] == f"{TRAIN[7]}..{HOLDOUT[2]} (10 days)"


def test_monitoring_fails_clearly_before_a_champion(local_resource, tmp_path, instance):
    publish_day(local_resource, tmp_path, "2013-01-22", seed=1)
    result = run([reference_stats], local_resource, instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "has no champion yet" in failure.step_failure_data.user_failure_data.description


# --- drift and its sensor ---------------------------------------------------------------------


@pytest.mark.integration
def test_injected_shift_fires_the_drift_sensor_and_unshifted_days_do_not(champion_store, tmp_path, instance):
    store, version = champion_store
    run([reference_stats], store, instance)
    calm = [f"2013-01-{d:02d}" for d in range(22, 27)]
    for i, day in enumerate(calm):
        publish_day(store, tmp_path, day, seed=100 + i)
        drift = metadata(run([feature_drift], store, instance, partition_key=day), feature_drift)
        assert drift["drifted"] is False and drift["drifted_share"] < 0.2, drift["summary"]
    result = tick(retrain_on_drift_sensor, instance, store)
    assert not result.run_requests
    assert "5 new report(s)" in result.skip_reason.skip_message
    assert "0 of 3 consecutive flagged day(s)" in result.skip_reason.skip_message

    shifted = ["2013-01-27", "2013-01-28", "2013-01-29"]
    cursor = result.cursor
    for i, day in enumerate(shifted):
        publish_day(store, tmp_path, day, seed=200 + i, shift=True)
        drift = metadata(run([feature_drift], store, instance, partition_key=day), feature_drift)
        assert drift["drifted"] is True and set(SHIFTED) <= set(drift["drifted_features"]), drift["summary"]
    document = store.get_json(drift_blob("2013-01-29"))
    assert document["reference_version"] == version and document["drifted"] is True
    result = tick(retrain_on_drift_sensor, instance, store, cursor)
    (request,) = result.run_requests
    assert request.run_key == f"drift:2013-01-29:champion-v{version}"
    assert request.job_name == "training_job"
    assert request.run_config == {"ops": {"training_set": {"config": {"as_of": "2013-01-29"}}}}
    assert request.tags[TRIGGER_TAG] == "drift" and request.tags[TRIGGER_DAYS_TAG] == ",".join(shifted)


@pytest.mark.integration
def test_drift_sensor_cursor_scenarios(champion_store, tmp_path, instance):
    store, _version = champion_store
    run([reference_stats], store, instance)
    # First tick, before any report: nothing to judge.
    first = tick(retrain_on_drift_sensor, instance, store)
    assert "no new report" in first.skip_reason.skip_message and "no day judged yet" in first.skip_reason.skip_message

    # Several new days in one tick: each read once.
    days = ["2013-01-22", "2013-01-23", "2013-01-24"]
    for i, day in enumerate(days):
        publish_day(store, tmp_path, day, seed=300 + i, shift=day != "2013-01-23")
        run([feature_drift], store, instance, partition_key=day)
    several = tick(retrain_on_drift_sensor, instance, store, first.cursor)
    assert "3 new report(s) (0 re-judged day(s))" in several.skip_reason.skip_message
    assert sorted(json.loads(several.cursor)["verdicts"]) == days

    # Nothing new: the same verdicts, no request, nothing read twice.
    idle = tick(retrain_on_drift_sensor, instance, store, several.cursor)
    assert idle.skip_reason.skip_message.startswith("no new report")
    assert json.loads(idle.cursor) == json.loads(several.cursor)

    # A re-landed day replaces its verdict (judged on its new data), and completes the streak.
    publish_day(store, tmp_path, "2013-01-23", seed=399, shift=True)
    run([feature_drift], store, instance, partition_key="2013-01-23")
    relanded = tick(retrain_on_drift_sensor, instance, store, idle.cursor)
    (request,) = relanded.run_requests
    assert request.tags[TRIGGER_DAYS_TAG] == ",".join(days)
    assert json.loads(relanded.cursor)["verdicts"]["2013-01-23"][0] is True


@pytest.mark.integration
def test_cooldown_after_a_retrain_holds_the_next_trigger(champion_store, tmp_path, instance, monkeypatch):
    store, _version = champion_store
    run([reference_stats], store, instance)
    days = [f"2013-01-{d:02d}" for d in range(22, 26)]
    for i, day in enumerate(days):
        publish_day(store, tmp_path, day, seed=400 + i, shift=True)
        run([feature_drift], store, instance, partition_key=day)

    # A finished retraining run as of 2013-01-22 starts a 14-day cooldown (until 2013-02-05).
    record_retrain_run(instance, {RETRAIN_TAG: "true", TRIGGER_TAG: "drift", AS_OF_TAG: "2013-01-22"})
    held = tick(retrain_on_drift_sensor, instance, store)
    assert not held.run_requests
    assert "cooldown lasts until 2013-02-05" in held.skip_reason.skip_message
    monkeypatch.setattr("ml_assets.defs.sensors.retraining.RETRAINING",
                        SPEC.monitoring.retraining.model_copy(update={"cooldown_days": 1}))
    released = tick(retrain_on_drift_sensor, instance, store, held.cursor)
    assert released.run_requests[0].tags[AS_OF_TAG] == "2013-01-25"


def test_bootstrap_waits_for_a_full_window(local_resource, tmp_path, instance):
    needed = SPEC.training.window_days + SPEC.training.holdout_days
    days = [(dt.date(2013, 1, 1) + dt.timedelta(days=i)).isoformat() for i in range(needed)]
    for i, day in enumerate(days[:-1]):
        publish_day(local_resource, tmp_path, day, seed=i)
    waiting = tick(retrain_on_drift_sensor, instance, local_resource)
    assert f"{needed - 1} of {needed} labelled days" in waiting.skip_reason.skip_message
    publish_day(local_resource, tmp_path, days[-1], seed=99)
    # Enough feature days for a cluster model: the first model also waits for the days' clusters.
    unclustered = tick(retrain_on_drift_sensor, instance, local_resource, waiting.cursor)
    assert f"waiting for the clusters of {needed} of the {needed} days" in unclustered.skip_reason.skip_message
    for day in days:
        folder = tmp_path / "staging" / "clusters" / day
        folder.mkdir(parents=True)
        pd.DataFrame({"cluster_id": [0]}).to_parquet(folder / "part-0.parquet", index=False)
        local_resource.datasets().publish("clusters", day, folder)
    (request,) = tick(retrain_on_drift_sensor, instance, local_resource, unclustered.cursor).run_requests
    assert request.tags[TRIGGER_TAG] == "bootstrap" and request.tags[AS_OF_TAG] == days[-1]
    assert request.run_key == f"bootstrap:{days[-1]}:champion-vnone"


# --- live performance and its sensor ----------------------------------------------------------


@pytest.mark.integration
def test_performance_sensor_waits_for_delayed_labels_then_fires(champion_store, tmp_path, instance):
    store, version = champion_store
    lag = SPEC.monitoring.performance.label_lag_days
    assert lag == 1
    days = ["2013-01-22", "2013-01-23", "2013-01-24"]
    for i, day in enumerate(days):
        publish_day(store, tmp_path, day, seed=500 + i, flip_labels=True)
    # The labels of 01-24 are not complete until those of 01-25 exist.
    publish_day(store, tmp_path, "2013-01-25", seed=510, tables=["features"])
    for day in days[:2]:
        judged = metadata(run([live_performance], store, instance, partition_key=day), live_performance)
        assert judged["judged"] is True and judged["flagged"] is True and judged["champion_version"] == version
        assert judged["drop"] > SPEC.monitoring.performance.max_drop
    early = run([live_performance], store, instance, partition_key=days[2])
    assert early.success and not early.get_asset_materialization_events()  # not judged, and not a failure
    assert any("not complete until the labels of 2013-01-25 exist" in (e.message or "")
               for e in instance.all_logs(early.run_id))

    waiting = tick(retrain_on_performance_sensor, instance, store)
    assert not waiting.run_requests
    assert "2 new report(s)" in waiting.skip_reason.skip_message
    assert "2 of 3 consecutive flagged day(s)" in waiting.skip_reason.skip_message

    publish_day(store, tmp_path, "2013-01-25", seed=510, tables=["labels"])
    run([live_performance], store, instance, partition_key=days[2])
    fired = tick(retrain_on_performance_sensor, instance, store, waiting.cursor)
    (request,) = fired.run_requests
    assert request.tags[TRIGGER_TAG] == "performance" and request.tags[TRIGGER_DAYS_TAG] == ",".join(days)
    assert request.run_key == f"performance:2013-01-24:champion-v{version}"


@pytest.mark.integration
def test_days_in_the_champions_own_window_are_not_judged(champion_store, instance):
    store, _version = champion_store
    inside = metadata(run([live_performance], store, instance, partition_key=HOLDOUT[0]), live_performance)
    assert inside["in_champion_window"] is True
    result = tick(retrain_on_performance_sensor, instance, store)
    assert "no day judged yet" in result.skip_reason.skip_message


# --- the report names the trigger -------------------------------------------------------------


@pytest.mark.integration
def test_report_explains_a_drift_trigger_with_figures_and_plot(champion_store, tmp_path, instance):
    store, _version = champion_store
    run([reference_stats], store, instance)
    days = ["2013-01-22", "2013-01-23", "2013-01-24"]
    for i, day in enumerate(days):
        publish_day(store, tmp_path, day, seed=600 + i, shift=True)
        run([feature_drift], store, instance, partition_key=day)
    (request,) = tick(retrain_on_drift_sensor, instance, store).run_requests

    report = compose_cycle_report(instance, record_retrain_run(instance, request.tags), store)
    assert report.trigger.startswith("drift (as of 2013-01-24): feature drift: flagged on 3 consecutive day(s)")
    for day in days:
        assert f"| {day} | 7/14 features drifted" in report.trigger_details
    assert "| temp | numeric | psi |" in report.trigger_details
    assert report.plots["drift"].startswith(b"\x89PNG")


# --- the cron fallback ------------------------------------------------------------------------


def test_cron_fallback_retrains_as_of_the_latest_labelled_day(local_resource, tmp_path, instance):
    def evaluate():
        with dg.build_schedule_context(instance=instance, resources={"blob_store": local_resource}) as context:
            return retrain_fallback_schedule(context)

    assert "no labelled day" in evaluate().skip_message
    for i, day in enumerate(["2013-01-04", "2013-01-05"]):
        publish_day(local_resource, tmp_path, day, seed=i)
    request = evaluate()
    assert request.tags[TRIGGER_TAG] == "schedule" and request.tags[AS_OF_TAG] == "2013-01-05"
    assert request.run_config == {"ops": {"training_set": {"config": {"as_of": "2013-01-05"}}}}
