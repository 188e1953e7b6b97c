"""Evaluation results as Markdown tables and a PNG (ROC curves and a reliability diagram)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

from ml_assets.ml.metrics import HIGHER_IS_BETTER, METRICS, EvaluationResult


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
