"""What the replay reports: timeline rows, training cycles, the per-stage clock and the summary.

Plain code (no Dagster import): the loop fills these in, the command prints them.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass, field

# The stages the replay's clock counts (bench/bench_replay.py reports them).
STAGES = ("land", "raw", "features_labels", "clusters", "monitoring", "training", "serving")


@dataclass
class ReplayReport:
    days: list[str] = field(default_factory=list)
    # Days whose raw or feature checks (or run) failed, with the message; only these are "held back".
    failed_days: dict[str, str] = field(default_factory=dict)
    # Days for which no source landed any rows: nothing to judge, nothing held back.
    empty_days: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def add_seconds(self, stage: str, began: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - began


@dataclass
class CycleOutcome:
    as_of: str
    run_id: str
    status: str
    candidate: str
    deployed_version: int | None
    champion_after: int | None
    verdict: str
    report_sent_to: str
    seconds: float


@dataclass
class TimelineRow:
    day: str
    status: str = "passed"  # passed | held back | no data
    drift: str = "-"
    live: str = "-"
    action: str = "-"
    verdict: str = "-"
    champion: int | None = None
    seconds_to_serving: float | None = None
    note: str = ""


def contiguous_ranges(keys: list[str]) -> list[tuple[str, str]]:
    """Sorted day keys grouped into runs of consecutive days."""
    ranges: list[tuple[str, str]] = []
    for key in sorted(keys):
        day = dt.date.fromisoformat(key)
        if ranges and dt.date.fromisoformat(ranges[-1][1]) + dt.timedelta(days=1) == day:
            ranges[-1] = (ranges[-1][0], key)
        else:
            ranges.append((key, key))
    return ranges


_STREAK = re.compile(r"(feature drift|live performance): (\d+) of (\d+) consecutive")
_COOLDOWN = re.compile(r"(feature drift|live performance): flagged .* cooldown lasts until (\S+?);")
_FIRST_MODEL = re.compile(r"no champion yet; (\d+) of (\d+) labelled days needed")
_FIRST_COOLDOWN = re.compile(r"no champion yet; the previous attempt's cooldown lasts until (\S+)")
_SIGNAL = {"feature drift": "drift", "live performance": "performance"}


def waiting_for(skip_message: str) -> str:
    """A sensor's skip reason, shortened for the timeline: a streak under way, a cooldown, or the
    labelled days the first model still waits for."""
    if match := _COOLDOWN.search(skip_message):
        return f"{_SIGNAL[match[1]]} flagged, cooldown to {match[2][5:]}"
    if (match := _STREAK.search(skip_message)) and match[2] != "0":
        return f"{_SIGNAL[match[1]]} streak {match[2]}/{match[3]}"
    if match := _FIRST_MODEL.search(skip_message):
        return f"first model: {match[1]}/{match[2]} labelled days"
    if match := _FIRST_COOLDOWN.search(skip_message):
        return f"first model: cooldown to {match[1][5:]}"
    if "no champion yet; waiting for the clusters" in skip_message:
        return "first model: waiting for clusters"
    return ""


def summary_line(rows: list[TimelineRow], report: ReplayReport) -> str:
    """One line: how many days passed, were held back by their checks (named), or had no data."""
    passed = [r.day for r in rows if r.status == "passed"]
    held = [r.day for r in rows if r.status == "held back"]
    empty = [r.day for r in rows if r.status == "no data"]
    text = f"{len(rows)} days: {len(passed)} passed their checks"
    text += f"; {len(held)} held back by their checks" + (f" ({', '.join(held)})" if held else "")
    if empty:
        text += f"; {len(empty)} with no data landed"
    return text


def failure_message(result) -> str:
    """The failed checks of an in-process run, else its first step failure."""
    failed_checks = [e for e in result.get_asset_check_evaluations() if not e.passed]
    if failed_checks:
        return "; ".join(
            f"check {e.asset_key.to_user_string()}.{e.check_name} failed: {e.description}" for e in failed_checks
        )
    for event in result.all_events:
        if event.is_step_failure:
            user_failure = event.step_failure_data.user_failure_data
            if user_failure is not None and user_failure.description:
                return user_failure.description
            return event.step_failure_data.error.message.strip().splitlines()[0]
    return "run failed"
