"""The metrics of a binary classifier and the validation of their inputs (one definition for every module).

Metric semantics (see the TFMA/MLflow notes in the project reference):

- ``roc_auc``: area under the ROC curve; ties between a positive and a negative count one half
  (the Mann-Whitney definition, as in scikit-learn). ``None`` when the rows hold one class only.
- ``pr_auc``: average precision, the step-wise area under the precision-recall curve
  (``sklearn.metrics.average_precision_score``, no interpolation). ``None`` for one class.
- ``log_loss``: mean binary cross-entropy in nats, probabilities clipped to [1e-7, 1 - 1e-7].
- ``brier``: mean squared difference between probability and label.
- ``accuracy``: share of rows where ``p >= threshold`` equals the label.
- ``ece``: expected calibration error over ten equal-width probability bins,
  ``sum_b n_b / n * |mean_p_b - fraction_positive_b|``.

Higher is better for roc_auc, pr_auc and accuracy; lower is better for the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "ece")
HIGHER_IS_BETTER: dict[str, bool] = {
    "roc_auc": True,
    "pr_auc": True,
    "log_loss": False,
    "brier": False,
    "accuracy": True,
    "ece": False,
}

EPSILON = 1e-7
ECE_BINS = 10


@dataclass(frozen=True)
class Metrics:
    n: int
    positives: int
    roc_auc: float | None
    pr_auc: float | None
    log_loss: float
    brier: float
    accuracy: float
    ece: float
    threshold: float

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


@dataclass(frozen=True)
class Calibration:
    """Equal-width probability bins; an empty bin has ``None`` means and a zero count."""

    bin_edges: list[float]
    mean_predicted: list[float | None]
    fraction_positive: list[float | None]
    counts: list[int]



@dataclass(frozen=True)
class EvaluationResult:
    model: str
    overall: Metrics
    calibration: Calibration
    slices: dict[str, dict[str, Metrics]]
    roc_curve: tuple[list[float], list[float]]



# --- validation ---------------------------------------------------------------------------


def _as_labels(y_true) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y.shape}")
    if y.size == 0:
        raise ValueError("y_true is empty: cannot evaluate zero rows")
    if y.dtype == bool:
        return y.astype(np.int8)
    try:
        numeric = y.astype(float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"y_true must hold the labels 0 and 1, got dtype {y.dtype}") from exc
    bad = ~np.isin(numeric, (0.0, 1.0))
    if bad.any():
        import pandas as pd  # imported here: the code location loads this module

        examples = ", ".join(repr(v) for v in pd.unique(y[bad])[:5])
        raise ValueError(
            f"y_true must hold only the labels 0 and 1; {int(bad.sum())} row(s) do not "
            f"(e.g. {examples})"
        )
    return numeric.astype(np.int8)


def _as_probabilities(p, n: int) -> np.ndarray:
    q = np.asarray(p)
    if q.ndim != 1:
        raise ValueError(f"p must be 1-D (probability of the positive class), got shape {q.shape}")
    if q.shape[0] != n:
        raise ValueError(f"y_true and p differ in length: {n} labels, {q.shape[0]} probabilities")
    try:
        q = q.astype(float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"p must be numeric probabilities, got dtype {q.dtype}") from exc
    if not np.isfinite(q).all():
        raise ValueError(f"p holds {int((~np.isfinite(q)).sum())} NaN or infinite value(s)")
    if (q < 0).any() or (q > 1).any():
        raise ValueError(f"p must lie in [0, 1]; observed range [{q.min():.6g}, {q.max():.6g}]")
    return q


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not (0.0 <= t <= 1.0):
        raise ValueError(f"threshold must lie in [0, 1], got {threshold!r}")
    return t


def _validated(y_true, p) -> tuple[np.ndarray, np.ndarray]:
    y = _as_labels(y_true)
    return y, _as_probabilities(p, y.shape[0])


# --- core computations (inputs already validated) ----------------------------------------


def _bin_edges(bins: int) -> np.ndarray:
    # arange / bins is correctly rounded (0.3 is 0.3, not 0.30000000000000004 as in linspace).
    return np.arange(bins + 1, dtype=float) / bins


def _bin_sums(y: np.ndarray, p: np.ndarray, bins: int) -> tuple[np.ndarray, ...]:
    edges = _bin_edges(bins)
    index = _bin_index(p, bins)
    counts = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, weights=p, minlength=bins)
    sum_y = np.bincount(index, weights=y, minlength=bins)
    return edges, counts, sum_p, sum_y


def _ece(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    _, _, sum_p, sum_y = _bin_sums(y, p, bins)
    # |sum_p - sum_y| / n == sum_b (n_b / n) * |mean_p_b - frac_b|
    return float(np.abs(sum_p - sum_y).sum() / y.shape[0])


def _ranking(y_desc: np.ndarray, p_desc: np.ndarray) -> tuple[float | None, float | None]:
    """ROC AUC and average precision from rows sorted by descending probability.

    Same definitions as scikit-learn's ``roc_auc_score`` (trapezoid over distinct thresholds,
    so a tied positive/negative pair counts one half) and ``average_precision_score``
    (sum over distinct thresholds of recall increase times precision), without its per-call
    validation overhead, which dominates when there are hundreds of slices.
    """
    n = y_desc.shape[0]
    positives = int(y_desc.sum())
    if not 0 < positives < n:
        return None, None
    last = np.r_[np.flatnonzero(np.diff(p_desc)), n - 1]  # last row of each distinct p
    tps = np.cumsum(y_desc, dtype=np.int64)[last].astype(float)
    fps = (last + 1) - tps
    roc_auc = _roc_auc(tps, fps, positives, n)
    tpr = np.r_[0.0, tps / positives]
    pr_auc = float(np.sum(np.diff(tpr) * (tps / (tps + fps))))
    return roc_auc, pr_auc


def _roc_auc(tps: np.ndarray, fps: np.ndarray, positives: int, n: int) -> float:
    """Trapezoid ROC AUC from the cumulative true/false positive counts at each distinct threshold."""
    tpr = np.r_[0.0, tps / positives]
    fpr = np.r_[0.0, fps / (n - positives)]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def _bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    # Bins are [e_i, e_i+1) except the last, which also holds p == 1.
    return np.clip(np.searchsorted(_bin_edges(bins), p, side="right") - 1, 0, bins - 1)


def _metrics(y: np.ndarray, p: np.ndarray, threshold: float, *, presorted: bool = False) -> Metrics:
    """``presorted``: rows are already in descending order of ``p``."""
    n = int(y.shape[0])
    if presorted:
        roc_auc, pr_auc = _ranking(y, p)
    else:
        order = np.argsort(-p, kind="stable")
        roc_auc, pr_auc = _ranking(y[order], p[order])
    clipped = np.clip(p, EPSILON, 1.0 - EPSILON)
    log_loss = -np.mean(y * np.log(clipped) + (1 - y) * np.log1p(-clipped))
    return Metrics(
        n=n,
        positives=int(y.sum()),
        roc_auc=roc_auc,
        pr_auc=pr_auc,
        log_loss=float(log_loss),
        brier=float(np.mean((p - y) ** 2)),
        accuracy=float(np.mean((p >= threshold) == (y == 1))),
        ece=_ece(y, p),
        threshold=threshold,
    )


def _calibration(y: np.ndarray, p: np.ndarray, bins: int) -> Calibration:
    edges, counts, sum_p, sum_y = _bin_sums(y, p, bins)
    filled = counts > 0
    safe = np.where(filled, counts, 1)
    mean_p, frac = sum_p / safe, sum_y / safe
    return Calibration(
        bin_edges=[float(e) for e in edges],
        mean_predicted=[float(m) if f else None for m, f in zip(mean_p, filled, strict=True)],
        fraction_positive=[float(v) if f else None for v, f in zip(frac, filled, strict=True)],
        counts=[int(c) for c in counts],
    )


# --- public API ---------------------------------------------------------------------------


def compute_metrics(y_true: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> Metrics:
    """All metrics for labels ``y_true`` (0/1) and positive-class probabilities ``p``."""
    y, q = _validated(y_true, p)
    return _metrics(y, q, _check_threshold(threshold))


def calibration(y_true, p, bins: int = 10) -> Calibration:
    """Reliability-diagram data over ``bins`` equal-width bins of [0, 1]."""
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    y, q = _validated(y_true, p)
    return _calibration(y, q, int(bins))



class MetricFunction:
    """metric(y, p) on validated arrays (None when undefined), computing only that metric.

    ``on_rows(y, p)`` returns ``rows -> metric(y[rows], p[rows])`` (rows: an integer index array,
    repeats allowed), for a bootstrap that evaluates the metric on a thousand row sets. For
    roc_auc and ece it does the per-row work (sorting, binning) once and each row set costs a few
    ``np.bincount``: the same integer counts and the same float operations in the same order as
    ``metric(y[rows], p[rows])``, so the values are bit-identical (ml_assets_tests/ml/test_stats.py).
    """

    def __init__(self, metric: str, compute: Callable[[np.ndarray, np.ndarray], float | None],
                 on_rows: Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], float | None]] | None = None):
        self.metric = metric
        self._compute = compute
        self._on_rows = on_rows

    def __call__(self, y: np.ndarray, p: np.ndarray) -> float | None:
        return self._compute(y, p)

    def on_rows(self, y: np.ndarray, p: np.ndarray) -> Callable[[np.ndarray], float | None]:
        if self._on_rows is not None:
            return self._on_rows(y, p)
        compute = self._compute
        return lambda rows: compute(y[rows], p[rows])


def _roc_auc_on_rows(y: np.ndarray, p: np.ndarray) -> Callable[[np.ndarray], float | None]:
    # Sorted by descending p, rows of equal p form one group; _ranking reads only the cumulative
    # counts at each group's end, so the AUC of any row set depends only on how many positives and
    # rows of each group it holds (groups it misses are left out, as _ranking never sees them).
    distinct, inverse = np.unique(p, return_inverse=True)
    groups = distinct.size
    # One code per (group, label), 0 for the highest p: one bincount counts rows and positives.
    code = ((groups - 1 - inverse.reshape(-1)) * 2 + (np.asarray(y) == 1)).astype(np.intp)

    def roc_auc(rows: np.ndarray) -> float | None:
        drawn = code[rows]
        n = int(drawn.size)
        tally = np.bincount(drawn, minlength=2 * groups).reshape(groups, 2)
        hits = tally[:, 1]
        counts = tally[:, 0] + hits
        positives = int(hits.sum())
        if not 0 < positives < n:
            return None
        present = np.flatnonzero(counts)
        ends = np.cumsum(counts)[present]  # _ranking's last + 1 (absent groups add nothing)
        tps = np.cumsum(hits)[present].astype(float)
        return _roc_auc(tps, ends - tps, positives, n)

    return roc_auc


def _ece_on_rows(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> Callable[[np.ndarray], float]:
    index = _bin_index(p, bins)

    def ece(rows: np.ndarray) -> float:
        drawn = index[rows]
        sum_p = np.bincount(drawn, weights=p[rows], minlength=bins)
        sum_y = np.bincount(drawn, weights=y[rows], minlength=bins)
        return float(np.abs(sum_p - sum_y).sum() / drawn.shape[0])

    return ece


def _ranked(y: np.ndarray, p: np.ndarray) -> tuple[float | None, float | None]:
    order = np.argsort(-p, kind="stable")  # as _metrics sorts
    return _ranking(y[order], p[order])


def metric_function(metric: str, threshold: float = 0.5) -> MetricFunction:
    """metric(y, p) on validated arrays (None when undefined), computing only that metric."""
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}; known: {list(METRICS)}")
    if metric == "ece":
        return MetricFunction(metric, lambda y, p: _ece(y, p), _ece_on_rows)
    if metric == "brier":
        return MetricFunction(metric, lambda y, p: float(np.mean((p - y) ** 2)))
    if metric == "accuracy":
        return MetricFunction(metric, lambda y, p: float(np.mean((p >= threshold) == (y == 1))))
    if metric == "roc_auc":
        return MetricFunction(metric, lambda y, p: _ranked(y, p)[0], _roc_auc_on_rows)
    if metric == "pr_auc":
        return MetricFunction(metric, lambda y, p: _ranked(y, p)[1])
    return MetricFunction(metric, lambda y, p: getattr(_metrics(y, p, threshold), metric))


def metric_intervals(y_true, p, metrics, *, threshold: float = 0.5, confidence: float = 0.95,
                     resamples: int = 1000, seed: int = 13, groups=None) -> dict[str, dict]:
    """Each metric's estimate with a percentile-bootstrap interval (rows, or whole ``groups`` e.g. days).

    ``{metric: MetricInterval.as_dict() | {"error": why}}``; the gate reads them for its absolute bars.
    """
    from ml_assets.ml.stats import bootstrap_interval, group_bootstrap_interval

    y, q = _validated(y_true, p)
    t = _check_threshold(threshold)
    out: dict[str, dict] = {}
    for metric in sorted(set(metrics)):
        function = metric_function(metric, t)
        try:
            if groups is None:
                interval = bootstrap_interval(y, q, function, resamples=resamples, seed=seed, confidence=confidence)
            else:
                interval = group_bootstrap_interval(y, q, function, groups, resamples=resamples, seed=seed,
                                                    confidence=confidence)
        except ValueError as exc:
            out[metric] = {"error": str(exc)}
            continue
        out[metric] = interval.as_dict()
    return out
