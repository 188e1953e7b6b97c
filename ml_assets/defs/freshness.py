"""Freshness policies from the spec's monitoring.freshness section.

Dagster's FreshnessDaemon (on by default in ``dagster dev`` / ``dagster-daemon``) judges every
asset that carries one of these against its last materialization (any partition) and records
PASS / WARN / FAIL; the ``freshness_alerts`` sensor emails when that state changes.
"""

from datetime import timedelta

import dagster as dg

from ml_assets.defs.dataset import SPEC

_FRESHNESS = SPEC.monitoring.freshness

# raw_<source>, features, labels, clusters: a day lands daily, so two missed days fail.
data_freshness = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=_FRESHNESS.data_fail_hours),
    warn_window=timedelta(hours=_FRESHNESS.data_warn_hours) if _FRESHNESS.data_warn_hours is not None else None,
)

# candidate_model: a training cycle evaluates a candidate even when the champion is kept.
evaluation_freshness = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=_FRESHNESS.evaluation_fail_days))

# deployed_model: nothing promoted for this long means the gate or the pipeline is stuck.
deployment_freshness = dg.FreshnessPolicy.time_window(fail_window=timedelta(days=_FRESHNESS.deployment_fail_days))
