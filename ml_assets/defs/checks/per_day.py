"""Check verdicts per day in a range run: each day's evaluation carries its own partition.

Dagster gives an AssetCheckResult the run's partition; a single-run range has none, so its one
result would stand for every day. These helpers turn per-day results into AssetCheckEvaluations
for their day, each pointing at that day's latest materialization (what Dagster itself records
for a one-day run, and what makes the verdict "current" for automation and the UI).
"""

from collections.abc import Iterator, Mapping, Sequence

import dagster as dg

from ml_assets.defs.raw_state import latest_materializations


def range_days(context) -> list[str] | None:
    """The run's days when it is a range of more than one day, else None (the one-day path)."""
    if not context.has_partition_key_range:
        return None
    days = list(context.partition_keys)
    return days if len(days) > 1 else None


def _targets(instance: dg.DagsterInstance, key: dg.AssetKey, days: Sequence[str]) -> dict[str, object]:
    """Each day's latest materialization as a check target (two queries, whatever the range length)."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    return {
        day: AssetCheckEvaluationTargetMaterializationData(
            storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp)
        for day, record in latest_materializations(instance, key, days).items()
    }


def day_evaluations(instance: dg.DagsterInstance, key: dg.AssetKey,
                    results: Mapping[str, Sequence[dg.AssetCheckResult]],
                    blocking: bool = True) -> Iterator[dg.AssetCheckEvaluation]:
    """One evaluation per (day, result); yield them after the days' materializations are logged."""
    targets = _targets(instance, key, list(results))
    for day, day_results in results.items():
        for result in day_results:
            yield dg.AssetCheckEvaluation(
                asset_key=key, check_name=result.check_name, passed=result.passed,
                metadata=result.metadata, severity=result.severity, description=result.description,
                target_materialization_data=targets.get(day), blocking=blocking, partition=day,
            )
