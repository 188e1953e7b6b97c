"""Email when an asset's freshness turns WARN or FAIL, and again when it is back to PASS.

OSS Dagster evaluates freshness policies (the FreshnessDaemon records PASS / WARN / FAIL /
UNKNOWN on every change) but sends no alerts. This sensor reads the recorded states of every
asset of the code location that has a policy, compares them with the states of its previous
tick (the cursor: JSON ``{asset: state}``), and sends at most one email per tick. On the first
tick every asset already WARN or FAIL is reported, since no earlier tick did. A failed delivery
fails the tick without moving the cursor, so the next tick sends the alert again.
"""

import datetime as dt
import json

import dagster as dg
from dagster._time import get_current_datetime  # the clock the FreshnessDaemon judges by

from ml_assets.defs.dataset import SPEC
from ml_assets.reporting.alerts import (
    UNKNOWN,
    AssetFreshness,
    build_alert_message,
    describe_cron,
    describe_time_window,
    state_counts,
    transitions,
)
from ml_assets.resources.email import EmailResource

FRESHNESS_SENSOR = "freshness_alerts"


def _code_location_policies() -> dict[dg.AssetKey, dg.FreshnessPolicy]:
    """This package's code location, for a context that carries none (a sensor called by hand)."""
    from ml_assets.definitions import defs  # at tick time: definitions imports this module

    return watched_policies(defs.get_repository_def())


def watched_policies(repository_def: dg.RepositoryDefinition | None) -> dict[dg.AssetKey, dg.FreshnessPolicy]:
    """Every asset of the code location with a freshness policy, read as the FreshnessDaemon reads it."""
    if repository_def is None:
        return _code_location_policies()
    policies = {}
    for node in repository_def.asset_graph.asset_nodes:
        policy = node.freshness_policy_or_from_metadata
        if policy is not None:
            policies[node.key] = policy
    return policies


def describe_policy(policy: dg.FreshnessPolicy) -> str:
    fail_window = getattr(policy, "fail_window", None)
    if fail_window is not None:  # TimeWindowFreshnessPolicy
        warn_window = policy.warn_window
        return describe_time_window(fail_window.to_timedelta(), warn_window.to_timedelta() if warn_window else None)
    if hasattr(policy, "deadline_cron"):  # CronFreshnessPolicy
        return describe_cron(policy.deadline_cron, policy.lower_bound_delta, policy.timezone)
    return type(policy).__name__


def _read_cursor(context: dg.SensorEvaluationContext) -> dict[str, str] | None:
    if not context.cursor:
        return None
    try:
        states = json.loads(context.cursor)
    except ValueError:
        states = None
    if not isinstance(states, dict):
        context.log.warning(f"ignoring unreadable cursor {context.cursor!r}; treating this as the first tick")
        return None
    return {str(asset): str(state) for asset, state in states.items()}


def _last_materialized(instance: dg.DagsterInstance, keys: list[dg.AssetKey]) -> dict[dg.AssetKey, dt.datetime]:
    """When each asset last materialized (any partition): what a time-window policy is judged on."""
    found = {}
    for record in instance.get_asset_records(keys):
        event = record.asset_entry.last_materialization
        if event is not None:
            found[record.asset_entry.asset_key] = dt.datetime.fromtimestamp(event.timestamp, dt.UTC)
    return found


def _describe(
    instance: dg.DagsterInstance,
    names: list[str],
    keys: dict[str, dg.AssetKey],
    policies: dict[dg.AssetKey, dg.FreshnessPolicy],
    previous: dict[str, str],
    current: dict[str, str],
    now: dt.datetime,
) -> list[AssetFreshness]:
    last = _last_materialized(instance, [keys[name] for name in names])
    rows = []
    for name in names:
        materialized = last.get(keys[name])
        rows.append(
            AssetFreshness(
                asset=name,
                state=current[name],
                before=previous.get(name),
                policy=describe_policy(policies[keys[name]]),
                last_materialization=materialized,
                age=now - materialized if materialized else None,
            )
        )
    return rows


def _quiet_reason(previous: dict[str, str] | None, current: dict[str, str], quiet: list[str]) -> str:
    if previous is None:
        return "first check, none WARN or FAIL"
    notes = [f"{name} {previous[name]} -> {current[name]}" for name in quiet]
    notes += [f"{name} newly watched ({current[name]})" for name in current if name not in previous]
    return "no change" if not notes else "no alert for " + ", ".join(notes)


@dg.sensor(
    name=FRESHNESS_SENSOR,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Emails when an asset turns WARN or FAIL against its freshness policy, and when it "
    "is back to PASS (one email per tick).",
)
def freshness_alerts(context: dg.SensorEvaluationContext, email: EmailResource) -> dg.SensorResult:
    policies = watched_policies(context.repository_def)
    if not policies:
        return dg.SensorResult(skip_reason=dg.SkipReason("no asset of this code location has a freshness policy"))
    keys = {key.to_user_string(): key for key in sorted(policies, key=lambda k: k.to_user_string())}
    records = context.instance.get_freshness_state_records(list(keys.values()))
    current = {
        name: records[key].freshness_state.value if key in records else UNKNOWN for name, key in keys.items()
    }
    previous = _read_cursor(context)
    change = transitions(previous, current)
    counts = state_counts(current)
    cursor = json.dumps(current, sort_keys=True)
    if not change:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"{counts}; {_quiet_reason(previous, current, change.quiet)}"),
            cursor=cursor,
        )

    now = get_current_datetime()
    names = [*change.stale, *change.recovered, *change.still_stale]
    rows = {row.asset: row for row in _describe(context.instance, names, keys, policies, previous or {}, current, now)}
    message = build_alert_message(
        SPEC.name,
        stale=[rows[name] for name in change.stale],
        recovered=[rows[name] for name in change.recovered],
        still_stale=[rows[name] for name in change.still_stale],
        sender=email.sender,
        recipients=email.recipients,
        checked_at=now,
        counts=counts,
    )
    where = email.mailer().send(message)
    context.log.info(f"freshness alert {message['Subject']!r} sent to {where}")
    # Not a skip in the usual sense: this sensor never requests runs, and the reason shows in the
    # tick history (otherwise "Sensor function returned an empty result").
    return dg.SensorResult(
        skip_reason=dg.SkipReason(f"{counts}; emailed {message['Subject']!r} to {where}"), cursor=cursor
    )


freshness_alerts_sensor = freshness_alerts
