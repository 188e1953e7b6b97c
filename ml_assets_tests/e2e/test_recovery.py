"""A blob-store outage in the middle of daemon-driven runs loses nothing and doubles nothing.

The test's own Azurite is frozen (SIGSTOP: requests hang, as with a store that stops answering)
while the landed_blobs runs are in flight, until a run has failed; then it is killed and a new
Azurite starts on the same port with the same data folder. The daemon alone must then bring every
landed day to raw, features and labels exactly once, with the stored rows those of the landed
blobs.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import uuid

import dagster as dg
import pytest

from ml_assets.landing import days_between, local_days
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets.spec import load_spec
from ml_assets_tests.e2e.conftest import deployment
from ml_assets_tests.e2e.harness import SPEC_PATH, materializations, quiet, wait_until

# ~11 minutes: the steps' store retries (~3 min) and the sensor's backoff (2 min) are real time.
pytestmark = [pytest.mark.integration, pytest.mark.azurite, pytest.mark.timeout(35 * 60)]

FIRST_DAY = dt.date(2013, 1, 1)
LAST_DAY = dt.date(2013, 1, 4)
CHAIN = ["raw_flights", "raw_weather", "features", "labels"]
DAILY = [*CHAIN, "clusters"]
# A request to the frozen store fails after this long (default 120 s), so the outage is short.
STORE_TIMEOUT_S = "15"
TIMEOUT_S = 15 * 60


def test_store_outage_mid_run_loses_and_doubles_nothing(tmp_path, own_azurite, postgres, example_frames):
    with deployment(tmp_path, own_azurite.connection_string, {**postgres.fresh_db(),
                                                              "ML_ASSETS_STORE_TIMEOUT_S": STORE_TIMEOUT_S}) as deployed:
        keys = [dg.AssetKey(name) for name in DAILY]
        landed = deployed.land(example_frames, FIRST_DAY, LAST_DAY)
        with deployed.instance() as instance:
            def dump() -> str:
                return deployed.dump(instance, keys)

            def raw_run_in_flight() -> bool:
                deployed.stack.check_alive()
                started = instance.get_runs(filters=dg.RunsFilter(
                    statuses=[dg.DagsterRunStatus.STARTED], tags={"ml_assets/trigger": "landed_blobs"}))
                return bool(started)

            wait_until(raw_run_in_flight, what="a landed_blobs run in flight", timeout=TIMEOUT_S, interval=0.5,
                       dump=dump)
            # Freeze the store mid-run: connections open but nothing answers.
            os.killpg(own_azurite.process.pid, signal.SIGSTOP)
            frozen_at = dt.datetime.now(dt.UTC)

            def a_raw_run_failed() -> bool:
                deployed.stack.check_alive()
                return bool(instance.get_runs(filters=dg.RunsFilter(
                    statuses=[dg.DagsterRunStatus.FAILURE], tags={"ml_assets/trigger": "landed_blobs"})))

            wait_until(a_raw_run_failed, what="a raw run to fail on the frozen store", timeout=TIMEOUT_S, interval=2,
                       dump=dump)
            before = materializations(instance, keys)
            missing_at_outage = {(k, d) for k in ("raw_flights", "raw_weather") for d in landed} - set(before)
            assert missing_at_outage, f"the outage cost no raw day; nothing to recover:\n{dump()}"

            # Back, on the same port with the same data.
            own_azurite.stop()
            own_azurite.start()
            print(f"store frozen for {(dt.datetime.now(dt.UTC) - frozen_at).total_seconds():.0f} s; "
                  f"missing then: {sorted(missing_at_outage)}")

            def all_recovered() -> bool:
                deployed.stack.check_alive()
                done = materializations(instance, keys)
                return all((k, d) in done for k in CHAIN for d in landed) and quiet(instance)

            wait_until(all_recovered, what="every landed day materialized after the outage", timeout=TIMEOUT_S,
                       interval=5, dump=dump)
            counts = materializations(instance, keys)
            twice = {key: n for key, n in counts.items() if n != 1}
            assert not twice, f"materialized more than once: {twice}\n{dump()}"
            failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
            assert failed, "the outage failed no run"

    # Nothing lost: the landed blobs survived the restart, and the stored tables hold their rows.
    store = BlobStoreResource(backend="azure", container=deployed.env["ML_ASSETS_CONTAINER"],
                              azure_connection_string=own_azurite.connection_string,
                              cache_dir=str(tmp_path / f"check-{uuid.uuid4().hex[:6]}"))
    datasets = store.datasets()
    zone = load_spec(SPEC_PATH).zone
    for source, frame in example_frames.items():
        for day in days_between(FIRST_DAY, LAST_DAY):
            expected = int((local_days(frame, "time_hour", zone) == day).sum())
            stored = datasets.read_frame(f"raw_{source}", [day.isoformat()])
            assert len(stored) == expected, f"raw_{source} of {day}: {len(stored)} rows stored, {expected} landed"
    for table in ("features", "labels"):
        assert datasets.partitions(table) == landed, f"{table}: {datasets.partitions(table)}"
        for day in landed:
            assert len(datasets.read_frame(table, [day])) > 0, f"{table} of {day} is empty"

