"""Live performance: the champion's metric on one labelled day, against its own holdout value."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ml_assets.ml.evaluation import HIGHER_IS_BETTER, compute_metrics


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

    @property
    def summary(self) -> str:
        if not self.judged:
            return f"not judged: {self.note}"
        relation = ">" if self.flagged else "<="
        return (f"{self.metric} {self.live:.3f} vs holdout {self.holdout:.3f}: drop {self.drop:+.3f} "
                f"{relation} {self.max_drop:g} on {self.rows} rows")

    def as_dict(self) -> dict:
        return {**asdict(self), "summary": self.summary}


def live_performance(y_true: np.ndarray, probabilities: np.ndarray, *, metric: str, holdout_value: float,
                     max_drop: float, min_rows: int, threshold: float = 0.5) -> LivePerformance:
    """Flag the day when ``metric`` is worse than ``holdout_value`` by more than ``max_drop``.

    A day with fewer than ``min_rows`` labelled rows, or on which the metric is undefined (one
    class only, so no ROC AUC), is reported but not judged.
    """
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(HIGHER_IS_BETTER)}")
    if holdout_value is None or not math.isfinite(holdout_value):
        raise ValueError(f"the champion has no holdout {metric} to compare with")
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
    drop = holdout_value - live if HIGHER_IS_BETTER[metric] else live - holdout_value
    return LivePerformance(live=float(live), drop=float(drop), positives=metrics.positives, judged=True,
                           flagged=bool(drop > max_drop), **common)
