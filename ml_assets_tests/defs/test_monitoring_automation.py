"""Automation of the monitoring assets: a new day is judged once; a new champion does not re-judge history."""

import dagster as dg

from ml_assets.defs.assets.monitoring import feature_drift, live_performance
from ml_assets.defs.assets.performance import judge_condition, labels_read
from ml_assets.defs.automation import on_upstream_day_changed
from ml_assets.defs.dataset import SPEC
from ml_assets.defs.partitions import daily_partitions
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.spec.labels import LabelFeedSpec

CHECKED = dg.AssetCheckSpec("stand_in_check", asset="features", blocking=True)


@dg.asset(name="features", partitions_def=daily_partitions, check_specs=[CHECKED])
def features_stand_in():
    yield dg.Output(None)
    yield dg.AssetCheckResult(check_name="stand_in_check", passed=True)


@dg.asset(name="labels", partitions_def=daily_partitions)
def labels_stand_in():
    return None


@dg.asset(name="deployed_model")
def deployed_model_stand_in():
    return None


@dg.asset(name="reference_stats", deps=["deployed_model"])
def reference_stats_stand_in():
    return None


# Automation is only evaluated here, never run: the store is never opened.
DEFS = dg.Definitions(assets=[features_stand_in, labels_stand_in, deployed_model_stand_in,
                              reference_stats_stand_in, feature_drift, live_performance],
                      resources={"blob_store": BlobStoreResource(local_root="never-opened")})
MONITORED = dg.AssetSelection.assets(feature_drift, live_performance)


def requested(result) -> dict[str, list[str]]:
    return {r.key.to_user_string(): sorted(r.true_subset.expensively_compute_partition_keys())
            for r in result.results if r.true_subset.size and isinstance(r.key, dg.AssetKey)}


def land(instance, *days: str, labels: bool = True) -> None:
    for day in days:
        selection = [features_stand_in, labels_stand_in] if labels else [features_stand_in]
        assert dg.materialize(selection, instance=instance, partition_key=day).success


def test_new_days_are_judged_once_and_a_new_champion_does_not_rejudge_history(instance):
    land(instance, "2013-01-01", "2013-01-02")
    first = dg.evaluate_automation_conditions(defs=DEFS, instance=instance, asset_selection=MONITORED)
    assert requested(first) == {}  # no champion, so no reference: nothing to judge against

    assert dg.materialize([deployed_model_stand_in, reference_stats_stand_in], instance=instance).success
    land(instance, "2013-01-03")
    tick = dg.evaluate_automation_conditions(defs=DEFS, instance=instance, asset_selection=MONITORED,
                                             cursor=first.cursor)
    # 01-03's drift; 01-02's performance, whose labels settled when 01-03's arrived (lag 1).
    assert requested(tick)["feature_drift"] == ["2013-01-03"]
    assert "2013-01-03" not in requested(tick).get("live_performance", [])
    assert "2013-01-02" in requested(tick)["live_performance"]

    # A new champion and its reference alone request nothing for days already judged.
    assert dg.materialize([deployed_model_stand_in, reference_stats_stand_in], instance=instance).success
    quiet = dg.evaluate_automation_conditions(defs=DEFS, instance=instance, asset_selection=MONITORED,
                                              cursor=tick.cursor)
    assert "feature_drift" not in requested(quiet)

    land(instance, "2013-01-04", labels=False)
    later = dg.evaluate_automation_conditions(defs=DEFS, instance=instance, asset_selection=MONITORED,
                                              cursor=quiet.cursor)
    assert requested(later)["feature_drift"] == ["2013-01-04"]
    assert "2013-01-03" not in requested(later).get("live_performance", [])  # 01-04 has no labels yet


@dg.asset(name="raw_day", partitions_def=daily_partitions)
def raw_stand_in():
    return None


@dg.asset(name="labels", partitions_def=daily_partitions, deps=[raw_stand_in],
          automation_condition=on_upstream_day_changed)
def automated_labels_stand_in():
    return None


def test_a_day_is_judged_after_its_settling_labels_land_not_in_the_same_tick(instance):
    defs = dg.Definitions(assets=[features_stand_in, raw_stand_in, automated_labels_stand_in,
                                  deployed_model_stand_in, reference_stats_stand_in, live_performance],
                          resources={"blob_store": BlobStoreResource(local_root="never-opened")})
    selection = dg.AssetSelection.assets(live_performance, automated_labels_stand_in)

    def tick(cursor):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                                   cursor=cursor)
        return requested(result), result.cursor

    assert dg.materialize([deployed_model_stand_in, reference_stats_stand_in], instance=instance).success
    for day in ("2013-01-01", "2013-01-02"):
        assert dg.materialize([features_stand_in, raw_stand_in, automated_labels_stand_in], instance=instance,
                              partition_key=day).success
    _, cursor = tick(None)
    assert dg.materialize([features_stand_in, raw_stand_in], instance=instance, partition_key="2013-01-03").success
    # 01-03's labels are requested; 01-02 (whose labels settle with 01-03's) waits for them to land.
    now, cursor = tick(cursor)
    assert now == {"labels": ["2013-01-03"]}
    assert dg.materialize([automated_labels_stand_in], instance=instance, partition_key="2013-01-03").success
    later, _ = tick(cursor)
    assert "2013-01-02" in later["live_performance"]


# With a label feed (built by the same functions the asset uses; the code location's spec has none).
FEED = LabelFeedSpec(source="outcomes", max_delay_days=5)
WINDOW = SPEC.monitoring.performance.model_copy(update={"window_days": 7})


@dg.asset(name="live_performance", partitions_def=daily_partitions,
          deps=["features", dg.AssetDep("labels", partition_mapping=labels_read(FEED, WINDOW)), "deployed_model"],
          automation_condition=judge_condition(FEED))
def feed_live_performance_stand_in():
    return None


def report(instance, key: str, *days: str) -> None:
    """A materialization of each day recorded straight in the instance (as a run would, without one)."""
    for day in days:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=day))


def test_with_a_label_feed_a_late_label_requests_every_window_holding_its_day(instance):
    """A new labels version of day X requests live_performance of X..X+6 (the windows holding X) whose
    features exist, nothing else; a day without data inside a window does not hold the window back."""
    defs = dg.Definitions(assets=[features_stand_in, labels_stand_in, deployed_model_stand_in,
                                  feed_live_performance_stand_in])
    selection = dg.AssetSelection.assets(feed_live_performance_stand_in)

    def tick(cursor):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                                   cursor=cursor)
        return requested(result).get("live_performance", []), result.cursor

    days = [f"2013-02-{d:02d}" for d in range(1, 11) if d != 9]  # 02-09: no data at all
    report(instance, "deployed_model", None)
    report(instance, "features", *days)
    report(instance, "labels", *days)
    _, cursor = tick(None)
    quiet, cursor = tick(cursor)
    assert quiet == []  # nothing changed since the first tick

    # Late outcomes change the labels of 02-05: the windows 02-05..02-11 hold it; 02-09 and 02-11 have no features.
    report(instance, "labels", "2013-02-05")
    late, cursor = tick(cursor)
    assert late == ["2013-02-05", "2013-02-06", "2013-02-07", "2013-02-08", "2013-02-10"]
    again, cursor = tick(cursor)
    assert again == []  # handled

    # A day whose window has a gap (02-09) is judged when its own data lands.
    report(instance, "features", "2013-02-11")
    report(instance, "labels", "2013-02-11")
    new_day, cursor = tick(cursor)
    assert new_day == ["2013-02-11"]
    report(instance, "live_performance", "2013-02-11")  # the run the daemon launched
    judged, cursor = tick(cursor)
    assert judged == []

    # The labels of the last stored day: its own window only (the later windows have no features yet).
    report(instance, "labels", "2013-02-11")
    last, cursor = tick(cursor)
    assert last == ["2013-02-11"]
    # A new champion alone re-judges nothing.
    report(instance, "deployed_model", None)
    champion, _ = tick(cursor)
    assert champion == []
