"""The promotion gate: absolute bars AND beating the champion AND the baseline AND no slice regression AND infra.

Semantics follow TFX's evaluator: with no thresholds configured nothing is blessed (fail closed);
without a champion, the champion rules are skipped and the absolute ones (and the baseline) still
apply; a metric a rule names that is missing or undefined fails that rule.

Comparisons judge the paired DIFFERENCE on the same holdout rows with its interval
(ml_assets.ml.comparison): superiority passes when the interval's lower end of the improvement is
above +margin, non-inferiority when it is above -margin. A slice fails only when its regression
beyond max_slice_regression is significant after the Holm / Benjamini-Hochberg correction.

Absolute bars (e.g. ece <= 0.1) are judged on the candidate's own bootstrap interval at the spec's
confidence when the evaluation carries one ({"intervals": {metric: {estimate, low, high}}}, from
:func:`absolute_intervals`): like a slice, a bar fails only when the interval lies wholly on the wrong
side of it (lower end above an "at most" bar, upper end below an "at least" bar), i.e. the miss is
significant at the one-sided level (1 - confidence) / 2. ECE's estimator is biased upward on few rows
(a perfectly calibrated model still scores about sqrt(bins / n)), so a point-estimate bar would
block good small-sample candidates on noise. Without an interval the point estimate is judged.
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
    champion: float | None  # the reference's value: the champion's, or the baseline's for "beats baseline"
    delta: float | None  # improvement estimate (positive = candidate better), in metric units
    threshold: float | None
    passed: bool
    note: str = ""
    low: float | None = None  # interval of the improvement at the spec's confidence
    high: float | None = None
    criterion: str = ""
    n: int | None = None
    positives: int | None = None
    p_value: float | None = None  # slices: adjusted p-value of "regressed beyond the bound"


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
        # estimate/interval: the improvement for comparisons; for absolute bars, the metric itself
        lines = [
            "| rule | metric | slice | n (pos) | candidate | reference | estimate | interval | criterion | adj. p "
            "| result |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            result = "pass" if r.passed else "**FAIL**"
            if r.note:
                result += f" ({r.note})"
            lines.append(
                f"| {r.rule} | {r.metric} | {r.slice} | {_count(r.n, r.positives)} | {_fmt(r.candidate)} "
                f"| {_fmt(r.champion)} | {_fmt(r.delta, signed=r.rule != 'absolute')} "
                f"| {_interval(r.low, r.high, signed=r.rule != 'absolute')} "
                f"| {r.criterion or _fmt(r.threshold)} | {_fmt(r.p_value)} | {result} |"
            )
        return "\n".join(lines)


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _interval(low: float | None, high: float | None, signed: bool = True) -> str:
    if low is None or high is None:
        return "n/a"
    return f"[{_fmt(low, signed)}, {_fmt(high, signed)}]"


def _count(n: int | None, positives: int | None) -> str:
    return "" if n is None else f"{n} ({positives})"


def _improvement(metric: str, candidate: float, champion: float) -> float:
    """How much better the candidate is, in the metric's own units (positive = better)."""
    return candidate - champion if HIGHER_IS_BETTER[metric] else champion - candidate


def improvement_interval(metric: str, difference: dict) -> tuple[float, float, float]:
    """(estimate, low, high) of the improvement from a candidate-minus-reference difference."""
    if HIGHER_IS_BETTER[metric]:
        return difference["estimate"], difference["low"], difference["high"]
    return -difference["estimate"], -difference["high"], -difference["low"]


def decide(
    spec: PromotionSpec,
    candidate: dict,
    champion: dict | None,
    infra: InfraResult,
    force_reason: str | None = None,
    *,
    vs_champion: dict | None = None,
    vs_baseline: dict | None = None,
) -> Verdict:
    """Judge a candidate against the spec's thresholds, the champion and the baseline on the same holdout.

    candidate and champion are evaluation dicts: {"overall": {metric: value}, "slices": {...}};
    vs_champion and vs_baseline are ml_assets.ml.comparison.compare outputs (candidate minus
    reference on the same rows). A comparison a configured rule needs that is missing fails it.
    """
    rows: list[VerdictRow] = []
    if not spec.configured:
        rows.append(VerdictRow("thresholds", "-", OVERALL, None, None, None, None, False,
                               "no thresholds configured: refusing to promote"))
    rows += _absolute_rows(spec, candidate)
    rows += _champion_rows(spec, champion, vs_champion)
    rows += _baseline_rows(spec, vs_baseline)
    rows += _slice_rows(spec, champion, vs_champion)
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


def absolute_intervals(spec: PromotionSpec, y, p, days=None) -> dict[str, dict]:
    """The candidate's interval of every metric with an absolute bar, for ``decide`` (evaluation["intervals"]).

    Bootstrap at the spec's confidence, resamples and seed; whole days when bootstrap_unit is "day".
    """
    # numpy: kept out of the code location's import
    import numpy as np

    from ml_assets.ml.metrics import metric_intervals

    groups = None
    if spec.bootstrap_unit == "day":
        if days is None:
            raise ValueError("bootstrap_unit is 'day' but no day is given per row")
        groups = [str(d) for d in days]
    intervals = metric_intervals(y, p, sorted(spec.absolute), threshold=spec.decision_threshold,
                                 confidence=spec.confidence, resamples=spec.bootstrap_resamples, seed=spec.seed,
                                 groups=groups)
    if "estimate" in intervals.get("ece", {}):
        # ECE >= |mean p - positive rate|: the part a shift of the label rate alone explains.
        intervals["ece"]["in_the_large"] = abs(float(np.mean(np.asarray(p, dtype=float)) - np.mean(np.asarray(y))))
    return intervals


def _absolute_rows(spec: PromotionSpec, candidate: dict) -> list[VerdictRow]:
    rows = []
    for metric, bar in sorted(spec.absolute.items()):
        value = candidate.get("overall", {}).get(metric)
        higher = HIGHER_IS_BETTER[metric]
        interval = (candidate.get("intervals") or {}).get(metric) or {}
        if value is None:
            rows.append(VerdictRow("absolute", metric, OVERALL, None, None, None, bar, False, "metric missing",
                                   criterion=f"{'>=' if higher else '<='} {bar:.4f}"))
            continue
        if "low" in interval and "high" in interval:
            low, high = interval["low"], interval["high"]
            # Fails only when the whole interval misses the bar.
            ok = high >= bar if higher else low <= bar
            end = "upper end" if higher else "lower end"
            criterion = (f"fails if the interval's {end} is {'below' if higher else 'above'} {bar:.4f} "
                         f"({interval.get('confidence', spec.confidence):.0%} interval)")
            note = "" if ok else f"interval wholly {'below' if higher else 'above'} the bar"
            if "in_the_large" in interval and not ok:
                note += f"; |mean p - positive rate| = {interval['in_the_large']:.4f} of it (label-rate shift)"
            rows.append(VerdictRow("absolute", metric, OVERALL, value, None, interval.get("estimate", value), bar, ok,
                                   note, low=low, high=high, criterion=criterion, n=interval.get("n"),
                                   positives=interval.get("positives")))
            continue
        ok = value >= bar if higher else value <= bar
        note = "" if ok else ("below bar" if higher else "above bar")
        if "error" in interval:
            note = (note + "; " if note else "") + f"no interval: {interval['error']}"
        rows.append(VerdictRow("absolute", metric, OVERALL, value, None, None, bar, ok, note,
                               criterion=f"{'>=' if higher else '<='} {bar:.4f} (point estimate)"))
    return rows


def _paired_row(spec: PromotionSpec, rule: str, metric: str, difference: dict | None, threshold: float,
                policy: str, relative: bool = False) -> VerdictRow:
    """A rule on the improvement's interval: passes when its lower end is above ``threshold``."""
    criterion = f"lower end > {threshold:+.4f} ({policy}, {spec.confidence:.0%} interval)"
    if difference is None or "error" in difference:
        why = (difference or {}).get("error", "no paired comparison on the same rows")
        return VerdictRow(rule, metric, OVERALL, None, None, None, threshold, False, f"metric missing: {why}",
                          criterion=criterion)
    estimate, low, high = improvement_interval(metric, difference)
    if relative:
        reference = difference["value_b"]
        if reference == 0:
            return VerdictRow(rule, metric, OVERALL, difference["value_a"], reference, None, threshold, False,
                              "reference value is 0: relative change undefined", criterion=criterion)
        # The reference's value is treated as fixed: the interval is the absolute one scaled.
        estimate, low, high = (v / abs(reference) for v in (estimate, low, high))
    ok = low > threshold
    return VerdictRow(rule, metric, OVERALL, difference["value_a"], difference["value_b"], estimate, threshold, ok,
                      "" if ok else "improvement not established at the confidence level", low=low, high=high,
                      criterion=criterion, n=difference.get("n"), positives=difference.get("positives"))


def _champion_rows(spec: PromotionSpec, champion: dict | None, vs_champion: dict | None) -> list[VerdictRow]:
    rules = [("beats champion", spec.min_improvement, False),
             ("beats champion (relative)", spec.min_relative_improvement, True)]
    rows = []
    sign = 1.0 if spec.policy == "superiority" else -1.0
    for rule, margins, relative in rules:
        for metric, margin in sorted(margins.items()):
            if champion is None:
                rows.append(VerdictRow(rule, metric, OVERALL, None, None, None, sign * margin, True,
                                       "skipped: no champion yet"))
                continue
            difference = (vs_champion or {}).get("overall", {}).get(metric)
            rows.append(_paired_row(spec, rule, metric, difference, sign * margin, spec.policy, relative))
    return rows


def _baseline_rows(spec: PromotionSpec, vs_baseline: dict | None) -> list[VerdictRow]:
    return [_paired_row(spec, "beats baseline", metric, (vs_baseline or {}).get("overall", {}).get(metric),
                        margin, "superiority")
            for metric, margin in sorted(spec.baseline_margin.items())]


def _slice_rows(spec: PromotionSpec, champion: dict | None, vs_champion: dict | None) -> list[VerdictRow]:
    if champion is None or not spec.max_slice_regression:
        return []
    if vs_champion is None:
        return [VerdictRow("slice regression", "-", OVERALL, None, None, None, None, False,
                           "no paired comparison with the champion on the same rows")]
    rows = [VerdictRow("slice regression", "-", dimension, None, None, None, None, False,
                       f"slice dimension {dimension!r} missing from the evaluation")
            for dimension in spec.slice_dimensions if dimension not in vs_champion.get("dimensions", [])]
    # The comparison lists slices of at least its own min_slice_size; the gate applies its spec's too.
    entries = [e for e in vs_champion.get("slices", []) if e["n"] >= spec.min_slice_size]
    tested = [e for e in entries if "skipped" not in e]
    from ml_assets.ml.stats import adjust  # numpy: kept out of the code location's import

    adjusted = adjust([e["p_value"] for e in tested], spec.slice_correction)
    by_entry = {id(e): p for e, p in zip(tested, adjusted, strict=True)}
    for entry in entries:
        name, metric = f"{entry['dimension']}={entry['value']}", entry["metric"]
        bound = spec.max_slice_regression.get(metric)
        criterion = (f"fails if worse by > {bound:.4f} with {spec.slice_correction}-adjusted p < {spec.slice_alpha}"
                     if bound is not None else "")
        if "skipped" in entry:
            rows.append(VerdictRow("slice regression", metric, name, None, None, None, bound, True,
                                   f"not gated: {entry['skipped']}", criterion=criterion, n=entry["n"],
                                   positives=entry["positives"]))
            continue
        estimate, low, high = improvement_interval(metric, entry)
        p = by_entry[id(entry)]
        ok = p >= spec.slice_alpha
        rows.append(VerdictRow("slice regression", metric, name, entry["value_a"], entry["value_b"], estimate, bound,
                               ok, "" if ok else "regressed beyond bound (significant)", low=low, high=high,
                               criterion=criterion, n=entry["n"], positives=entry["positives"], p_value=p))
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
