"""A real blob-store outage: Azurite stops, raw runs fail, Azurite comes back, every day ends up stored once."""

import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from ml_assets.defs.assets import raw
from ml_assets.defs.sensors import landed_blobs
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets_tests.conftest import FIRST_DAY
from ml_assets_tests.defs.sensors.test_landed_blobs import launch, materializations, requested, tick
from ml_assets_tests.fixtures.azurite import Azurite, _answers, _free_port, find_azurite_blob
from ml_assets_tests.fixtures.dagster import land_days, make_resources

pytestmark = pytest.mark.azurite

DAYS = ["2013-01-01", "2013-01-02"]
# Steps retry once, quickly: the outage has to outlast a step's own retries here.
FAST_RETRY = dg.RetryPolicy(max_retries=1, delay=0.2)


@contextmanager
def azurite_process(location: Path, port: int) -> Iterator[None]:
    """An Azurite on a fixed port and folder, so that a restart serves the same blobs."""
    binary = find_azurite_blob()
    assert binary, "azurite-blob not found: run `make tools`"
    with open(location.parent / f"azurite-{port}.log", "ab") as log:
        process = subprocess.Popen(
            [binary, "--location", str(location), "--blobHost", "127.0.0.1", "--blobPort", str(port),
             "--disableTelemetry", "--loose", "--skipApiVersionCheck"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not _answers("127.0.0.1", port):
                assert process.poll() is None and time.monotonic() < deadline, "Azurite did not start"
                time.sleep(0.1)
            yield
        finally:
            process.terminate()
            process.wait(timeout=10)
            while _answers("127.0.0.1", port):  # the port is free again before a restart
                time.sleep(0.1)


def test_days_failed_in_an_outage_are_stored_once_after_it(tmp_path, spark_resource, example_frames, instance,
                                                         monkeypatch):
    location, port = tmp_path / "azurite", _free_port("127.0.0.1")
    location.mkdir()
    azurite = Azurite(host="127.0.0.1", port=port, location=location)
    # A short store timeout: a stopped store fails each request within a few seconds.
    store = BlobStoreResource(backend="azure", container=f"ml-{uuid.uuid4().hex[:12]}",
                              azure_connection_string=azurite.connection_string,
                              cache_dir=str(tmp_path / "cache"), timeout_s=3)
    resources = make_resources(store, spark_resource)
    monkeypatch.setattr(raw, "STORE_RETRY", FAST_RETRY)
    raw_assets = [raw.build_raw_asset(source) for source in raw.SPEC.sources]

    with azurite_process(location, port):
        land_days(store, example_frames, FIRST_DAY, FIRST_DAY.replace(day=2))
        first = tick(store, instance)
        assert sorted(requested(first)) == DAYS
    # The store goes away after the sensor requested the days and before their runs start.
    runs = launch(resources, instance, first, raw_assets)
    assert not any(r.success for r in runs)
    assert all(materializations(instance, day) == {"raw_flights": 0, "raw_weather": 0} for day in DAYS)
    with pytest.raises(Exception, match="no answer from the store"):
        tick(store, instance)  # the tick fails while the store is down; the daemon ticks again later

    with azurite_process(location, port):
        waiting = tick(store, instance)
        assert not waiting.run_requests and "waiting to retry (attempt 2" in waiting.skip_reason.skip_message
        monkeypatch.setattr(landed_blobs, "RETRY_BACKOFF_SECONDS", 0)  # the backoff has passed
        retry = tick(store, instance)
        assert sorted(requested(retry)) == DAYS
        assert all(r.run_key.endswith("attempt-2") for r in retry.run_requests)
        assert all(r.success for r in launch(resources, instance, retry, raw_assets))
        assert not tick(store, instance).run_requests
    assert all(materializations(instance, day) == {"raw_flights": 1, "raw_weather": 1} for day in DAYS)
