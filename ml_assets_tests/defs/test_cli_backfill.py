"""A range backfill from the Dagster CLI: one run, every partition written, on a fresh instance."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ml_assets.defs.resources import build_resources, local_blob_store
from ml_assets_tests.conftest import FIRST_DAY
from ml_assets_tests.fixtures.dagster import land_days, materialize_raw

pytestmark = [pytest.mark.integration, pytest.mark.spark]

REPO = Path(__file__).resolve().parents[2]
DAYS = ["2013-01-01", "2013-01-02", "2013-01-03"]


def test_partition_range_from_cli_is_one_run(tmp_path, monkeypatch, spark_resource, example_frames):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {"DAGSTER_HOME": str(home), "ML_ASSETS_STORE_ROOT": str(tmp_path / "store"),
           "ML_ASSETS_CACHE_DIR": str(tmp_path / "cache"), "ML_ASSETS_SPARK_MASTER": "local[2]"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    store = local_blob_store()
    land_days(store, example_frames, FIRST_DAY, FIRST_DAY.replace(day=3))
    with dg.DagsterInstance.get() as instance:
        materialize_raw(build_resources(store, spark_resource), instance, DAYS)

    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "ml_assets.definitions",
         "--select", "features,labels", "--partition-range", f"{DAYS[0]}...{DAYS[-1]}"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    with dg.DagsterInstance.get() as instance:
        cli_runs = [r for r in instance.get_runs() if r.asset_selection and dg.AssetKey("features") in r.asset_selection]
        assert len(cli_runs) == 1
        for asset in ("features", "labels"):
            materialized = instance.get_materialized_partitions(dg.AssetKey(asset))
            assert materialized == set(DAYS)
    assert store.datasets().partitions("features") == DAYS
