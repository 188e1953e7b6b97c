"""When daily assets rebuild on their own."""

import dagster as dg

# eager() only looks at the latest time window, so a newly landed *historic* day would never be
# picked up; this is eager() without that limit, and never on top of failed blocking checks.
on_upstream_day_changed = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("upstream day landed or changed, and its checks passed")

data_automation_sensor = dg.AutomationConditionSensorDefinition(
    "data_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)


def on_day_changed_ignoring(*ignored: dg.AssetsDefinition) -> dg.AutomationCondition:
    """on_upstream_day_changed, except that updates of the ``ignored`` (unpartitioned) deps do not
    rebuild every day: a new champion judges the days that come after it, not all of history."""
    selection = dg.AssetSelection.assets(*ignored)
    return (
        dg.AutomationCondition.any_deps_updated().ignore(selection).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("the day's data landed or changed, and its checks passed")
