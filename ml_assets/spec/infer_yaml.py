"""The commented YAML `ml-assets spec init` writes (ml_assets.spec.infer infers what goes in it)."""

from __future__ import annotations

import json
from typing import Any

from ml_assets.spec.infer import (
    DEFAULT_NULL_BOUND,
    FEED_DELAY_MARGIN,
    LABEL_MARGIN,
    MAX_CATEGORIES,
    MAX_INT_CATEGORIES,
    MAX_KEY_COLUMNS,
    MIN_DAY_ROWS,
    NULL_MARGIN,
    Inferred,
)


def _flow(value: Any) -> str:
    """A scalar or list as YAML flow text (JSON is YAML; strings are quoted so none is read as a bool)."""
    return json.dumps(value, ensure_ascii=False)


def render(inferred: Inferred, *, name: str, source: str, source_format: str, label: str, label_name: str,
           timestamp: str, timezone: str, sample: str, feed_source: str | None = None) -> str:
    """The commented spec YAML."""
    i = inferred
    lines = [
        f"# Inferred by `ml-assets spec init` from {sample} ({i.days} days from {i.start_date}). A starting point:",
        "# read every section, then land data with `ml-assets land` and run it.",
        f"name: {name}",
        f"description: {_flow(f'{label} (spec inferred from {sample})')}",
        f"start_date: {i.start_date}",
        f"timezone: {timezone}",
    ]
    if i.key:
        lines += [f"# The fewest columns (up to {MAX_KEY_COLUMNS}) never empty and unique together in the sample: "
                  "features and labels", "# join on them. Check they identify a row in all your data.",
                  f"key_columns: {_flow(i.key)}"]
    else:
        lines += [f"# No {MAX_KEY_COLUMNS} columns are unique in the sample: key_columns defaults to every column (a "
                  "row is its values;", "# rows with an empty value cannot join their label). Declare an id column "
                  "if the data has one."]
    lines += ["", "sources:", f"  {source}:", f"    prefix: raw/{source}", f"    format: {source_format}",
              f"    timestamp_column: {timestamp}"]
    if i.timestamp_format:
        lines.append(f"    timestamp_format: {_flow(i.timestamp_format)}")
    lines += [f"    # Half the 5th percentile of the sample's daily row counts (days under {MIN_DAY_ROWS} rows ignored).",
              f"    min_rows: {i.min_rows}", "    columns:"]
    lines += [f"      {column}: {kind.value}" for column, kind in i.types.items()]
    if i.feed is not None and feed_source:
        lines += _feed_lines(i, feed_source, source_format)
    lines += ["", "# One source of features: no join (the default). `clustering` is left to its default too: k-means",
              "# with k=4 on every numeric feature, refitted weekly.", "", "label:", f"  name: {label_name}",
              f"  expression: {_flow(label)}"]
    if i.exclude_when:
        lines += ["  # Its columns are empty in some rows of the sample: those rows get no label (not a negative one).",
                  f"  exclude_when: {_flow(i.exclude_when)}"]
    lines += ["", "features:",
              "  # Remove columns known only after the outcome (a departure delay predicting an arrival delay):",
              "  # they leak the label. Only the label expression's own columns are left out here.",
              f"  # float columns and int columns with more than {MAX_INT_CATEGORIES} distinct values",
              f"  numeric: {_flow(i.numeric)}",
              f"  # bools, ints with at most {MAX_INT_CATEGORIES} values, strings with at most {MAX_CATEGORIES} values",
              f"  categorical: {_flow(i.categorical)}"]
    if i.left_out:
        lines.append("  # Left out:")
        lines += [f"  #   {column}: {why}" for column, why in i.left_out.items()]
    lines += ["", "quality:", f"  min_rows: {i.min_rows}",
              f"  # A column empty on no day of the sample may be empty in up to {DEFAULT_NULL_BOUND:.0%} of a day's rows.",
              f"  max_null_rate: {DEFAULT_NULL_BOUND}"]
    overrides = {}
    for column, bound in i.null_bounds.items():
        overrides[f"{source}.{column}"] = bound
        if column in i.numeric or column in i.categorical:
            overrides[column] = bound
    if overrides:
        lines += [f"  # Columns empty in the sample: highest daily null rate plus max({NULL_MARGIN}, half of it).",
                  "  null_rate_overrides:"]
        lines += [f"    {column}: {bound}" for column, bound in overrides.items()]
    lines += [f"  # Daily label rate in the sample: {i.observed_label_rate[0]} to {i.observed_label_rate[1]}, "
              f"widened by {LABEL_MARGIN} each side.",
              f"  label_rate: {{min: {i.label_rate[0]}, max: {i.label_rate[1]}}}", "",
              "# Starting bars for the promotion gate (with none it refuses every model): a candidate needs ROC AUC",
              "# 0.6, must beat the champion (paired DeLong interval) and not be worse than the LogisticRegression",
              "# baseline by more than 0.03.",
              "promotion:", "  absolute: {roc_auc: 0.6}", "  policy: superiority", "  min_improvement: {roc_auc: 0.0}",
              "  baseline_margin: {roc_auc: -0.03}", ""]
    return "\n".join(lines + _monitoring_lines(i))


#: Rows the drift monitor scores at once: at 400 rows a 5-category feature's Jensen-Shannon distance from
#: sampling noise alone is about 0.04, well under the 0.1 threshold (at 165 rows it is 0.07 and a stable
#: day flags about one time in six).
DRIFT_CURRENT_ROWS = 400
DRIFT_MAX_CURRENT_DAYS = 7


def _monitoring_lines(i: Inferred) -> list[str]:
    low_day = max(2 * i.min_rows, 1)  # the 5th percentile of the sample's daily row counts
    days = min(max(-(-DRIFT_CURRENT_ROWS // low_day), 1), DRIFT_MAX_CURRENT_DAYS)
    return ["monitoring:", "  drift:",
            "    # A day has drifted when the drifted features carry at least half of the champion's permutation",
            "    # importance (ROC AUC lost when a feature is shuffled), so a shift in the features the model relies",
            "    # on is caught and one in features it ignores is not. weighting: count is the share of features.",
            "    weighting: importance", "    share_threshold: 0.5",
            f"    # Each day is scored with the days before it, {days} in all: at least {DRIFT_CURRENT_ROWS} rows on a "
            f"quiet day ({low_day})",
            "    # so that sampling noise stays under the thresholds.",
            f"    current_days: {days}", ""]


def _feed_lines(i: Inferred, feed_source: str, source_format: str) -> list[str]:
    feed = i.feed
    lines = [f"  # The label feed: one row per outcome, landed on the day it became known ({feed.matched:.0%} of the",
             "  # sample's examples have one in the feed sample).",
             f"  {feed_source}:", f"    prefix: raw/{feed_source}", f"    format: {source_format}",
             f"    timestamp_column: {feed.timestamp}"]
    if feed.timestamp_format:
        lines.append(f"    timestamp_format: {_flow(feed.timestamp_format)}")
    lines += ["    columns:"] + [f"      {column}: {kind.value}" for column, kind in feed.types.items()]
    low, high = feed.observed_delay_days
    return [*lines, "", f"# Outcomes landed {low} to {high} days after their example's day in the sample; the labels of",
                    f"# a day read the feed's days up to the longest delay seen plus {FEED_DELAY_MARGIN}.",
                    "label_feed:", f"  source: {feed_source}", f"  max_delay_days: {feed.max_delay_days}"]
