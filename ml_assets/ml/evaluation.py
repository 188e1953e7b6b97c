"""Binary-classifier evaluation: overall and per-slice metrics, calibration, ROC points.

The metric definitions live in ml_assets.ml.metrics, tables and plots in
ml_assets.ml.evaluation_tables; their public names stay importable from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ml_assets.ml.evaluation_tables import (
    format_value,
    markdown_table,
    metrics_table_markdown,
    plot_evaluation,
    slice_table_markdown,
)
from ml_assets.ml.metrics import (
    ECE_BINS,
    EPSILON,
    HIGHER_IS_BETTER,
    METRICS,
    Calibration,
    EvaluationResult,
    Metrics,
    _calibration,
    _check_threshold,
    _ece,
    _metrics,
    _validated,
    calibration,
    compute_metrics,
    metric_function,
    metric_intervals,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ECE_BINS", "EPSILON", "HIGHER_IS_BETTER", "MAX_ROC_POINTS", "METRICS", "MISSING_SLICE", "Calibration",
    "EvaluationResult", "Metrics", "_ece", "_metrics", "_slice_key", "calibration", "compute_metrics", "evaluate",
    "format_value", "markdown_table", "metric_function", "metric_intervals", "metrics_table_markdown",
    "plot_evaluation", "slice_table_markdown",
]

MAX_ROC_POINTS = 200
MISSING_SLICE = "(missing)"


def _roc_points(y: np.ndarray, p: np.ndarray) -> tuple[list[float], list[float]]:
    from sklearn.metrics import roc_curve  # imported here: the code location loads this module

    if not 0 < int(y.sum()) < y.shape[0]:
        return [], []  # undefined for a single class
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=True)
    if fpr.shape[0] > MAX_ROC_POINTS:
        keep = np.unique(np.round(np.linspace(0, fpr.shape[0] - 1, MAX_ROC_POINTS)).astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return [float(v) for v in fpr], [float(v) for v in tpr]


def _slice_key(value) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _slice_metrics(
    y: np.ndarray, p: np.ndarray, column: pd.Series, threshold: float, min_slice_size: int
) -> dict[str, Metrics]:
    import pandas as pd

    try:
        codes, uniques = pd.factorize(column, sort=True)
    except TypeError:  # mixed types that do not order
        codes, uniques = pd.factorize(column, sort=False)
    labels = [_slice_key(v) for v in uniques]
    codes = np.where(codes < 0, len(labels), codes)  # missing values form their own slice
    labels.append(MISSING_SLICE)
    counts = np.bincount(codes, minlength=len(labels))
    # One sort by (slice, descending p): every slice is a contiguous run, already ranked.
    order = np.lexsort((-p, codes))
    ends = np.cumsum(counts)
    out: dict[str, Metrics] = {}
    for code, (label, count) in enumerate(zip(labels, counts, strict=True)):
        if count == 0 or count < min_slice_size:
            continue
        rows = order[ends[code] - count : ends[code]]
        key = label if label not in out else f"{label}#{code}"
        out[key] = _metrics(y[rows], p[rows], threshold, presorted=True)
    return out


def evaluate(
    model_name: str,
    y_true,
    p,
    slices: pd.DataFrame | None = None,
    threshold=0.5,
    min_slice_size: int = 30,
) -> EvaluationResult:
    """Overall metrics, calibration, ROC points and per-slice metrics for one model.

    ``slices`` holds one column per slicing dimension, row-aligned with ``y_true`` by position
    (its index is ignored). Slice values become string keys; missing values form the
    ``"(missing)"`` slice; slices with fewer than ``min_slice_size`` rows are left out. Every
    dimension appears in ``slices`` of the result, possibly with no values.
    """
    y, q = _validated(y_true, p)
    t = _check_threshold(threshold)
    if min_slice_size < 1:
        raise ValueError(f"min_slice_size must be at least 1, got {min_slice_size}")
    per_slice: dict[str, dict[str, Metrics]] = {}
    if slices is not None:
        import pandas as pd

        if not isinstance(slices, pd.DataFrame):
            raise ValueError(f"slices must be a pandas DataFrame, got {type(slices).__name__}")
        if len(slices) != y.shape[0]:
            raise ValueError(f"slices has {len(slices)} rows but y_true has {y.shape[0]}")
        for name in slices.columns:
            column = slices[name].reset_index(drop=True)
            per_slice[str(name)] = _slice_metrics(y, q, column, t, min_slice_size)
    return EvaluationResult(
        model=model_name,
        overall=_metrics(y, q, t),
        calibration=_calibration(y, q, ECE_BINS),
        slices=per_slice,
        roc_curve=_roc_points(y, q),
    )

