"""Binary-classifier evaluation: overall and per-slice metrics, calibration, tables and plots.

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

import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

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
MAX_ROC_POINTS = 200
MISSING_SLICE = "(missing)"


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
    # Bins are [e_i, e_i+1) except the last, which also holds p == 1.
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
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
    tpr = np.r_[0.0, tps / positives]
    fpr = np.r_[0.0, fps / (n - positives)]
    roc_auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)
    pr_auc = float(np.sum(np.diff(tpr) * (tps / (tps + fps))))
    return roc_auc, pr_auc


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


def _roc_points(y: np.ndarray, p: np.ndarray) -> tuple[list[float], list[float]]:
    from sklearn.metrics import roc_curve  # imported here: the code location loads this module

    if not 0 < int(y.sum()) < y.shape[0]:
        return [], []  # undefined for a single class
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=True)
    if fpr.shape[0] > MAX_ROC_POINTS:
        keep = np.unique(np.round(np.linspace(0, fpr.shape[0] - 1, MAX_ROC_POINTS)).astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return [float(v) for v in fpr], [float(v) for v in tpr]


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


# --- tables -------------------------------------------------------------------------------


def format_value(value) -> str:
    """Numbers as they appear in reports: ints as-is, floats to 4 decimals, None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "n/a"
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.2e}"
        return f"{v:.4f}"
    return str(value)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1
) -> str:
    """A GitHub-style table; columns from ``numeric_from`` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(headers))]
    lines = [
        "| " + " | ".join(_md_cell(h) for h in headers) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _unique_names(results: list[EvaluationResult]) -> list[str]:
    names: list[str] = []
    for r in results:
        name, k = r.model, 2
        while name in names:
            name, k = f"{r.model} ({k})", k + 1
        names.append(name)
    return names


def metrics_table_markdown(results: list[EvaluationResult]) -> str:
    """Overall metrics side by side: one row per metric, one column per model."""
    if not results:
        raise ValueError("metrics_table_markdown needs at least one EvaluationResult")
    fields = ("n", "positives", *METRICS, "threshold")
    rows = []
    for field in fields:
        label = field
        if field in HIGHER_IS_BETTER:
            label = f"{field} ({'higher' if HIGHER_IS_BETTER[field] else 'lower'} is better)"
        rows.append([label, *(format_value(getattr(r.overall, field)) for r in results)])
    return markdown_table(["metric", *_unique_names(results)], rows)


def slice_table_markdown(
    results: list[EvaluationResult], dimension: str, metrics: Sequence[str] = METRICS
) -> str:
    """One row per slice value of ``dimension``; per model a group of columns (n, metrics).

    ``n/a`` marks an undefined metric (e.g. AUC of a single-class slice); ``—`` marks a slice
    value a model has no metrics for (absent or below the minimum slice size).
    """
    if not results:
        raise ValueError("slice_table_markdown needs at least one EvaluationResult")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    if not any(dimension in r.slices for r in results):
        known = sorted({d for r in results for d in r.slices})
        raise ValueError(f"no result has slice dimension {dimension!r}; known: {known}")
    values: list[str] = []
    for r in results:
        values += [v for v in r.slices.get(dimension, {}) if v not in values]
    names = _unique_names(results)
    headers = [dimension]
    for name in names:
        headers += [f"{name} n", *(f"{name} {m}" for m in metrics)]
    rows = []
    for value in values:
        row = [value]
        for r in results:
            m = r.slices.get(dimension, {}).get(value)
            if m is None:
                row += ["—"] * (1 + len(metrics))
            else:
                row += [format_value(m.n), *(format_value(getattr(m, k)) for k in metrics)]
        rows.append(row)
    return markdown_table(headers, rows)


# --- plots --------------------------------------------------------------------------------


def plot_evaluation(results: list[EvaluationResult]) -> bytes:
    """PNG with ROC curves (left) and a reliability diagram (right) for every model."""
    if not results:
        raise ValueError("plot_evaluation needs at least one EvaluationResult")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure on the Agg canvas: no pyplot state, no display, thread-safe enough.
    fig = Figure(figsize=(10, 4.2), dpi=90)
    FigureCanvasAgg(fig)
    roc_ax, cal_ax = fig.subplots(1, 2)
    for name, r in zip(_unique_names(results), results, strict=True):
        fpr, tpr = r.roc_curve
        auc = format_value(r.overall.roc_auc)
        if fpr:
            roc_ax.plot(fpr, tpr, linewidth=1.6, label=f"{name} (AUC {auc})")
        else:
            roc_ax.plot([], [], label=f"{name} (AUC n/a: one class)")
        cal = r.calibration
        points = [
            (m, f)
            for m, f in zip(cal.mean_predicted, cal.fraction_positive, strict=True)
            if m is not None
        ]
        xs = [m for m, _ in points]
        ys = [f for _, f in points]
        cal_ax.plot(
            xs,
            ys,
            marker="o",
            markersize=4,
            linewidth=1.4,
            label=f"{name} (ECE {format_value(r.overall.ece)})",
        )
    for ax in (roc_ax, cal_ax):
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    roc_ax.set_title("ROC")
    roc_ax.set_xlabel("false positive rate")
    roc_ax.set_ylabel("true positive rate")
    cal_ax.set_title("Reliability")
    cal_ax.set_xlabel("mean predicted probability")
    cal_ax.set_ylabel("fraction positive")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
