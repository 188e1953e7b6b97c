"""The freshness policies come from the spec and sit on the right assets of the real code location."""

import datetime as dt

import dagster as dg

from ml_assets.defs.dataset import SPEC
from ml_assets.defs.freshness import data_freshness, deployment_freshness, evaluation_freshness


def _windows(policy) -> tuple[dt.timedelta, dt.timedelta | None]:
    warn = policy.warn_window.to_timedelta() if policy.warn_window else None
    return policy.fail_window.to_timedelta(), warn


def test_policies_follow_the_spec():
    spec = SPEC.monitoring.freshness
    assert _windows(data_freshness) == (dt.timedelta(hours=spec.data_fail_hours), dt.timedelta(hours=spec.data_warn_hours))
    assert _windows(evaluation_freshness) == (dt.timedelta(days=spec.evaluation_fail_days), None)
    assert _windows(deployment_freshness) == (dt.timedelta(days=spec.deployment_fail_days), None)
    assert _windows(data_freshness) == (dt.timedelta(hours=48), dt.timedelta(hours=30))  # the flights defaults


def test_real_assets_carry_the_policies():
    from ml_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    expected = {
        **{f"raw_{source}": data_freshness for source in SPEC.sources},
        "features": data_freshness,
        "labels": data_freshness,
        "clusters": data_freshness,
        "candidate_model": evaluation_freshness,
        "deployed_model": deployment_freshness,
    }
    assert "raw_flights" in expected
    for name, policy in expected.items():
        assert graph.get(dg.AssetKey(name)).freshness_policy == policy, name
    with_policy = {node.key.to_user_string() for node in graph.asset_nodes if node.freshness_policy is not None}
    assert with_policy == set(expected)  # cluster_model, training_set and the candidates have none
