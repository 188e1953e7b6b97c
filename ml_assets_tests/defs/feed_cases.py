"""Label-feed cases, run by test_labels_feed.py in a child pytest with ML_ASSETS_SPEC=flights_label_feed
(the code location's spec is read at import, so this spec needs its own process). Not collected alone."""

import datetime as dt

import dagster as dg
import pandas as pd
import pytest

from ml_assets.defs.dataset import SPEC
from ml_assets.examples import load_example
from ml_assets.landing import days_between, land
from ml_assets.ml.labels import settled_days, stored_label_stats
from ml_assets.ml.training_set import TrainingWindow, labelled_examples
from ml_assets_tests.fixtures.dagster import ALL_ASSETS, make_resources, materialize

pytestmark = pytest.mark.spark

D1, D2 = "2013-01-01", "2013-01-02"
KEYS = SPEC.key_columns
# Flights whose outcome never arrives, and an outcome for a flight that never existed.
MISSING = 7
STRAY_FLIGHT = 99999


@pytest.fixture(scope="module")
def tables():
    assert SPEC.label_feed is not None, "run with ML_ASSETS_SPEC=flights_label_feed"
    frames = load_example(SPEC.example_data)
    flights = frames["flights"]
    in_days = flights[(flights.month == 1) & flights.day.isin([1, 2])]
    outcomes = frames["outcomes"].merge(in_days[KEYS], on=KEYS)
    dropped = outcomes[outcomes.time_hour.str.startswith("2013-01-01T15")].head(MISSING)
    outcomes = outcomes.drop(dropped.index)
    stray = outcomes.iloc[[0]].assign(flight=STRAY_FLIGHT)
    return {"flights": in_days, "weather": frames["weather"],
            "outcomes": pd.concat([outcomes, stray], ignore_index=True)}, dropped


def _day_rows(flights, day):
    return flights[flights.day == int(day[-2:])]


def _run(resources, instance, keys, day=None, partition_range=None):
    result = materialize(resources, instance, [dg.AssetKey(k) for k in keys], partition_key=day,
                         partition_range=partition_range)
    assert result.success
    return result


def _land_feed(store, resources, instance, frames, first, last):
    land(store.blob_store(), SPEC, {"outcomes": frames["outcomes"]}, days_between(first, last))
    _run(resources, instance, ["raw_outcomes"], partition_range=(first.isoformat(), last.isoformat()))


def _labels_materializations(instance, day):
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("labels"), asset_partitions=[day]), limit=100).records


def test_late_outcomes_raise_coverage_and_version_only_when_content_changes(local_resource, spark_resource,
                                                                           instance, tables):
    frames, dropped = tables
    flights = frames["flights"]
    store = local_resource
    land(store.blob_store(), SPEC, {"flights": flights, "weather": frames["weather"]},
         days_between(dt.date(2013, 1, 1), dt.date(2013, 1, 2)))
    resources = make_resources(store, spark_resource)
    _run(resources, instance, ["raw_flights", "raw_weather"], partition_range=(D1, D2))
    _run(resources, instance, ["features"], partition_range=(D1, D2))
    datasets = store.datasets()

    # Nothing reported yet: the day's labels exist, empty, at coverage 0.
    _run(resources, instance, ["labels"], D1)
    stats = stored_label_stats(datasets, D1)
    examples = len(_day_rows(flights, D1))
    assert (stats["examples"], stats["outcomes"], stats["coverage"]) == (examples, 0, 0.0)
    assert datasets.row_count("labels", D1) == 0
    first_version = datasets.current("labels", D1).version

    # The first feed day (reported 2013-01-02): flights with a one-day report delay only.
    _land_feed(store, resources, instance, frames, dt.date(2013, 1, 2), dt.date(2013, 1, 2))
    result = _run(resources, instance, ["labels"], D1)
    partial = stored_label_stats(datasets, D1)
    assert 0 < partial["coverage"] < 1
    assert datasets.current("labels", D1).version != first_version
    [event] = result.asset_materializations_for_node("labels")
    assert event.metadata["coverage"].value == pytest.approx(partial["coverage"])
    partial_version = datasets.current("labels", D1).version
    runs_before = len(_labels_materializations(instance, D1))

    # The same feed again: nothing new, so no new version and no new materialization.
    _run(resources, instance, ["labels"], D1)
    assert datasets.current("labels", D1).version == partial_version
    assert len(_labels_materializations(instance, D1)) == runs_before

    # Training sees only labelled examples, and a day still filling up is not settled.
    labelled_rows = datasets.row_count("labels", D1)
    spark = spark_resource.spark_session
    from ml_assets.resources.spark_io import read_tables

    frame = labelled_examples(SPEC, read_tables(spark, store, "features", [D1]),
                              read_tables(spark, store, "labels", [D1]), None, TrainingWindow([], [D1]))
    assert frame.count() == labelled_rows < examples
    assert settled_days(SPEC, datasets, [D1]) == []

    # The rest lands. Automation asks for the labels of every day a landed feed day can reach (01-03 can hold
    # outcomes of 01-01 and 01-02: max_delay_days 5), not only the latest day; 01-03 has no examples yet.
    _run(resources, instance, ["labels"], D2)
    defs = dg.Definitions(assets=ALL_ASSETS, resources=resources)
    selection = dg.AssetSelection.assets("labels")
    now = dt.datetime(2013, 1, 10, tzinfo=dt.UTC)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                              evaluation_time=now)
    _land_feed(store, resources, instance, frames, dt.date(2013, 1, 3), dt.date(2013, 1, 6))
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                               evaluation_time=now, cursor=first.cursor)
    requested = {key for r in second.results if r.key == dg.AssetKey("labels")
                 for key in r.true_subset.expensively_compute_partition_keys()}
    assert requested == {D1, D2}

    # Both days rebuilt in one range run; every outcome in reach is joined by key.
    _run(resources, instance, ["labels"], partition_range=(D1, D2))
    full = stored_label_stats(datasets, D1)
    assert full["examples"] == examples
    assert full["outcomes"] == examples - len(dropped)  # the missing outcomes stay unlabelled
    assert full["coverage"] == pytest.approx((examples - len(dropped)) / examples)
    labels = datasets.read_frame("labels", [D1])
    day = _day_rows(flights, D1).merge(frames["outcomes"][[*KEYS, "arr_delay"]], on=KEYS)
    assert STRAY_FLIGHT not in set(labels.flight)
    known = day.dropna(subset=["arr_delay"])
    assert full["labelled"] == len(labels) == len(known)
    assert int(labels[SPEC.label.name].sum()) == int((known.arr_delay > 15).sum())
    assert not set(map(tuple, dropped[["carrier", "flight", "origin"]].to_numpy())) & set(
        map(tuple, labels[["carrier", "flight", "origin"]].to_numpy()))
    assert settled_days(SPEC, datasets, [D1, D2]) == [D1, D2]

