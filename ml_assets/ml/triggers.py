"""When a run of judged days turns into a retraining request: debounce and cooldown.

Each monitored signal (feature drift, live performance) judges days one by one; a day is
*flagged* when it crossed its threshold. A retrain is requested when the latest ``debounce_days``
judged days are all flagged (gaps in the calendar, e.g. a day that failed its quality checks,
neither break nor extend a streak) and the latest of them is past the cooldown that follows the
previous retrain. Single noisy days never retrain; a persistent shift retrains once, then waits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class DayVerdict:
    day: str
    flagged: bool
    summary: str  # the figures behind the verdict, e.g. "6/14 features drifted (43% >= 40%)"


@dataclass(frozen=True)
class TriggerDecision:
    request: bool
    reason: str
    as_of: str | None = None
    days: tuple[str, ...] = ()  # the flagged streak that triggered, oldest first


def cooldown_end(last_retrain_as_of: str | None, cooldown_days: int) -> str | None:
    """Last day still inside the cooldown after a retrain as of ``last_retrain_as_of``."""
    if last_retrain_as_of is None:
        return None
    return (dt.date.fromisoformat(last_retrain_as_of) + dt.timedelta(days=cooldown_days)).isoformat()


def flagged_streak(verdicts: Mapping[str, DayVerdict]) -> list[str]:
    """The trailing run of flagged days among the judged days, oldest first."""
    streak: list[str] = []
    for day in sorted(verdicts, reverse=True):
        if not verdicts[day].flagged:
            break
        streak.append(day)
    return streak[::-1]


def decide(
    verdicts: Mapping[str, DayVerdict],
    *,
    signal: str,
    debounce_days: int,
    cooldown_until: str | None = None,
) -> TriggerDecision:
    """Request a retrain as of the latest judged day, or say why not, with the figures."""
    if debounce_days < 1:
        raise ValueError(f"debounce_days must be at least 1, not {debounce_days}")
    if not verdicts:
        return TriggerDecision(False, f"{signal}: no day judged yet against the current champion")
    latest = max(verdicts)
    streak = flagged_streak(verdicts)
    figures = f"latest {latest}: {verdicts[latest].summary}"
    if len(streak) < debounce_days:
        return TriggerDecision(
            False, f"{signal}: {len(streak)} of {debounce_days} consecutive flagged day(s) needed; {figures}"
        )
    days = tuple(streak[-debounce_days:])
    if cooldown_until is not None and latest <= cooldown_until:
        return TriggerDecision(
            False,
            f"{signal}: flagged {len(streak)} day(s) in a row up to {latest}, but the previous retrain's "
            f"cooldown lasts until {cooldown_until}; {figures}",
        )
    return TriggerDecision(
        True, f"{signal}: flagged on {len(days)} consecutive day(s) {days[0]}..{days[-1]}; {figures}",
        as_of=latest, days=days,
    )
