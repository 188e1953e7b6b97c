"""Daemon mode end to end: data lands in Azurite and the daemon alone does the rest.

PostgreSQL, Azurite, the gRPC code server, `dagster-daemon run` and the webserver are real
processes; nothing is ticked or materialized by the test. Ten days of the bundled flights data
land (the e2e spec: 7 training + 3 holdout days), and the sensors and declarative automation
build raw -> features/labels -> cluster_model -> clusters -> the first champion (bootstrap by
retrain_on_drift) -> reference_stats, and `ml-assets serve` answers from Azurite. A backfill of
landed days launched through the webserver's GraphQL (as the UI does) materializes nothing again.
Then one more day lands: only that day's partitions (and what depends on them) run, drift and
live performance included. Every (asset, day) is materialized once, and no two Spark steps ever
ran at once.
"""

from __future__ import annotations

import datetime as dt
import email
import time
from collections import Counter

import dagster as dg
import pytest

from ml_assets.examples.flights_features import flights_features, records
from ml_assets_tests.e2e.harness import (
    active_work,
    http_json,
    launch_asset_backfill,
    materializations,
    overlaps,
    quiet,
    spark_step_names,
    start_model_server,
    step_intervals,
    stop_group,
    tail,
    wait_until,
)

# Minutes on a loaded 2-core machine (bootstrap ~10, each later phase ~2-5): above the suite's 900 s.
pytestmark = [pytest.mark.integration, pytest.mark.azurite, pytest.mark.timeout(50 * 60)]

FIRST_DAY = dt.date(2013, 1, 1)
LAST_BOOTSTRAP_DAY = dt.date(2013, 1, 10)
NEW_DAY = dt.date(2013, 1, 11)
DAILY = ["raw_flights", "raw_weather", "features", "labels", "clusters", "feature_drift", "estimated_performance",
         "live_performance"]
UNPARTITIONED = ["cluster_model", "training_set", "keras_candidate", "sklearn_candidate", "candidate_model",
                 "deployed_model", "reference_stats"]
KEYS = [dg.AssetKey(name) for name in DAILY + UNPARTITIONED]
# Generous: on a loaded 2-core machine a daemon-launched run takes ~30 s just to start.
BOOTSTRAP_TIMEOUT_S = 25 * 60
DAY_TIMEOUT_S = 10 * 60


def partitioned(counts: Counter, names: list[str] = DAILY) -> Counter:
    return Counter({(key, part): n for (key, part), n in counts.items() if key in names})


def test_daemon_mode_end_to_end(daemon_deployment, example_frames):
    deployed = daemon_deployment
    with deployed.instance() as instance:
        def dump() -> str:
            return deployed.dump(instance, KEYS)

        def bootstrapped() -> bool:
            deployed.stack.check_alive()
            counts = materializations(instance, KEYS)
            days = {d.isoformat() for d in (FIRST_DAY + dt.timedelta(n) for n in range(10))}
            return (all((k, d) in counts for k in ("raw_flights", "raw_weather", "features", "labels") for d in days)
                    and counts[("deployed_model", None)] >= 1 and counts[("reference_stats", None)] >= 1)

        # 1. Land ten days; then only wait.
        landed = deployed.land(example_frames, FIRST_DAY, LAST_BOOTSTRAP_DAY)
        wait_until(bootstrapped, what="the first champion and its reference statistics", timeout=BOOTSTRAP_TIMEOUT_S,
                   interval=5, dump=dump)
        wait_until(lambda: quiet(instance), what="the daemon to have nothing left to do", timeout=DAY_TIMEOUT_S,
                   interval=5, dump=dump)
        first = materializations(instance, KEYS)
        for name in ("raw_flights", "raw_weather", "features", "labels", "clusters"):
            assert {p for (k, p) in first if k == name} == set(landed), f"{name} of every landed day:\n{dump()}"
        for name in ("cluster_model", "training_set", "keras_candidate", "sklearn_candidate", "candidate_model",
                     "deployed_model", "reference_stats"):
            assert first[(name, None)] >= 1, f"{name} was never built by the daemon:\n{dump()}"
        assert not [c for c in partitioned(first).items() if c[1] != 1], f"a day materialized twice:\n{dump()}"
        bootstrap_runs = instance.get_runs(filters=dg.RunsFilter(tags={"ml_assets/trigger": "bootstrap"}))
        assert len(bootstrap_runs) == 1 and bootstrap_runs[0].status == dg.DagsterRunStatus.SUCCESS, dump()
        # The chain in order: the first champion trained on days that had their clusters.
        (training_set,) = instance.fetch_materializations(dg.AssetKey("training_set"), limit=1).records
        without = training_set.asset_materialization.metadata["days_without_clusters"].value
        assert without == [], f"the first model trained before the clusters of {without} existed:\n{dump()}"

        # 2. The model server, as documented, against Azurite.
        server, url = start_model_server(deployed.env, deployed.workdir / "logs" / "serve.log")
        try:
            def ready():
                if server.poll() is not None:
                    raise AssertionError(f"ml-assets serve exited: {tail(deployed.workdir / 'logs' / 'serve.log')}")
                try:
                    status, body = http_json(f"{url}/healthz", timeout=2)
                except OSError:
                    return None
                return body if status == 200 and body.get("ready") else None

            health = wait_until(ready, what="ml-assets serve", timeout=120, interval=1,
                                dump=lambda: tail(deployed.workdir / "logs" / "serve.log"))
            rows, _ = flights_features(example_frames, 20, seed=3)
            status, body = http_json(f"{url}/v1/models/flights:predict", {"instances": records(rows)})
            assert status == 200, body
            predictions = body["predictions"]
            assert len(predictions) == 20 and all(0.0 <= p <= 1.0 for p in predictions), body
            assert health["version"] is not None
        finally:
            stop_group(server)

        # 3. A backfill of days that already landed, launched as the UI does, materializes nothing again
        # (it restates them: same data version, marked unchanged).
        backfilled = [FIRST_DAY.isoformat(), (FIRST_DAY + dt.timedelta(1)).isoformat()]
        backfill_id = launch_asset_backfill(deployed.stack.webserver_url, ["raw_flights", "raw_weather"], backfilled)
        wait_until(lambda: instance.get_backfill(backfill_id).status.value.startswith("COMPLETED")
                   and not active_work(instance), what=f"backfill {backfill_id}", timeout=DAY_TIMEOUT_S, interval=5,
                   dump=dump)
        # Its status is asserted at the end, so that a failed-looking backfill does not hide the rest.
        backfill_status = instance.get_backfill(backfill_id).status.value
        wait_until(lambda: quiet(instance), what="the daemon to have nothing left to do", timeout=DAY_TIMEOUT_S,
                   interval=5, dump=dump)
        # The backfill restates the stored days (same data version, marked unchanged) and nothing
        # downstream runs: no new real materialization anywhere.
        assert materializations(instance, KEYS) == first, f"the backfill materialized landed days again:\n{dump()}"
        restated = materializations(instance, KEYS, restated=True)
        assert set(restated) == {(k, d) for k in ("raw_flights", "raw_weather") for d in backfilled}, dump()
        assert_spark_never_overlapped(instance)

        # 4. One more day: only its partitions, and the live performance of the day before (whose
        # labels it settles), run.
        deployed.land(example_frames, NEW_DAY)
        new, previous = NEW_DAY.isoformat(), LAST_BOOTSTRAP_DAY.isoformat()
        wait_until(lambda: {("feature_drift", new), ("live_performance", previous)} <= set(materializations(instance, KEYS)),
                   what=f"drift of {new} and live performance of {previous}", timeout=DAY_TIMEOUT_S, interval=5,
                   dump=dump)
        wait_until(lambda: quiet(instance), what="the daemon to have nothing left to do", timeout=DAY_TIMEOUT_S,
                   interval=5, dump=dump)
        second = materializations(instance, KEYS)
        added = partitioned(second) - partitioned(first)
        expected = {(k, new) for k in ("raw_flights", "raw_weather", "features", "labels", "clusters", "feature_drift",
                                       "estimated_performance")}
        assert set(added) == expected | {("live_performance", previous)}, f"added: {sorted(added)}\n{dump()}"
        retrains = instance.get_runs(filters=dg.RunsFilter(tags={"ml_assets/retrain": "true"}))
        assert len(retrains) == 1, f"one new day retrained the model:\n{dump()}"

        # 5. Over the whole test: each day once, and never two Spark steps at once.
        final = materializations(instance, KEYS)
        twice = {k: n for k, n in partitioned(final).items() if n != 1}
        assert not twice, f"materialized more than once: {twice}\n{dump()}"
        assert_spark_never_overlapped(instance)
        # What a user sees in the UI: the backfill of days already stored succeeded (nothing failed).
        assert backfill_status == "COMPLETED_SUCCESS", f"backfill {backfill_id} ended {backfill_status}:\n{dump()}"

        # 6. One report email per training run (the bootstrap and the retrain), none sent twice: the report
        # sensors tick every 30 s, so a repeat would be in the outbox a tick after both are there.
        def reports() -> Counter:
            return Counter(email.message_from_bytes(path.read_bytes())["X-ML-Assets-Cycle"]
                           for path in (deployed.workdir / "outbox").glob("*.eml"))

        trained = {bootstrap_runs[0].run_id, retrains[0].run_id}
        wait_until(lambda: trained <= set(reports()), what="a report email per training run", timeout=180,
                   interval=5, dump=dump)
        time.sleep(45)
        sent = reports()
        sent.pop(None, None)  # freshness alerts carry no cycle
        assert sent == Counter(trained), f"report emails per run: {dict(sent)}, training runs: {sorted(trained)}"


def assert_spark_never_overlapped(instance) -> None:
    """From the event log: the STEP_START..STEP_SUCCESS/FAILURE intervals of the steps that use Spark,
    in different runs, never overlap."""
    spark_steps = spark_step_names()
    intervals = step_intervals(instance, spark_steps)
    assert intervals, f"no Spark step found in the event log ({sorted(spark_steps)})"
    clashes = overlaps(intervals)
    assert not clashes, "Spark steps overlapped:\n" + "\n".join(f"{a} <-> {b}" for a, b in clashes)
