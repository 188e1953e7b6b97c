"""live_performance over a trailing window (interval, label coverage), estimated_performance (CBPE), range runs
and the performance sensor judged as of a day or on estimates; a real store, instance and sklearn champion."""

import dagster as dg
import pytest

from ml_assets.defs.assets.performance import estimate_blob, estimated_performance, live_performance
from ml_assets.defs.assets.training import MODEL_NAME
from ml_assets.defs.sensors import retraining
from ml_assets.defs.sensors.retraining import (
    TRIGGER_TAG,
    performance_tick,
    retrain_on_performance_sensor,
)
from ml_assets.ml.labels import DayLabelStats, write_label_stats
from ml_assets.spec.labels import LabelFeedSpec
from ml_assets.storage.model_store import MANIFEST_KEYS
from ml_assets_tests.defs import test_monitoring as base
from ml_assets_tests.defs.test_monitoring import metadata, publish_day, tick

# The same champion and days as test_monitoring (fixtures by name).
champion_store, one_day_windows = base.champion_store, base.one_day_windows

WEEK = [f"2013-01-{d}" for d in range(22, 29)]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
RANGE = {RANGE_START: WEEK[0], RANGE_END: WEEK[-1]}


def run(assets, store, instance, partition_key=None, tags=None):
    """One in-process run: a day (partition_key) or a range of days (the range tags, as the replay runs them)."""
    return dg.materialize(assets, resources={"blob_store": store}, instance=instance, partition_key=partition_key,
                          tags=tags)


def day_reports(instance, asset) -> dict[str, dict]:
    """The latest materialization metadata per day, plain values."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset.key), limit=1000).records
    out = {}
    for record in records:  # newest first
        m = record.asset_materialization
        out.setdefault(m.partition, {k: v.value for k, v in m.metadata.items()})
    return out


@pytest.fixture
def labelled_week(champion_store, tmp_path):
    """A week after the champion's holdout; from 01-25 on the labels are inverted (a real loss); 01-29 settles 01-28."""
    store, version = champion_store
    for i, day in enumerate(WEEK):
        publish_day(store, tmp_path, day, seed=600 + i, flip_labels=day >= "2013-01-25")
    publish_day(store, tmp_path, "2013-01-29", seed=700)
    return store, version


@pytest.mark.integration
def test_a_range_run_judges_each_day_on_its_window_next_to_the_cbpe_estimate(labelled_week, instance):
    store, version = labelled_week
    assert run([estimated_performance], store, instance, tags=RANGE).success
    estimates = day_reports(instance, estimated_performance)
    assert sorted(estimates) == WEEK and all(e["champion_version"] == version for e in estimates.values())
    assert store.get_json(estimate_blob(WEEK[0]))["expected"] == estimates[WEEK[0]]["expected"]

    assert run([live_performance], store, instance, tags=RANGE).success
    judged = day_reports(instance, live_performance)
    assert sorted(judged) == WEEK  # one materialization per day of the range
    first, last = judged[WEEK[0]], judged[WEEK[-1]]
    assert first["window"] == "2013-01-22..2013-01-22 (1 days)"  # the champion's holdout days are left out
    assert last["window"] == "2013-01-22..2013-01-28 (7 days)" and last["rows"] == 7 * 400
    for day in WEEK:
        m = judged[day]
        assert m["judged"] and m["low"] <= m["live"] <= m["high"] and m["drop_low"] <= m["drop"] <= m["drop_high"]
    assert not first["flagged"] and "no significant drop" in first["summary"]
    assert last["flagged"] and last["drop_low"] > 0 and "significant drop" in last["summary"]
    # CBPE sees the rows, not the labels: inverted labels leave the estimate where it was.
    assert last["day_value"] < 0.5 < last["estimate"]
    assert f"| {WEEK[-1]} | 400 |" in last["performance_table"] and "**FLAGGED**" in last["performance_table"]


@pytest.mark.integration
def test_the_sensor_judged_as_of_a_day_leaves_later_reports_for_the_next_tick(labelled_week, instance):
    store, _version = labelled_week
    assert run([live_performance], store, instance, tags=RANGE).success
    with dg.build_sensor_context(instance=instance, resources={"blob_store": store}) as context:
        early = performance_tick(context, store, until_day="2013-01-24")
    assert "3 new report(s)" in early.skip_reason.skip_message
    later = tick(retrain_on_performance_sensor, instance, store, early.cursor)
    (request,) = later.run_requests  # 01-26..01-28 flagged: three in a row
    assert request.tags[TRIGGER_TAG] == "performance" and request.tags[retraining.AS_OF_TAG] == WEEK[-1]


@pytest.mark.integration
def test_the_sensor_counts_cbpe_estimates_before_labels_when_configured(champion_store, tmp_path, instance,
                                                                       monkeypatch):
    store, version = champion_store
    # A champion whose holdout AUC looked near perfect: its expected AUC on live days is far below it.
    models = store.models()
    manifest = models.get(MODEL_NAME, version).manifest
    claimed = {**{k: v for k, v in manifest.items() if k not in MANIFEST_KEYS}, "metrics": {"holdout": {**manifest["metrics"]["holdout"], "roc_auc": 0.999}}}
    folder = tmp_path / "model-0"
    boasting = models.publish(MODEL_NAME, folder, claimed).version
    models.promote(MODEL_NAME, boasting, expected=version, reason="test")
    from ml_assets.defs.assets import performance

    # ... and a spec tolerating 0.02 of ROC AUC: the expected ~0.96 is a loss.
    monkeypatch.setattr(performance, "PERFORMANCE", performance.PERFORMANCE.model_copy(update={"max_drop": 0.02}))
    for i, day in enumerate(WEEK[:3]):
        publish_day(store, tmp_path, day, seed=800 + i, tables=["features"])  # no labels yet
    assert run([estimated_performance], store, instance, tags={**RANGE, RANGE_END: WEEK[2]}).success
    reports = day_reports(instance, estimated_performance)
    assert all(m["flagged"] for m in reports.values()), reports

    unset = tick(retrain_on_performance_sensor, instance, store)
    assert not unset.run_requests and "no day judged yet" in unset.skip_reason.skip_message
    monkeypatch.setattr(retraining, "PERFORMANCE", retraining.PERFORMANCE.model_copy(update={"use_estimate": True}))
    fired = tick(retrain_on_performance_sensor, instance, store)
    (request,) = fired.run_requests
    assert request.tags[retraining.TRIGGER_DAYS_TAG] == ",".join(WEEK[:3])
    assert "CBPE estimate" in request.tags[retraining.REASON_TAG]


@pytest.mark.integration
def test_with_a_label_feed_a_day_is_judged_once_its_coverage_is_reached_and_rejudged_on_new_labels(
        champion_store, tmp_path, instance, monkeypatch):
    from ml_assets.defs.assets import performance

    store, _version = champion_store
    monkeypatch.setattr(performance, "FEED", LabelFeedSpec(source="outcomes", min_coverage=0.9))
    day = WEEK[0]
    publish_day(store, tmp_path, day, seed=900)
    datasets = store.datasets()
    write_label_stats(datasets, DayLabelStats(day, examples=400, outcomes=200, labelled=200, feed_days=[day]))
    early = run([live_performance], store, instance, partition_key=day)
    assert early.success and not early.get_asset_materialization_events()
    assert any(f"label coverage of {day} is 50% < 90%" in (e.message or "") for e in instance.all_logs(early.run_id))

    publish_day(store, tmp_path / "late", day, seed=900, tables=["labels"])  # the late outcomes: a new labels version
    write_label_stats(datasets, DayLabelStats(day, examples=400, outcomes=400, labelled=400, feed_days=[day]))
    judged = metadata(run([live_performance], store, instance, partition_key=day), live_performance)
    assert judged["judged"] and judged["label_coverage"] == 1.0
    assert judged["labels_version"] == datasets.current("labels", day).version
    # The same labels again (a feed range run re-materializes unchanged days): not judged twice.
    again = run([live_performance], store, instance, partition_key=day)
    assert again.success and not again.get_asset_materialization_events()


@pytest.mark.integration
def test_with_a_label_feed_a_late_label_re_judges_every_window_holding_its_day(champion_store, tmp_path, instance,
                                                                                monkeypatch):
    """Late outcomes invert the labels of 01-24 and 01-25 (known answer: the champion is wrong on them).
    Every settled window holding either is re-judged and flips to flagged; the windows before them and the
    day whose own labels are still filling up are not; the sensor counts the new verdicts (newest wins)."""
    from ml_assets.defs.assets import performance

    store, version = champion_store
    monkeypatch.setattr(performance, "FEED", LabelFeedSpec(source="outcomes", min_coverage=0.9))
    datasets = store.datasets()
    filling = WEEK[-1]  # 01-28: half of its outcomes so far
    for i, day in enumerate(WEEK):
        publish_day(store, tmp_path, day, seed=950 + i)
        outcomes = 200 if day == filling else 400
        write_label_stats(datasets, DayLabelStats(day, examples=400, outcomes=outcomes, labelled=outcomes,
                                                  feed_days=[day]))
    before_keys = performance.window_keys(store, WEEK)
    assert sorted(before_keys) == WEEK[:-1]  # the day still filling up is not judged

    assert run([live_performance], store, instance, tags=RANGE).success
    first = day_reports(instance, live_performance)
    assert sorted(first) == WEEK[:-1] and not any(m["flagged"] for m in first.values())
    with dg.build_sensor_context(instance=instance, resources={"blob_store": store}) as context:
        calm = retrain_on_performance_sensor(context)
    assert not calm.run_requests

    # The late outcomes: new labels versions of 01-24 and 01-25 (same rows, the opposite outcomes).
    late = ["2013-01-24", "2013-01-25"]
    for day in late:
        publish_day(store, tmp_path / "late", day, seed=950 + WEEK.index(day), tables=["labels"], flip_labels=True)
        write_label_stats(datasets, DayLabelStats(day, examples=400, outcomes=400, labelled=400, feed_days=[day]))
    after_keys = performance.window_keys(store, WEEK)
    changed = sorted(d for d in after_keys if after_keys[d] != before_keys[d])
    assert changed == ["2013-01-24", "2013-01-25", "2013-01-26", "2013-01-27"]  # what the replay re-runs

    # Asked for the whole week (as a feed range run asks), the asset re-judges exactly those windows.
    records_before = {d: len(instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=live_performance.key, asset_partitions=[d]), limit=10).records) for d in WEEK}
    assert run([live_performance], store, instance, tags=RANGE).success
    records_after = {d: len(instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=live_performance.key, asset_partitions=[d]), limit=10).records) for d in WEEK}
    assert sorted(d for d in WEEK if records_after[d] > records_before[d]) == changed
    second = day_reports(instance, live_performance)
    for day in WEEK[:2]:
        assert second[day] == first[day]  # windows before the late days: the earlier verdict stands
    for day in changed:
        assert second[day]["flagged"] and not first[day]["flagged"], second[day]["summary"]
        assert second[day]["window_labels"] == after_keys[day] and second[day]["champion_version"] == version
    assert filling not in second

    # The performance sensor reads the re-judged days' newest verdicts: three flagged days in a row.
    with dg.build_sensor_context(instance=instance, resources={"blob_store": store}, cursor=calm.cursor) as context:
        fired = retrain_on_performance_sensor(context)
    (request,) = fired.run_requests
    assert request.tags[TRIGGER_TAG] == "performance"
    assert request.tags[retraining.TRIGGER_DAYS_TAG].split(",")[-3:] == changed[-3:]


def test_a_range_scores_its_days_in_one_model_call_exactly_as_day_by_day(labelled_week, monkeypatch):
    import numpy as np

    from ml_assets.defs.assets import champion

    store, version = labelled_week
    manifest = store.models().get(MODEL_NAME, version).manifest
    datasets = store.datasets()
    days = {day: datasets.current("labels", day).version for day in WEEK}
    champion._SCORES.clear()
    one_by_one = {day: champion.day_labelled_scores(store, version, manifest, day, v) for day, v in days.items()}
    champion._SCORES.clear()
    model = champion.champion_model(store, version, manifest)
    calls = []
    real_predict = model.predict_proba
    monkeypatch.setattr(model, "predict_proba", lambda frame: calls.append(len(frame)) or real_predict(frame))
    champion.prefetch_labelled_scores(store, version, manifest, days)
    assert calls == [sum(len(y) for y, _ in one_by_one.values())]  # one call for the week's labelled rows
    for day, labels_version in days.items():
        labels, scores = champion.day_labelled_scores(store, version, manifest, day, labels_version)
        assert np.array_equal(labels, one_by_one[day][0]) and np.array_equal(scores, one_by_one[day][1])
    assert len(calls) == 1  # the days were kept: nothing scored again


def test_kept_dict_forgets_its_oldest_entries_beyond_its_size():
    from ml_assets.defs.assets.champion import KeptDict

    kept = KeptDict(2)
    for key in "abc":
        kept[key] = key.upper()
    assert kept == {"b": "B", "c": "C"}
    kept["b"] = "again"  # replacing an entry still makes room first, as the caches did before
    assert kept == {"c": "C", "b": "again"}
