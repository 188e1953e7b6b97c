"""The performance trigger's figures for the cycle report: each flagged day's window, metric and intervals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def _f(value, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, int | float) and not isinstance(value, bool) else "n/a"


def performance_trigger_table(days: Sequence[str], judged: Mapping[str, Mapping]) -> str:
    """Markdown, one row per triggering day, from its live_performance metadata (plain values): the window,
    the live metric with its interval, the holdout value, the drop with its interval and the allowed drop.
    Days judged before windows existed (no interval) show n/a in the interval columns."""
    lines = ["| day | window | metric | live [interval] | holdout | drop [interval] | allowed drop | rule | rows |",
             "|---|---|---|---|---|---|---|---|---|"]
    for day in days:
        m = judged.get(day)
        if m is None:
            lines.append(f"| {day} | (missing) | | | | | | | |")
            continue
        live = f"{_f(m.get('live'), '.4f')} [{_f(m.get('low'), '.4f')}, {_f(m.get('high'), '.4f')}]"
        drop = f"{_f(m.get('drop'), '+.4f')} [{_f(m.get('drop_low'), '+.4f')}, {_f(m.get('drop_high'), '+.4f')}]"
        confidence = m.get("confidence")
        rule = f"{m.get('rule', 'fixed')}" + (f" ({confidence:.0%})" if isinstance(confidence, float) else "")
        lines.append(f"| {day} | {m.get('window', day)} | {m.get('metric', '')} | {live} | {_f(m.get('holdout'), '.4f')} "
                     f"| {drop} | {_f(m.get('max_drop'), 'g')} | {rule} | {m.get('rows', '')} |")
    return "\n".join(lines)
