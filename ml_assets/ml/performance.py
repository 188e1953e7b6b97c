"""Live performance: the champion's metric on labelled days, against its own holdout value.

Two judgements:

- ``live_performance``: one day's metric against a fixed bound (``drop > max_drop``). On a small
  data set (a few hundred labelled rows a day) one day's ROC AUC moves by several points from
  noise alone, so this either never fires (a wide bound) or fires on noise (a narrow one).
- ``window_performance``: the metric over a trailing window of days with a confidence interval
  (DeLong for ROC AUC, Wilson for accuracy, the normal interval of per-row losses for Brier and
  log loss, a row bootstrap for PR AUC and ECE; ml_assets.ml.stats). The holdout value is itself
  an estimate on a few days: its standard error (``holdout_standard_error``: Hanley-McNeil for ROC
  AUC, binomial for accuracy, from the stored holdout row and positive counts; 0 for the other
  metrics) widens the interval of the drop. A window is flagged by ``rule``:
  ``significant`` (default): the drop exceeds ``max_drop`` AND the interval of the drop lies above
  0 (a loss that is both material and not noise); ``confident``: the whole interval of the drop
  lies above ``max_drop`` (slower, for when a false retrain is expensive). A window is judged once
  it holds ``min_rows`` labelled rows and ``min_class_rows`` of each class, whatever the daily
  volume; the interval, not a row count, keeps noise out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ml_assets.ml.evaluation import EPSILON, HIGHER_IS_BETTER, compute_metrics
from ml_assets.ml.stats import (
    MetricInterval,
    auc_interval,
    bootstrap_interval,
    hanley_mcneil_se,
    mean_interval,
    normal_quantile,
    proportion_interval,
)

RULES = ("significant", "confident")


@dataclass(frozen=True)
class LivePerformance:
    metric: str
    live: float | None
    holdout: float
    drop: float | None  # worsening from the holdout value, in metric units (positive = worse)
    max_drop: float
    rows: int
    positives: int
    judged: bool
    flagged: bool
    note: str = ""
    # Windowed judgement only (None / "fixed" for the daily fixed-bound rule):
    low: float | None = None  # interval of the live metric
    high: float | None = None
    drop_low: float | None = None  # interval of the drop
    drop_high: float | None = None
    confidence: float | None = None
    rule: str = "fixed"
    method: str = ""
    days: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        if not self.judged:
            return f"not judged: {self.note}"
        span = f" over {self.days[0]}..{self.days[-1]} ({len(self.days)} days)" if self.days else ""
        if self.low is None:
            relation = ">" if self.flagged else "<="
            return (f"{self.metric} {self.live:.3f} vs holdout {self.holdout:.3f}: drop {self.drop:+.3f} "
                    f"{relation} {self.max_drop:g} on {self.rows} rows{span}")
        verdict = "significant drop" if self.flagged else "no significant drop"
        return (f"{self.metric} {self.live:.3f} [{self.low:.3f}, {self.high:.3f}] vs holdout {self.holdout:.3f}: "
                f"drop {self.drop:+.3f} [{self.drop_low:+.3f}, {self.drop_high:+.3f}] at {self.confidence:.0%}, "
                f"{verdict} (rule {self.rule}, max_drop {self.max_drop:g}) on {self.rows} rows{span}")

    def as_dict(self) -> dict:
        return {**asdict(self), "days": list(self.days), "summary": self.summary}


def _check(metric: str, holdout_value: float | None) -> None:
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(HIGHER_IS_BETTER)}")
    if holdout_value is None or not math.isfinite(holdout_value):
        raise ValueError(f"the champion has no holdout {metric} to compare with")


def _drop(metric: str, holdout: float, live: float) -> float:
    return holdout - live if HIGHER_IS_BETTER[metric] else live - holdout


def live_performance(y_true: np.ndarray, probabilities: np.ndarray, *, metric: str, holdout_value: float,
                     max_drop: float, min_rows: int, threshold: float = 0.5) -> LivePerformance:
    """Flag the day when ``metric`` is worse than ``holdout_value`` by more than ``max_drop``.

    A day with fewer than ``min_rows`` labelled rows, or on which the metric is undefined (one
    class only, so no ROC AUC), is reported but not judged.
    """
    _check(metric, holdout_value)
    rows = len(y_true)
    common = {"metric": metric, "holdout": float(holdout_value), "max_drop": max_drop, "rows": rows}
    if rows < min_rows:
        return LivePerformance(live=None, drop=None, positives=int(np.sum(y_true)) if rows else 0,
                               judged=False, flagged=False, note=f"{rows} labelled rows < {min_rows}", **common)
    metrics = compute_metrics(y_true, probabilities, threshold=threshold)
    live = getattr(metrics, metric)
    if live is None:
        return LivePerformance(live=None, drop=None, positives=metrics.positives, judged=False, flagged=False,
                               note=f"{metric} is undefined on this day (one class only)", **common)
    drop = _drop(metric, holdout_value, live)
    return LivePerformance(live=float(live), drop=float(drop), positives=metrics.positives, judged=True,
                           flagged=bool(drop > max_drop), **common)


def metric_interval(y_true, probabilities, metric: str, *, threshold: float = 0.5, confidence: float = 0.95,
                    resamples: int = 200, seed: int = 13) -> MetricInterval:
    """``metric`` of the rows with a two-sided interval at ``confidence`` (analytic where one exists)."""
    y = np.asarray(y_true).astype(np.int8)
    p = np.asarray(probabilities, dtype=float)
    positives = int(y.sum())
    if metric == "roc_auc":
        return auc_interval(y, p, confidence)
    if metric == "accuracy":
        return proportion_interval(int(np.sum((p >= threshold) == (y == 1))), y.size, confidence, positives)
    if metric == "brier":
        return mean_interval((p - y) ** 2, confidence, positives)
    if metric == "log_loss":
        clipped = np.clip(p, EPSILON, 1.0 - EPSILON)
        return mean_interval(-(y * np.log(clipped) + (1 - y) * np.log1p(-clipped)), confidence, positives)
    if metric in ("pr_auc", "ece"):
        return bootstrap_interval(y, p, lambda a, b: getattr(compute_metrics(a, b, threshold), metric),
                                  resamples=resamples, seed=seed, confidence=confidence)
    raise ValueError(f"unknown metric {metric!r}; known: {sorted(HIGHER_IS_BETTER)}")


def holdout_standard_error(metric: str, holdout: dict) -> float:
    """Standard error of a stored holdout metric from its row and positive counts (0 when unknown)."""
    value, n, positives = holdout.get(metric), holdout.get("n"), holdout.get("positives")
    if value is None or not n or positives is None or not math.isfinite(value):
        return 0.0
    if metric == "roc_auc" and 0 < positives < n:
        return hanley_mcneil_se(value, int(positives), int(n - positives))
    if metric == "accuracy":
        return math.sqrt(max(value * (1 - value), 0.0) / n)
    return 0.0


def _widened(drop: float, low: float, high: float, holdout_se: float, confidence: float) -> tuple[float, float]:
    """The drop's interval with the holdout's own uncertainty added in quadrature to each side."""
    if holdout_se <= 0:
        return low, high
    extra = normal_quantile(confidence) * holdout_se
    return drop - math.hypot(drop - low, extra), drop + math.hypot(high - drop, extra)


def window_performance(y_true, probabilities, *, metric: str, holdout_value: float, max_drop: float,
                       confidence: float = 0.95, rule: str = "significant", min_rows: int = 100,
                       min_class_rows: int = 10, threshold: float = 0.5,
                       days: Sequence[str] = (), holdout_se: float = 0.0) -> LivePerformance:
    """Judge the labelled rows of a trailing window (``days``, oldest first) against the holdout value."""
    _check(metric, holdout_value)
    if rule not in RULES:
        raise ValueError(f"unknown performance rule {rule!r}; choose from {list(RULES)}")
    y = np.asarray(y_true)
    rows, positives = int(y.size), int(np.sum(y))
    common = {"metric": metric, "holdout": float(holdout_value), "max_drop": max_drop, "rows": rows,
              "positives": positives, "confidence": confidence, "rule": rule, "days": tuple(days)}
    short = []
    if rows < min_rows:
        short.append(f"{rows} labelled rows < {min_rows}")
    if min(positives, rows - positives) < min_class_rows:
        short.append(f"{positives} positive / {rows - positives} negative rows (each needs >= {min_class_rows})")
    if short:
        return LivePerformance(live=None, drop=None, judged=False, flagged=False, note="; ".join(short), **common)
    interval = metric_interval(y, probabilities, metric, threshold=threshold, confidence=confidence)
    live, low, high = interval.estimate, interval.low, interval.high
    drop = _drop(metric, holdout_value, live)
    # The drop worsens as the metric does: its interval comes from the metric's opposite bound.
    drop_low, drop_high = sorted((_drop(metric, holdout_value, high), _drop(metric, holdout_value, low)))
    drop_low, drop_high = _widened(drop, drop_low, drop_high, holdout_se, confidence)
    flagged = drop > max_drop and drop_low > 0 if rule == "significant" else drop_low > max_drop
    return LivePerformance(live=live, drop=drop, judged=True, flagged=bool(flagged), low=low, high=high,
                           drop_low=drop_low, drop_high=drop_high, method=interval.method, **common)


def window_table(result: LivePerformance, per_day: Sequence[dict]) -> str:
    """Markdown: each day of the window (rows, positives, label coverage, the day's own metric and, when
    present, its CBPE estimate and band), then the window's figures with their intervals."""
    metric = result.metric
    lines = [f"| day | rows | positives | label coverage | {metric} (day) | {metric} CBPE estimate [band] |",
             "|---|---|---|---|---|---|"]
    for day in per_day:
        value = "n/a" if day.get("value") is None else f"{day['value']:.3f}"
        coverage = "n/a" if day.get("coverage") is None else f"{day['coverage']:.0%}"
        estimate = "n/a"
        if day.get("estimate") is not None:
            estimate = f"{day['estimate']:.3f} [{day['estimate_low']:.3f}, {day['estimate_high']:.3f}]"
        lines.append(f"| {day['day']} | {day['rows']} | {day['positives']} | {coverage} | {value} | {estimate} |")
    lines += ["", "| window | live [interval] | holdout | drop [interval] | max_drop | rule | verdict |",
              "|---|---|---|---|---|---|---|"]
    if result.judged and result.low is not None:
        verdict = "**FLAGGED**" if result.flagged else "ok"
        lines.append(f"| {len(result.days)} days, {result.rows} rows | {result.live:.4f} [{result.low:.4f}, "
                     f"{result.high:.4f}] | {result.holdout:.4f} | {result.drop:+.4f} [{result.drop_low:+.4f}, "
                     f"{result.drop_high:+.4f}] | {result.max_drop:g} | {result.rule} ({result.confidence:.0%}) "
                     f"| {verdict} |")
    else:
        lines.append(f"| {len(result.days)} days, {result.rows} rows | n/a | {result.holdout:.4f} | n/a "
                     f"| {result.max_drop:g} | {result.rule} | not judged: {result.note} |")
    return "\n".join(lines)


def judge_estimate(estimate, *, metric: str, holdout_value: float, max_drop: float, rule: str = "significant",
                   day: str | None = None, holdout_se: float = 0.0) -> LivePerformance:
    """The same verdict as ``window_performance`` on a CBPE estimate (ml_assets.ml.cbpe.Estimate) and its band."""
    from ml_assets.ml.cbpe import ESTIMABLE

    _check(metric, holdout_value)
    common = {"metric": metric, "holdout": float(holdout_value), "max_drop": max_drop, "rows": estimate.n,
              "positives": round(estimate.expected_positives), "confidence": estimate.confidence, "rule": rule,
              "method": "cbpe", "days": (day,) if day else ()}
    if metric not in ESTIMABLE:
        return LivePerformance(live=None, drop=None, judged=False, flagged=False,
                               note=f"CBPE estimates {list(ESTIMABLE)} only, not {metric}", **common)
    value, low, high = estimate.value(metric)
    if value is None or low is None:
        return LivePerformance(live=None, drop=None, judged=False, flagged=False,
                               note=f"{metric} cannot be estimated on {estimate.n} rows", **common)
    drop = _drop(metric, holdout_value, value)
    drop_low, drop_high = sorted((_drop(metric, holdout_value, high), _drop(metric, holdout_value, low)))
    drop_low, drop_high = _widened(drop, drop_low, drop_high, holdout_se, estimate.confidence)
    flagged = drop > max_drop and drop_low > 0 if rule == "significant" else drop_low > max_drop
    return LivePerformance(live=value, drop=drop, judged=True, flagged=bool(flagged), low=low, high=high,
                           drop_low=drop_low, drop_high=drop_high, **common)
