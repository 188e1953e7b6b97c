"""Features, labels, cluster_model and clusters on a real Spark standalone cluster whose workers
cannot see the driver's files: the same rows as local[2], and nothing driver-only in the data path."""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from ml_assets.defs.assets.clusters import CLUSTER_MODEL_BLOB
from ml_assets.resources.blob_store import BlobStoreResource
from ml_assets_tests.conftest import FIRST_DAY
from ml_assets_tests.fixtures.dagster import land_days, local_store_resource, make_resources
from ml_assets_tests.fixtures.spark_cluster import spark_cluster  # noqa: F401 - the fixture
from ml_assets_tests.fixtures.spark_driver import content_hashes, run_chain

pytestmark = [pytest.mark.spark, pytest.mark.integration]

DAYS = ["2013-01-01", "2013-01-02", "2013-01-03"]
LAST_DAY = FIRST_DAY.replace(day=3)


@dataclass
class Runs:
    reference: BlobStoreResource
    on_cluster: BlobStoreResource
    store_dir: Path
    cache_dir: Path
    driver: dict


@pytest.fixture(scope="module")
def runs(spark_cluster, spark_resource, tmp_path_factory, example_frames) -> Runs:  # noqa: F811
    """The chain on the cluster (a driver process) while the same chain runs on local[2] here."""
    import dagster as dg

    store_dir = spark_cluster.shared / "chain-store"
    cache_dir = spark_cluster.driver_only / "chain" / "cache"  # hidden from the workers
    on_cluster = BlobStoreResource(local_root=str(store_dir), cache_dir=str(cache_dir))
    land_days(on_cluster, example_frames, FIRST_DAY, LAST_DAY)
    hidden = spark_cluster.driver_only / "probe" / "driver-file.txt"
    visible = spark_cluster.shared / "probe" / "shared-file.txt"
    for path, text in ((hidden, "a\nb\n"), (visible, "a\nb\nc\n")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    driver = spark_cluster.start_driver("chain", "chain", store=store_dir, cache=cache_dir, first=DAYS[0],
                                        last=DAYS[-1], hidden=hidden, visible=visible)
    try:
        reference = local_store_resource(tmp_path_factory.mktemp("reference"))
        land_days(reference, example_frames, FIRST_DAY, LAST_DAY)
        with dg.instance_for_test() as instance:
            run_chain(make_resources(reference, spark_resource), instance, DAYS)
    finally:
        result = driver.result()
    return Runs(reference, on_cluster, store_dir, cache_dir, result)


def test_workers_cannot_read_a_file_only_the_driver_sees(runs):
    probe = runs.driver["probe"]
    # The driver lists the file (it sees it), the executors then fail to open it.
    assert probe["hidden"]["failed"], probe
    assert "FILE_NOT_EXIST" in probe["hidden"]["error"] or "does not exist" in probe["hidden"]["error"]
    assert probe["visible_rows"] == 3


def test_cluster_materializes_the_same_rows_as_local(runs, spark_cluster):  # noqa: F811
    assert runs.driver["master"] == spark_cluster.master_url and runs.driver["executors"] == 2
    expected = content_hashes(runs.reference.datasets())
    assert sorted(expected) == [f"{t}/{d}" for t in ("clusters", "features", "labels") for d in DAYS]
    assert all(int(h.split(":")[0]) > 0 for h in expected.values())
    assert content_hashes(runs.on_cluster.datasets()) == expected
    model = json.loads(runs.on_cluster.blob_store().get(CLUSTER_MODEL_BLOB))
    # The k-means means and stds are sums over partitions: two executors add them in another order
    # than local[*], so they agree to ~1e-15 relative, not bit for bit (the assignments above do).
    assert _close(model, json.loads(runs.reference.blob_store().get(CLUSTER_MODEL_BLOB)))
    # Staged outputs were all published (moved) and the staging prefix cleaned up; the driver
    # never wrote Spark output into its cache.
    assert not (runs.store_dir / "_staging").exists()
    assert not (runs.cache_dir / "spark-out").exists()


def _close(left, right) -> bool:
    """Equal structure and equal values, floats to 1e-9 relative."""
    if isinstance(left, dict):
        return isinstance(right, dict) and left.keys() == right.keys() and all(_close(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return isinstance(right, list) and len(left) == len(right) and all(map(_close, left, right))
    if isinstance(left, float) or isinstance(right, float):
        return math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-12)
    return left == right
