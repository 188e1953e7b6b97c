"""The training pool beside the Spark pool: which steps declare it, and its limit from config
reaching the instance (written by ensure_pool_limits) and the plan the executor runs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.execution.api import create_execution_plan
from dagster._core.instance.config import PoolGranularity

from ml_assets.definitions import defs
from ml_assets.defs.execution import SPARK_POOL, TRAINING_POOL, ensure_pool_limits
from ml_assets.defs.resources import resources_for_environment
from ml_assets.defs.settings import EnvConfigError, pool_limits
from ml_assets_tests.fixtures.environment import ml_env_fixture  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]
TRAINING_STEPS = {"keras_candidate", "sklearn_candidate"}


def _cluster_instance(tmp_path):
    """The cluster profile's concurrency settings (op granularity, default_limit 1) on a test instance."""
    config = yaml.safe_load((REPO / "deploy" / "dagster.cluster.yaml").read_text())
    config.pop("storage", None)
    return dg.instance_for_test(overrides=config, temp_dir=str(tmp_path))


def _limits(instance) -> dict[str, int]:
    return {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}


def test_candidate_training_steps_are_in_the_training_pool():
    pools = {ad.node_def.name: ad.node_def.pool for ad in defs.resolve_asset_graph().assets_defs}
    assert {name for name, pool in pools.items() if pool == TRAINING_POOL} == TRAINING_STEPS
    assert pools["training_set"] == SPARK_POOL and pools["candidate_model"] == SPARK_POOL
    # The plan the executor runs (Celery or in process) carries the pool of each step.
    plan = create_execution_plan(defs.resolve_job_def("training_job"))
    assert {key: plan.get_step_by_key(key).pool for key in TRAINING_STEPS} == dict.fromkeys(TRAINING_STEPS,
                                                                                           TRAINING_POOL)


def test_training_pool_limit_from_config_reaches_the_instance(ml_env, tmp_path):
    with _cluster_instance(tmp_path) as instance:
        assert instance.get_concurrency_config().pool_config.pool_granularity == PoolGranularity.OP
        # Unset: the profile's default_limit, so a fresh cluster trains one candidate at a time.
        assert ensure_pool_limits(instance) == []
        assert _limits(instance) == {SPARK_POOL: 1, TRAINING_POOL: 1}
        ml_env(ML_ASSETS_TRAINING_POOL_LIMIT="3", ML_ASSETS_SPARK_POOL_LIMIT="2")
        assert pool_limits() == {SPARK_POOL: 2, TRAINING_POOL: 3}
        assert ensure_pool_limits(instance) == []
        assert _limits(instance) == {SPARK_POOL: 2, TRAINING_POOL: 3}
        # The slots the run workers claim a step's slot from (op granularity).
        assert instance.event_log_storage.get_concurrency_info(TRAINING_POOL).slot_count == 3
        # Config is the source of truth when set: a hand-set limit is put back on the next tick.
        instance.event_log_storage.set_concurrency_slots(TRAINING_POOL, 7)
        ensure_pool_limits(instance)
        assert _limits(instance)[TRAINING_POOL] == 3


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_bad_training_pool_limit_names_the_variable(ml_env, value):
    ml_env(ML_ASSETS_TRAINING_POOL_LIMIT=value)
    with pytest.raises(EnvConfigError, match=f"ML_ASSETS_TRAINING_POOL_LIMIT='{value}'.*'training' pool"):
        resources_for_environment("local")
