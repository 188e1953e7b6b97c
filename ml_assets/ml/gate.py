"""The promotion gate: absolute bars AND beating the champion AND no slice regression AND infra.

Semantics follow TFX's evaluator: with no thresholds configured nothing is blessed (fail closed);
without a champion, the relative rules are skipped and the absolute ones still apply; a metric a
rule names that is missing or undefined fails that rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ml_assets.spec.model import PromotionSpec

HIGHER_IS_BETTER = {
    "roc_auc": True, "pr_auc": True, "accuracy": True, "log_loss": False, "brier": False, "ece": False,
}
OVERALL = "overall"


@dataclass(frozen=True)
class VerdictRow:
    rule: str
    metric: str
    slice: str
    candidate: float | None
    champion: float | None
    delta: float | None
    threshold: float | None
    passed: bool
    note: str = ""


@dataclass(frozen=True)
class InfraResult:
    loaded: bool
    answered: int
    requested: int
    p95_latency_ms: float | None
    size_mb: float
    error: str | None = None


@dataclass
class Verdict:
    passed: bool
    rows: list[VerdictRow]
    forced: bool = False
    forced_reason: str | None = None
    summary: str = ""
    failures: list[str] = field(default_factory=list)

    def rows_as_dicts(self) -> list[dict]:
        return [asdict(row) for row in self.rows]

    def markdown(self) -> str:
        lines = [
            "| rule | metric | slice | candidate | champion | delta | threshold | result |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            result = "pass" if r.passed else "**FAIL**"
            if r.note:
                result += f" ({r.note})"
            lines.append(
                f"| {r.rule} | {r.metric} | {r.slice} | {_fmt(r.candidate)} | {_fmt(r.champion)} "
                f"| {_fmt(r.delta, signed=True)} | {_fmt(r.threshold)} | {result} |"
            )
        return "\n".join(lines)


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _improvement(metric: str, candidate: float, champion: float) -> float:
    """How much better the candidate is, in the metric's own units (positive = better)."""
    return candidate - champion if HIGHER_IS_BETTER[metric] else champion - candidate


def decide(
    spec: PromotionSpec,
    candidate: dict,
    champion: dict | None,
    infra: InfraResult,
    force_reason: str | None = None,
) -> Verdict:
    """Judge a candidate against the spec's thresholds and the champion on the same holdout.

    candidate and champion are evaluation dicts: {"overall": {metric: value}, "slices":
    {dimension: {value: {metric: value, "n": rows}}}}.
    """
    rows: list[VerdictRow] = []
    if not spec.configured:
        rows.append(VerdictRow("thresholds", "-", OVERALL, None, None, None, None, False,
                               "no thresholds configured: refusing to promote"))
    rows += _absolute_rows(spec, candidate)
    rows += _champion_rows(spec, candidate, champion)
    rows += _slice_rows(spec, candidate, champion)
    rows += _infra_rows(spec, infra)
    failures = [f"{r.rule} {r.metric} [{r.slice}]" + (f": {r.note}" if r.note else "") for r in rows if not r.passed]
    forced = False
    if force_reason is not None:
        if not force_reason.strip():
            raise ValueError("a forced promotion needs a written reason")
        forced = True
    passed = not failures or forced
    if forced:
        summary = f"FORCED promotion ({force_reason.strip()}); {len(failures)} rule(s) failed"
    elif passed:
        summary = f"all {len(rows)} rule(s) passed" + ("" if champion else " (first model: no champion to beat)")
    else:
        summary = f"{len(failures)} of {len(rows)} rule(s) failed: " + "; ".join(failures[:5])
    return Verdict(passed=passed, rows=rows, forced=forced,
                   forced_reason=force_reason.strip() if forced else None, summary=summary, failures=failures)


def _absolute_rows(spec: PromotionSpec, candidate: dict) -> list[VerdictRow]:
    rows = []
    for metric, bar in sorted(spec.absolute.items()):
        value = candidate.get("overall", {}).get(metric)
        if value is None:
            rows.append(VerdictRow("absolute", metric, OVERALL, None, None, None, bar, False, "metric missing"))
            continue
        ok = value >= bar if HIGHER_IS_BETTER[metric] else value <= bar
        rows.append(VerdictRow("absolute", metric, OVERALL, value, None, None, bar, ok,
                               "" if ok else ("below bar" if HIGHER_IS_BETTER[metric] else "above bar")))
    return rows


def _champion_rows(spec: PromotionSpec, candidate: dict, champion: dict | None) -> list[VerdictRow]:
    rules = [("beats champion", spec.min_improvement, False), ("beats champion (relative)",
             spec.min_relative_improvement, True)]
    rows = []
    for rule, margins, relative in rules:
        for metric, margin in sorted(margins.items()):
            value = candidate.get("overall", {}).get(metric)
            if champion is None:
                rows.append(VerdictRow(rule, metric, OVERALL, value, None, None, margin, True,
                                       "skipped: no champion yet"))
                continue
            reference = champion.get("overall", {}).get(metric)
            if value is None or reference is None:
                rows.append(VerdictRow(rule, metric, OVERALL, value, reference, None, margin, False,
                                       "metric missing"))
                continue
            delta = _improvement(metric, value, reference)
            if relative:
                if reference == 0:
                    rows.append(VerdictRow(rule, metric, OVERALL, value, reference, None, margin, False,
                                           "champion value is 0: relative change undefined"))
                    continue
                delta = delta / abs(reference)
            ok = delta >= margin
            rows.append(VerdictRow(rule, metric, OVERALL, value, reference, delta, margin, ok,
                                   "" if ok else "not better by the margin"))
    return rows


def _slice_rows(spec: PromotionSpec, candidate: dict, champion: dict | None) -> list[VerdictRow]:
    if champion is None or not spec.max_slice_regression:
        return []
    rows = []
    for dimension in spec.slice_dimensions:
        ours = candidate.get("slices", {}).get(dimension)
        theirs = champion.get("slices", {}).get(dimension)
        if ours is None or theirs is None:
            rows.append(VerdictRow("slice regression", "-", dimension, None, None, None, None, False,
                                   f"slice dimension {dimension!r} missing from the evaluation"))
            continue
        for value in sorted(set(ours) & set(theirs)):
            if min(ours[value].get("n", 0), theirs[value].get("n", 0)) < spec.min_slice_size:
                continue
            for metric, bound in sorted(spec.max_slice_regression.items()):
                mine, reference = ours[value].get(metric), theirs[value].get(metric)
                if mine is None or reference is None:
                    continue  # undefined on this slice (e.g. a single class): nothing to compare
                worsening = -_improvement(metric, mine, reference)
                ok = worsening <= bound
                rows.append(VerdictRow("slice regression", metric, f"{dimension}={value}", mine, reference,
                                       -worsening, bound, ok, "" if ok else "regressed beyond bound"))
    return rows


def _infra_rows(spec: PromotionSpec, infra: InfraResult) -> list[VerdictRow]:
    budget = spec.infra
    if not infra.loaded:
        return [VerdictRow("infra", "loads", OVERALL, None, None, None, None, False,
                           f"artifact does not load in the serving code: {infra.error}")]
    answered_ok = infra.answered == infra.requested and infra.requested > 0
    latency_ok = infra.p95_latency_ms is not None and infra.p95_latency_ms <= budget.max_p95_latency_ms
    return [
        VerdictRow("infra", "sample requests answered", OVERALL, float(infra.answered), None, None,
                   float(infra.requested), answered_ok, "" if answered_ok else (infra.error or "unanswered requests")),
        VerdictRow("infra", "p95 latency ms", OVERALL, infra.p95_latency_ms, None, None,
                   budget.max_p95_latency_ms, latency_ok, "" if latency_ok else "over budget"),
        VerdictRow("infra", "size MB", OVERALL, infra.size_mb, None, None, budget.max_size_mb,
                   infra.size_mb <= budget.max_size_mb, "" if infra.size_mb <= budget.max_size_mb else "over budget"),
    ]
