"""Declarative automation: a newly landed day rebuilds that day only, never on failed checks."""

import datetime as dt

import dagster as dg
import pytest

from ml_assets.defs.assets import clusters, features, raw
from ml_assets.defs.checks import data_quality
from ml_assets_tests.conftest import FIRST_DAY
from ml_assets_tests.fixtures.dagster import land_days, make_resources, materialize, materialize_raw

pytestmark = pytest.mark.spark

DAYS = ["2013-01-01", "2013-01-02", "2013-01-03"]
NEW_DAY = "2013-01-04"
AUTOMATED = {"features", "labels"}


def _defs(resources) -> dg.Definitions:
    return dg.Definitions(
        assets=[*raw.raw_assets, *dg.load_assets_from_modules([features, clusters])],
        asset_checks=dg.load_asset_checks_from_modules([data_quality]),
        resources=resources,
    )


def _requested(result) -> dict[str, list[str]]:
    return {
        r.key.to_user_string(): sorted(r.true_subset.expensively_compute_partition_keys())
        if r.true_subset.is_partitioned else []
        for r in result.results
        if r.true_subset.size and isinstance(r.key, dg.AssetKey)
    }


@pytest.fixture
def history(local_resource, spark_resource, instance, example_frames):
    """Three days landed and fully materialized, and the automation cursor past them."""
    land_days(local_resource, example_frames, FIRST_DAY, FIRST_DAY.replace(day=3))
    resources = make_resources(local_resource, spark_resource)
    materialize_raw(resources, instance, DAYS)
    assert materialize(resources, instance, ["features", "labels"], partition_range=(DAYS[0], DAYS[-1])).success
    defs = _defs(resources)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0
    return resources, defs, first.cursor


def test_newly_landed_day_requests_only_that_day(history, local_resource, instance, example_frames):
    resources, defs, cursor = history
    land_days(local_resource, example_frames, dt.date(2013, 1, 4), dt.date(2013, 1, 4))
    quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert quiet.total_requested == 0  # landed, but raw has not seen it yet

    materialize_raw(resources, instance, [NEW_DAY])
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
    assert _requested(tick) == {"features": [NEW_DAY], "labels": [NEW_DAY]}

    # Once those runs happen, nothing more is requested for the day; the cluster model, never
    # fitted, is asked for (it fits once clustering.window_days are stored, see test_cluster_automation).
    assert materialize(resources, instance, ["features", "labels"], partition_key=NEW_DAY).success
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
    assert _requested(after) == {"cluster_model": []}


def test_relanded_changed_day_requests_that_day(history, local_resource, instance):
    resources, defs, cursor = history
    blobs = local_resource.blob_store()
    key = "raw/flights/date=2013-01-02/flights.csv"
    header, *rows = blobs.get(key).decode().splitlines()
    blobs.put(key, "\n".join([header, *rows[:-5]]).encode() + b"\n")  # a correction drops 5 rows

    materialize_raw(resources, instance, ["2013-01-02"])
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert _requested(tick) == {"features": ["2013-01-02"], "labels": ["2013-01-02"]}


def test_failed_blocking_check_upstream_requests_nothing(history, local_resource, instance, example_frames):
    resources, defs, cursor = history
    land_days(local_resource, example_frames, dt.date(2013, 1, 4), dt.date(2013, 1, 4))
    blobs = local_resource.blob_store()
    key = f"raw/flights/date={NEW_DAY}/flights.csv"
    header, *rows = blobs.get(key).decode().splitlines()
    blobs.put(key, "\n".join([header, *rows[:10]]).encode() + b"\n")  # fails row_count

    result = materialize_raw(resources, instance, [NEW_DAY], raise_on_error=False)[NEW_DAY]
    assert not result.success
    assert result.asset_materializations_for_node("raw_flights")  # stored, but its check failed
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert _requested(tick) == {}


def test_backfill_of_a_stored_day_restates_it_and_rebuilds_nothing(history, instance):
    resources, defs, cursor = history
    backfill = dg.materialize(raw.raw_assets, resources=resources, instance=instance, partition_key=DAYS[1],
                              tags={"dagster/backfill": "stand-in"})
    events = backfill.get_asset_materialization_events()
    assert len(events) == 2 and all(e.materialization.metadata["unchanged"].value for e in events)
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert "features" not in _requested(tick) and "labels" not in _requested(tick)
