"""The training-cycle report as an email: plain text + HTML alternatives, plots inline.

The message is ``multipart/alternative`` with a ``text/plain`` part and a ``multipart/related``
part holding the ``text/html`` body and every plot as an ``image/png`` that the HTML references
by ``cid:``. The text body is Markdown-flavoured plain text; the HTML body is rendered from the
same Markdown by :func:`markdown_to_html`, a small renderer for the subset the report uses
(headings, pipe tables, bullet lists, fenced code, paragraphs, ``**bold**`` and ``code``).
"""

from __future__ import annotations

import html
import math
import re
import secrets
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Literal

from ml_assets.reporting.markdown_html import markdown_to_html

# ml_assets.ml.evaluation (numpy) is imported inside the functions that format figures: the
# code location loads this module through the email resource and the report sensors.

Status = Literal["deployed", "kept_champion", "failed"]
STATUSES = ("deployed", "kept_champion", "failed")
SUBJECT_PREFIX = "[ml_assets]"
VERDICT_COLUMNS = ("metric", "slice", "candidate", "champion", "delta", "threshold", "passed")


@dataclass
class CycleReport:
    """Everything one training cycle has to say; only the first three fields are required."""

    dataset: str
    cycle_id: str
    status: Status
    failed_stage: str | None = None
    error: str | None = None
    # Rows with keys rule, metric, slice, candidate, champion (the reference's value), delta (improvement),
    # threshold, passed, note; and from issue 12 on: low, high, criterion, n, positives, p_value.
    verdict_rows: list[dict] = field(default_factory=list)
    verdict_passed: bool | None = None
    # {"name", "version", "flavor", "metrics": {metric: value}}
    candidate: dict | None = None
    champion: dict | None = None
    deployed_version: int | None = None
    reason: str = ""
    forced_reason: str | None = None
    slice_tables_markdown: dict[str, str] = field(default_factory=dict)
    plots: dict[str, bytes] = field(default_factory=dict)
    extra_sections: dict[str, str] = field(default_factory=dict)
    # Why the cycle ran: a one-line trigger and its figures (drift per feature, performance per day).
    trigger: str = ""
    trigger_details: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


# --- subject and sections -----------------------------------------------------------------


def _model_label(model: dict | None) -> str:
    if not model:
        return "none"
    label = str(model.get("name") or "model")
    if model.get("version") is not None:
        label += f" v{model['version']}"
    if model.get("flavor"):
        label += f" ({model['flavor']})"
    return label


def subject(report: CycleReport) -> str:
    head = f"{SUBJECT_PREFIX} {report.dataset}:"
    if report.status == "failed":
        return f"{head} training cycle FAILED at {report.failed_stage or 'unknown stage'}"
    if report.status == "deployed":
        text = "deployed"
        if report.deployed_version is not None:
            text += f" version {report.deployed_version}"
        if report.forced_reason:
            text += " (forced)"
        return f"{head} {text}"
    why = {False: "gate failed", None: "no verdict"}.get(report.verdict_passed, "not promoted")
    version = (report.champion or {}).get("version")
    if report.champion is None:
        return f"{head} no model deployed ({why})"
    kept = f"kept champion v{version}" if version is not None else "kept champion"
    return f"{head} {kept} ({why})"


def _number(value, signed: bool = False) -> str:
    from ml_assets.ml.evaluation import format_value

    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if signed and is_number and not math.isnan(float(value)) and value > 0:
        return "+" + format_value(value)
    return format_value(value)


def _passed(value) -> str:
    if value is None:
        return "n/a"
    return "PASS" if value else "FAIL"


def _verdict_table(rows: list[dict]) -> str:
    """Every rule with its estimate, interval and threshold; slices with count, positives and adjusted p."""
    from ml_assets.ml.evaluation import markdown_table

    def interval(row: dict) -> str:
        low, high = row.get("low"), row.get("high")
        return "n/a" if low is None or high is None else f"[{_number(low, signed=True)}, {_number(high, signed=True)}]"

    def count(row: dict) -> str:
        return "" if row.get("n") is None else f"{row['n']} ({row.get('positives')})"

    body = [
        [
            str(row.get("rule", "")),
            str(row.get("metric", "")),
            str(row.get("slice") or "overall"),
            count(row),
            _number(row.get("candidate")),
            _number(row.get("champion")),
            _number(row.get("delta"), signed=True),
            interval(row),
            str(row.get("criterion") or _number(row.get("threshold"))),
            _number(row.get("p_value")),
            _passed(row.get("passed")) + (f" ({row['note']})" if row.get("note") else ""),
        ]
        for row in rows
    ]
    headers = ["rule", "metric", "slice", "n (positives)", "candidate", "reference", "estimate", "interval",
               "threshold", "adj. p", "result"]
    return markdown_table(headers, body, numeric_from=3)


def _metric_order(names) -> list[str]:
    from ml_assets.ml.evaluation import METRICS

    known = [m for m in METRICS if m in names]
    return known + sorted(n for n in names if n not in METRICS)


def _comparison_table(candidate: dict | None, champion: dict | None) -> str | None:
    from ml_assets.ml.evaluation import HIGHER_IS_BETTER, markdown_table

    cand = (candidate or {}).get("metrics") or {}
    champ = (champion or {}).get("metrics") or {}
    if not cand and not champ:
        return None
    rows = []
    for metric in _metric_order(set(cand) | set(champ)):
        c, b = cand.get(metric), champ.get(metric)
        delta = c - b if isinstance(c, int | float) and isinstance(b, int | float) else None
        label = metric
        if metric in HIGHER_IS_BETTER:
            label += " (higher is better)" if HIGHER_IS_BETTER[metric] else " (lower is better)"
        rows.append([label, _number(c), _number(b), _number(delta, signed=True)])
    headers = [
        "metric",
        f"candidate {_model_label(candidate)}",
        f"champion {_model_label(champion)}",
        "delta",
    ]
    return markdown_table(headers, rows)


def _sections(report: CycleReport) -> list[tuple[str, str]]:
    """(title, markdown) pairs in display order; plots are handled separately."""
    status_text = {"deployed": "deployed", "kept_champion": "kept champion", "failed": "FAILED"}[
        report.status
    ]
    summary = [
        f"- Dataset: **{report.dataset}**",
        f"- Cycle: `{report.cycle_id}`",
        f"- Status: **{status_text}**",
    ]
    if report.deployed_version is not None:
        summary.append(f"- Deployed version: **{report.deployed_version}**")
    else:
        summary.append("- Deployed version: none")
    if report.reason:
        summary.append(f"- Reason: {report.reason}")
    if report.forced_reason:
        summary.append(f"- **FORCED PROMOTION** (gate overridden): {report.forced_reason}")
    if report.trigger:
        summary.append(f"- Trigger: {report.trigger}")
    if report.candidate is not None:
        summary.append(f"- Candidate: {_model_label(report.candidate)}")
    if report.champion is not None or report.status != "failed":
        summary.append(f"- Champion: {_model_label(report.champion)}")
    sections = [("Summary", "\n".join(summary))]
    if report.trigger_details:
        sections.append(("Why this cycle ran", report.trigger_details))

    if report.status == "failed" or report.error:
        failure = [f"Stage: **{report.failed_stage or 'unknown'}**"]
        if report.error:
            failure += ["", "```", report.error.rstrip(), "```"]
        sections.append(("Failure", "\n".join(failure)))

    if report.verdict_rows or report.verdict_passed is not None:
        verdict = {True: "PASSED", False: "FAILED", None: "not evaluated"}[report.verdict_passed]
        body = f"Gate verdict: **{verdict}**"
        if report.verdict_rows:
            body += "\n\n" + _verdict_table(report.verdict_rows)
        sections.append(("Gate verdict", body))

    comparison = _comparison_table(report.candidate, report.champion)
    if comparison:
        sections.append(("Champion vs challenger", comparison))

    for dimension, table in report.slice_tables_markdown.items():
        sections.append((f"Metrics by {dimension}", table))
    sections += list(report.extra_sections.items())
    return sections


# --- message ------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "plot"


def _domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    domain = address.rpartition("@")[2]
    return domain if "@" in address and domain else "ml-assets.local"


def sectioned_message(title: str, sections: list[tuple[str, str]], sender: str, recipients: list[str], *,
                      kind: str, text_tail: list[str] = (), html_tail: list[str] = ()) -> EmailMessage:
    """A text + HTML message of (heading, Markdown) sections; From, To, Subject, Date, Message-ID set."""
    text = [title, ""]
    for heading, body in sections:
        text += [f"## {heading}", "", body, ""]
    text += list(text_tail)
    body_html = [f'<h1 style="font-size:18px">{html.escape(title)}</h1>']
    for heading, body in sections:
        body_html += [f'<h2 style="font-size:15px">{html.escape(heading)}</h2>', markdown_to_html(body)]
    body_html += list(html_tail)
    document = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n"
        '<body style="font-family:Arial,Helvetica,sans-serif;font-size:14px;color:#222">\n'
        + "\n".join(body_html)
        + "\n</body></html>\n"
    )
    message = EmailMessage()
    message["Subject"] = title
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(idstring=kind, domain=_domain(sender))
    message.set_content("\n".join(text))
    message.add_alternative(document, subtype="html")
    return message


def build_message(report: CycleReport, sender: str, recipients: list[str]) -> EmailMessage:
    """The report as a ready-to-send message (``From``, ``To``, ``Subject``, ``Date`` set)."""
    if not recipients:
        raise ValueError("build_message needs at least one recipient")
    domain = _domain(sender)
    sections = _sections(report)
    # Short Content-IDs (no header folding): <slug.random@domain>.
    plot_ids = {
        name: f"<{_slug(name)[:40]}.{secrets.token_hex(6)}@{domain}>" for name in report.plots
    }

    title = subject(report)
    text_tail = []
    if report.plots:
        text_tail = ["## Plots", "",
                     "Inline in the HTML version of this message: " + ", ".join(report.plots) + ".", ""]
    html_tail = []
    if report.plots:
        html_tail.append('<h2 style="font-size:15px">Plots</h2>')
        for name, cid in plot_ids.items():
            html_tail.append(
                f"<p><b>{html.escape(name)}</b><br>"
                f'<img src="cid:{cid[1:-1]}" alt="{html.escape(name)}" '
                'style="max-width:100%;height:auto"></p>'
            )
    message = sectioned_message(title, sections, sender, recipients, kind="cycle",
                                text_tail=text_tail, html_tail=html_tail)
    message["X-ML-Assets-Dataset"] = report.dataset
    message["X-ML-Assets-Cycle"] = report.cycle_id
    message["X-ML-Assets-Status"] = report.status
    if report.plots:
        html_part = message.get_payload()[1]
        for name, png in report.plots.items():
            html_part.add_related(
                png,
                maintype="image",
                subtype="png",
                cid=plot_ids[name],
                disposition="inline",
                filename=f"{_slug(name)}.png",
            )
    return message
