"""The code location: what it defines, that it loads fast (no tensorflow/pyspark) and validates."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ml_assets.definitions import defs

REPO = Path(__file__).resolve().parent.parent


def test_asset_graph_groups_and_lineage():
    graph = defs.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert groups == {
        "raw_flights": "raw",
        "raw_weather": "raw",
        "features": "features",
        "labels": "labels",
        "cluster_model": "clusters",
        "clusters": "clusters",
        "training_set": "training",
        "keras_candidate": "training",
        "sklearn_candidate": "training",
        "candidate_model": "training",
        "deployed_model": "deployment",
        "reference_stats": "monitoring",
        "feature_drift": "monitoring",
        "live_performance": "monitoring",
        "estimated_performance": "monitoring",
    }
    parents = {k.to_user_string(): sorted(p.to_user_string() for p in graph.get(k).parent_keys)
               for k in graph.get_all_asset_keys()}
    assert parents["features"] == ["raw_flights", "raw_weather"]
    assert parents["labels"] == ["raw_flights", "raw_weather"]
    assert parents["cluster_model"] == ["features"]
    assert parents["clusters"] == ["cluster_model", "features"]
    assert parents["training_set"] == ["clusters", "features", "labels"]
    assert parents["candidate_model"] == ["keras_candidate", "sklearn_candidate", "training_set"]
    assert parents["deployed_model"] == ["candidate_model"]
    assert parents["reference_stats"] == ["deployed_model"]
    assert parents["feature_drift"] == ["features", "reference_stats"]
    assert parents["live_performance"] == ["deployed_model", "features", "labels"]
    assert parents["estimated_performance"] == ["deployed_model", "features"]


def test_checks_are_blocking():
    graph = defs.resolve_asset_graph()
    checks = {
        (key.asset_key.to_user_string(), key.name): graph.get_check_spec(key).blocking
        for key in graph.asset_check_keys
    }
    assert checks == {
        ("raw_flights", "row_count"): True,
        ("raw_flights", "null_rates"): True,
        ("raw_flights", "unique_keys"): True,
        ("raw_flights", "clock"): True,
        ("raw_weather", "row_count"): True,
        ("raw_weather", "null_rates"): True,
        ("raw_weather", "unique_keys"): True,
        ("raw_weather", "clock"): True,
        ("features", "features_unique_keys"): True,
        ("features", "features_schema"): True,
        ("features", "features_quality"): True,
        ("labels", "label_rate"): True,
        ("candidate_model", "promotion_gate"): True,
    }


def test_sensors_jobs_and_automation():
    sensors = {s.name: s.default_status for s in defs.sensors}
    assert sensors == {
        "landed_blobs": dg.DefaultSensorStatus.RUNNING,
        "data_automation": dg.DefaultSensorStatus.RUNNING,
        "retrain_on_drift": dg.DefaultSensorStatus.RUNNING,
        "retrain_on_performance": dg.DefaultSensorStatus.RUNNING,
        "freshness_alerts": dg.DefaultSensorStatus.RUNNING,
        "training_report_on_success": dg.DefaultSensorStatus.RUNNING,
        "training_report_on_failure": dg.DefaultSensorStatus.RUNNING,
    }
    assert {j.name for j in defs.jobs} == {"raw_job", "feature_job", "training_job", "store_gc_job"}
    # The cron fallback is off unless the spec sets monitoring.retraining.fallback_cron.
    assert {s.name: s.default_status for s in defs.schedules} == {
        "retrain_fallback": dg.DefaultScheduleStatus.STOPPED,
        "store_gc_schedule": dg.DefaultScheduleStatus.STOPPED,  # clean-up is opt-in
    }
    graph = defs.resolve_asset_graph()
    automated = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).automation_condition}
    assert automated == {"features", "labels", "cluster_model", "clusters", "deployed_model", "reference_stats",
                         "feature_drift", "live_performance", "estimated_performance"}
    for key in ("features", "labels", "clusters"):
        policy = graph.get(dg.AssetKey(key)).backfill_policy
        assert policy is not None and policy.max_partitions_per_run is None  # single run


def test_definitions_load_without_tensorflow_or_pyspark():
    code = (
        "import sys, json, ml_assets.definitions; "
        "print(json.dumps(sorted(m for m in ('tensorflow', 'keras', 'pyspark', 'torch') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.integration
def test_dagster_definitions_validate_cli(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    dagster = Path(sys.executable).parent / "dagster"
    result = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr
