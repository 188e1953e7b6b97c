"""When daily assets rebuild on their own."""

import dagster as dg

# Dagster's all_deps_blocking_checks_passed() needs a "passed" verdict per day, but a check that
# runs in a range run (features and labels: one Spark run for many days) records one verdict for
# the whole range and leaves every day's status unresolved, so everything downstream of a range run
# would wait forever. Instead: no dependency has a *failed* blocking check for the day (raw checks
# run per day and fail per day; a failing check inside a range run already stops that run's
# downstream steps).
no_failed_blocking_check_upstream = ~dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.any_checks_match(dg.AutomationCondition.check_failed(), blocking_only=True)
).with_label("no dependency failed a blocking check")

# eager() only looks at the latest time window, so a newly landed *historic* day would never be
# picked up; this is eager() without that limit, and never on top of failed blocking checks.
on_upstream_day_changed = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & no_failed_blocking_check_upstream
).with_label("upstream day landed or changed, and its checks passed")

# features and labels: raw records the landed blobs' digest as its data version, and a backfill of
# a day already stored restates raw with the same version (so the backfill ends green); only a new
# version of the day rebuilds it.
on_raw_day_changed = (
    dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed()).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & no_failed_blocking_check_upstream
).with_label("a new version of the day's raw data landed, and its checks passed")

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
        & no_failed_blocking_check_upstream
    ).with_label("the day's data landed or changed, and its checks passed")
