"""Freshness alerts as an email: which assets turned stale (WARN / FAIL) and which recovered.

Plain code, no Dagster: the ``freshness_alerts`` sensor reads the states the freshness daemon
recorded, and this module decides what is worth an email (:func:`transitions`) and writes it
(:func:`build_alert_message`). States are Dagster's ``FreshnessState`` values as strings.

The message is ``multipart/alternative``: Markdown-flavoured plain text and the same rendered
to HTML by :func:`ml_assets.reporting.report.markdown_to_html`.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage

from ml_assets.reporting.report import SUBJECT_PREFIX, sectioned_message

PASS, WARN, FAIL, UNKNOWN, NOT_APPLICABLE = "PASS", "WARN", "FAIL", "UNKNOWN", "NOT_APPLICABLE"
STATES = (PASS, WARN, FAIL, UNKNOWN, NOT_APPLICABLE)
STALE = (FAIL, WARN)  # worst first
NEW = "new"  # the "before" of an asset no earlier tick has seen
SUBJECT_NAMES = 4  # assets named in the subject before "+N more"
TABLE_HEADERS = ("asset", "state", "policy", "last materialization (UTC)", "age")


@dataclass(frozen=True)
class AssetFreshness:
    """One watched asset at the time of the alert."""

    asset: str
    state: str
    before: str | None = None  # None: never seen by an earlier tick
    policy: str = ""  # e.g. from describe_time_window()
    last_materialization: dt.datetime | None = None  # timezone-aware
    age: dt.timedelta | None = None  # now - last_materialization

    @property
    def transition(self) -> str:
        """``PASS -> FAIL``; just ``FAIL`` when the state did not change."""
        if self.before == self.state:
            return self.state
        return f"{self.before or NEW} -> {self.state}"


@dataclass(frozen=True)
class Transitions:
    stale: list[str]  # turned WARN or FAIL (or moved between them), worst first
    recovered: list[str]  # WARN or FAIL before, PASS now
    quiet: list[str]  # changed, but not worth an email (e.g. UNKNOWN -> PASS)
    still_stale: list[str]  # WARN or FAIL, as reported by an earlier tick

    def __bool__(self) -> bool:
        return bool(self.stale or self.recovered)


def _severity_order(states: Mapping[str, str]):
    return lambda asset: (STALE.index(states[asset]) if states[asset] in STALE else len(STALE), asset)


def transitions(previous: Mapping[str, str] | None, current: Mapping[str, str]) -> Transitions:
    """What changed from ``previous`` (None: the first tick) to ``current`` (asset -> state).

    An asset is reported stale when it is WARN or FAIL now and was not in that same state
    before, so on the first tick every asset already WARN or FAIL is reported once; it is
    reported recovered when it was WARN or FAIL and is PASS now.
    """
    previous = previous or {}
    stale, recovered, quiet, still_stale = [], [], [], []
    for asset, state in current.items():
        before = previous.get(asset)
        if state in STALE and before == state:
            still_stale.append(asset)
        elif state in STALE:
            stale.append(asset)
        elif state == PASS and before in STALE:
            recovered.append(asset)
        elif before is not None and before != state:
            quiet.append(asset)
    order = _severity_order(current)
    return Transitions(sorted(stale, key=order), sorted(recovered), sorted(quiet), sorted(still_stale, key=order))


def state_counts(current: Mapping[str, str]) -> str:
    """``7 assets watched: 6 PASS, 1 UNKNOWN``."""
    counts = Counter(current.values())
    order = [s for s in STATES if counts[s]] + sorted(s for s in counts if s not in STATES)
    n = len(current)
    head = f"{n} asset{'s' if n != 1 else ''} watched"
    if not order:
        return head
    return f"{head}: " + ", ".join(f"{counts[s]} {s}" for s in order)


# --- durations and policies ----------------------------------------------------------------


def format_duration(delta: dt.timedelta | None) -> str:
    """Compact: ``2d``, ``1d 6h``, ``5h 3m``, ``42m``, ``12s``; ``n/a`` for None."""
    if delta is None:
        return "n/a"
    seconds = int(delta.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        parts = [f"{days}d", f"{hours}h" if hours else ""]
    elif hours:
        parts = [f"{hours}h", f"{minutes}m" if minutes else ""]
    elif minutes:
        parts = [f"{minutes}m"]
    else:
        parts = [f"{secs}s"]
    return sign + " ".join(p for p in parts if p)


def describe_time_window(fail_window: dt.timedelta, warn_window: dt.timedelta | None = None) -> str:
    """``fail 2d / warn 1d 6h`` (or ``fail 14d`` without a warning window)."""
    text = f"fail {format_duration(fail_window)}"
    return f"{text} / warn {format_duration(warn_window)}" if warn_window else text


def describe_cron(deadline_cron: str, lower_bound: dt.timedelta, timezone: str = "UTC") -> str:
    return f"by {deadline_cron} ({timezone}), within {format_duration(lower_bound)}"


def _utc(moment: dt.datetime | None) -> str:
    if moment is None:
        return "never"
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


# --- message -------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:SUBJECT_NAMES])
    return shown + (f", +{len(items) - SUBJECT_NAMES} more" if len(items) > SUBJECT_NAMES else "")


def alert_subject(dataset: str, stale: Sequence[AssetFreshness], recovered: Sequence[AssetFreshness]) -> str:
    """``[ml_assets] flights: 2 assets stale (features FAIL, deployed_model WARN)``."""
    parts = []
    if stale:
        parts.append(f"{_plural(len(stale), 'asset')} stale ({_names([f'{a.asset} {a.state}' for a in stale])})")
    if recovered:
        noun = _plural(len(recovered), "asset") if not stale else str(len(recovered))
        parts.append(f"{noun} back to PASS ({_names([a.asset for a in recovered])})")
    if not parts:
        raise ValueError("a freshness alert needs at least one stale or recovered asset")
    return f"{SUBJECT_PREFIX} {dataset}: " + "; ".join(parts)


def _table(rows: Iterable[AssetFreshness]) -> str:
    from ml_assets.ml.evaluation import markdown_table  # numpy: not at code-location load

    body = [
        [r.asset, r.transition, r.policy or "n/a", _utc(r.last_materialization), format_duration(r.age)]
        for r in rows
    ]
    return markdown_table(TABLE_HEADERS, body, numeric_from=4)


def _sections(
    dataset: str,
    stale: Sequence[AssetFreshness],
    recovered: Sequence[AssetFreshness],
    still_stale: Sequence[AssetFreshness],
    checked_at: dt.datetime,
    counts: str,
) -> list[tuple[str, str]]:
    sections = []
    if stale:
        sections.append(("Stale", "Not materialized within their freshness policy:\n\n" + _table(stale)))
    if recovered:
        sections.append(("Back to PASS", _table(recovered)))
    if still_stale:
        sections.append(("Still stale (reported before)", _table(still_stale)))
    summary = [
        f"- Dataset: **{dataset}**",
        f"- Checked at: {_utc(checked_at)} UTC",
        f"- {counts}" if counts else "",
        "- Policy: `fail` / `warn` = time since the last materialization (any partition) at which "
        "the asset turns FAIL / WARN.",
    ]
    sections.append(("Summary", "\n".join(line for line in summary if line)))
    return sections


def build_alert_message(
    dataset: str,
    stale: Sequence[AssetFreshness],
    recovered: Sequence[AssetFreshness],
    sender: str,
    recipients: list[str],
    *,
    still_stale: Sequence[AssetFreshness] = (),
    checked_at: dt.datetime | None = None,
    counts: str = "",
) -> EmailMessage:
    """One email for one sensor tick (``From``, ``To``, ``Subject``, ``Date`` set)."""
    if not recipients:
        raise ValueError("build_alert_message needs at least one recipient")
    checked_at = checked_at or dt.datetime.now(dt.UTC)
    title = alert_subject(dataset, stale, recovered)
    sections = _sections(dataset, stale, recovered, still_stale, checked_at, counts)

    message = sectioned_message(title, sections, sender, recipients, kind="freshness")
    message["X-ML-Assets-Dataset"] = dataset
    message["X-ML-Assets-Alert"] = "freshness"
    return message
