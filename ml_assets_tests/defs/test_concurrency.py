"""The Spark pool: every Spark-holding step but training declares it, and the run queue starts one such run at a time."""

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.instance.config import PoolGranularity
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from ml_assets.definitions import defs
from ml_assets.defs.execution import SPARK_POOL, STORE_RETRY, TRAINING_POOL, ensure_pool_limits

REPO = Path(__file__).resolve().parents[2]
SPARK_IO = "spark_io"


def _repo_instance_config() -> dict:
    """The repository's dagster.yaml as instance overrides (its storage stays the test's own)."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config.pop("storage", None)
    return config


def _loaded_inputs(node_def) -> list[str]:
    return [i.name for i in node_def.input_defs if not i.dagster_type.is_nothing]


def _holds_spark(assets_def: dg.AssetsDefinition, io_manager_of: dict[dg.AssetKey, str]) -> bool:
    """A step holds a SparkSession if it is a Spark asset or loads a table stored by the Spark IO manager."""
    spark_kind = any("spark" in assets_def.specs_by_key[k].kinds for k in assets_def.keys)
    loaded = [assets_def.keys_by_input_name[name] for name in _loaded_inputs(assets_def.node_def)]
    return spark_kind or any(io_manager_of.get(key) == SPARK_IO for key in loaded)


def test_every_spark_holding_step_is_in_the_spark_pool_and_no_other():
    """... or in the training pool: the candidates read the training set through Spark, but what
    bounds them is the fit on the worker (ml_assets/defs/execution.py)."""
    graph = defs.resolve_asset_graph()
    io_manager_of = {key: ad.get_io_manager_key_for_asset_key(key) for ad in graph.assets_defs for key in ad.keys}
    holding, pooled, training = set(), set(), set()
    for assets_def in graph.assets_defs:
        name = assets_def.node_def.name
        if _holds_spark(assets_def, io_manager_of):
            holding.add(name)
        if assets_def.node_def.pool == SPARK_POOL:
            pooled.add(name)
        if assets_def.node_def.pool == TRAINING_POOL:
            training.add(name)
    assert training == {"keras_candidate", "sklearn_candidate"}
    assert holding == pooled | training
    assert {"features", "labels", "cluster_model", "clusters", "training_set", "candidate_model",
            "features_checks", "labels_label_rate"} <= pooled
    assert not {"raw_flights", "raw_weather", "deployed_model", "feature_drift", "live_performance"} & pooled


def test_blob_touching_assets_retry_store_errors_with_backoff():
    graph = defs.resolve_asset_graph()
    for assets_def in graph.assets_defs:
        policy = assets_def.node_def.retry_policy
        assert policy == STORE_RETRY, assets_def.node_def.name
    assert STORE_RETRY.backoff == dg.Backoff.EXPONENTIAL and STORE_RETRY.max_retries >= 1


def test_repository_instance_config_limits_the_spark_pool_to_one_run(tmp_path):
    with dg.instance_for_test(overrides=_repo_instance_config(), temp_dir=str(tmp_path)) as instance:
        pools = instance.get_concurrency_config().pool_config
        assert pools.pool_granularity == PoolGranularity.RUN
        assert instance.global_op_concurrency_default_limit == 1
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert ensure_pool_limits(instance) == []
        assert {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()} == {
            SPARK_POOL: 1, TRAINING_POOL: 1}


def test_ensure_pool_limits_never_overwrites_a_limit_set_by_hand(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:  # no default_limit configured
        assert ensure_pool_limits(instance) == [SPARK_POOL, TRAINING_POOL]
        instance.event_log_storage.set_concurrency_slots(SPARK_POOL, 2)
        instance.event_log_storage.set_concurrency_slots(TRAINING_POOL, 3)
        assert ensure_pool_limits(instance) == []
        assert {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()} == {
            SPARK_POOL: 2, TRAINING_POOL: 3}


@pytest.fixture
def queue(tmp_path):
    """A fresh instance with the repository's dagster.yaml, the real code location, and a launcher
    that only records launches (a launched run stays STARTING, i.e. holds its slots)."""
    overrides = {**_repo_instance_config(),
                 "run_launcher": {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}}
    with dg.instance_for_test(overrides=overrides, temp_dir=str(tmp_path)) as instance:
        target = ModuleTarget(module_name="ml_assets.definitions", attribute="defs", working_directory=str(REPO),
                              location_name="ml_assets")
        with create_test_daemon_workspace_context(target, instance) as workspace:
            yield instance, workspace


def _queue_run(instance, workspace, assets: list[str], day: str | None = None) -> str:
    remote_job = (workspace.create_request_context().get_code_location("ml_assets")
                  .get_repository("__repository__").get_full_job("__ASSET_JOB"))
    keys = frozenset(dg.AssetKey(a) for a in assets)
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=keys)
    run = instance.create_run_for_job(
        job, status=dg.DagsterRunStatus.QUEUED, asset_selection=keys,
        tags={"dagster/partition": day} if day else None,
        remote_job_origin=remote_job.get_remote_origin(), job_code_origin=remote_job.get_python_origin())
    return run.run_id


def _statuses(instance, run_ids) -> list[str]:
    return [instance.get_run_by_id(r).status.value for r in run_ids]


def test_queue_starts_one_spark_run_at_a_time(queue):
    instance, workspace = queue
    ensure_pool_limits(instance)  # what the landed_blobs sensor does on each tick, before any Spark run
    features = _queue_run(instance, workspace, ["features", "labels"], "2013-01-02")
    clusters = _queue_run(instance, workspace, ["clusters"], "2013-01-02")
    raw = _queue_run(instance, workspace, ["raw_flights", "raw_weather"], "2013-01-03")
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)

    list(daemon.run_iteration(workspace))
    # max_concurrent_runs is 2: one Spark run and the raw run start, the second Spark run waits.
    assert _statuses(instance, [features, clusters, raw]) == ["STARTING", "QUEUED", "STARTING"]
    list(daemon.run_iteration(workspace))
    assert _statuses(instance, [features, clusters]) == ["STARTING", "QUEUED"]

    instance.report_run_failed(instance.get_run_by_id(raw))  # frees a run slot, not the Spark one
    list(daemon.run_iteration(workspace))
    assert _statuses(instance, [features, clusters]) == ["STARTING", "QUEUED"]

    instance.report_run_failed(instance.get_run_by_id(features))  # the Spark run ends
    list(daemon.run_iteration(workspace))
    assert _statuses(instance, [clusters]) == ["STARTING"]
