"""A candidate against a reference (the champion or the baseline) on the same holdout rows.

The output is a plain dict the gate judges and the evaluation document stores:

    {"reference": label, "confidence": 0.95, "dimensions": [...],
     "overall": {metric: PairedDifference.as_dict() | {"error": why}},
     "slices": [{"dimension", "value", "n", "positives", "metric", ...difference..., "p_value"}
                | {... "skipped": why}]}

Differences are candidate minus reference in the metric's own units. A slice's ``p_value`` is
the one-sided p-value of "the candidate is worse than the reference by more than the spec's
max_slice_regression bound" (unadjusted: the gate corrects across the family).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ml_assets.ml.evaluation import HIGHER_IS_BETTER, MISSING_SLICE, _metrics, _slice_key
from ml_assets.ml.stats import PairedDifference, delong_auc_difference, paired_bootstrap
from ml_assets.spec.model import PromotionSpec

if TYPE_CHECKING:
    import pandas as pd


def metric_function(metric: str, threshold: float) -> Callable[[np.ndarray, np.ndarray], float | None]:
    """metric(y, p) with the evaluation module's definitions (None when undefined)."""
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(HIGHER_IS_BETTER)}")

    def compute(y: np.ndarray, p: np.ndarray) -> float | None:
        return getattr(_metrics(y, p, threshold), metric)

    return compute


def paired_difference(spec: PromotionSpec, metric: str, y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray,
                      days: np.ndarray | None = None) -> PairedDifference:
    """metric(A) - metric(B) with the spec's method: DeLong for roc_auc if chosen, else the paired bootstrap."""
    if metric == "roc_auc" and spec.comparison == "delong":
        return delong_auc_difference(y, p_a, p_b, confidence=spec.confidence)
    groups = None
    if spec.bootstrap_unit == "day":
        if days is None:
            raise ValueError("bootstrap_unit is 'day' but no day is given per row")
        groups = days
    return paired_bootstrap(y, p_a, p_b, metric_function(metric, spec.decision_threshold),
                            resamples=spec.bootstrap_resamples, seed=spec.seed, groups=groups,
                            confidence=spec.confidence)


def regression_p_value(metric: str, difference: PairedDifference, bound: float) -> float:
    """p-value of "the candidate is worse than the reference by more than ``bound``"."""
    if HIGHER_IS_BETTER[metric]:
        return difference.p_below(-bound)  # candidate - reference < -bound
    return difference.p_above(bound)  # lower is better: candidate - reference > bound


def _slice_codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    import pandas as pd

    try:
        codes, uniques = pd.factorize(column, sort=True)
    except TypeError:  # mixed types that do not order
        codes, uniques = pd.factorize(column, sort=False)
    labels = [_slice_key(v) for v in uniques] + [MISSING_SLICE]
    return np.where(codes < 0, len(labels) - 1, codes), labels


def _slice_entries(spec: PromotionSpec, y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, slices: pd.DataFrame,
                   days: np.ndarray | None) -> list[dict]:
    entries = []
    for dimension in slices.columns:
        codes, labels = _slice_codes(slices[dimension].reset_index(drop=True))
        for code, value in enumerate(labels):
            rows = np.flatnonzero(codes == code)
            if rows.size < spec.min_slice_size:
                continue  # as in the evaluation tables: too small to be a slice
            positives = int(y[rows].sum())
            base = {"dimension": str(dimension), "value": value, "n": int(rows.size), "positives": positives}
            fewest = min(positives, rows.size - positives)
            for metric, bound in sorted(spec.max_slice_regression.items()):
                if fewest < spec.min_slice_class_count:
                    entries.append({**base, "metric": metric, "skipped": (
                        f"{positives} positives, {rows.size - positives} negatives: fewer than "
                        f"{spec.min_slice_class_count} of a class")})
                    continue
                try:
                    difference = paired_difference(spec, metric, y[rows], p_a[rows], p_b[rows],
                                                   None if days is None else days[rows])
                except ValueError as exc:  # e.g. one holdout day in the slice for a day bootstrap
                    entries.append({**base, "metric": metric, "skipped": str(exc)})
                    continue
                entries.append({**base, "metric": metric, **difference.as_dict(),
                                "bound": bound, "p_value": regression_p_value(metric, difference, bound)})
    return entries


def compare(spec: PromotionSpec, y, p_candidate, p_reference, *, reference: str, metrics: list[str],
            slices: pd.DataFrame | None = None, days=None, gate_slices: bool = True) -> dict:
    """Paired differences of ``metrics`` overall and, if ``gate_slices``, of max_slice_regression per slice."""
    labels = np.asarray(y).astype(np.int8)
    p_a, p_b = np.asarray(p_candidate, dtype=float), np.asarray(p_reference, dtype=float)
    day_keys = None if days is None else np.asarray([str(d) for d in days])
    overall: dict[str, dict] = {}
    for metric in sorted(set(metrics)):
        try:
            overall[metric] = paired_difference(spec, metric, labels, p_a, p_b, day_keys).as_dict()
        except ValueError as exc:
            overall[metric] = {"error": str(exc)}
    entries: list[dict] = []
    dimensions: list[str] = []
    if gate_slices and slices is not None and spec.max_slice_regression:
        if len(slices) != labels.size:
            raise ValueError(f"slices has {len(slices)} rows but y has {labels.size}")
        dimensions = [str(d) for d in slices.columns]
        entries = _slice_entries(spec, labels, p_a, p_b, slices, day_keys)
    return {"reference": reference, "confidence": spec.confidence, "method": spec.comparison,
            "dimensions": dimensions, "overall": overall, "slices": entries}
