"""Paired comparisons of two models scored on the same rows, and multiple-comparison corrections.

- ``delong_auc_difference``: ROC AUC of model A minus model B with DeLong's variance of the
  difference (DeLong, DeLong & Clarke-Pearson 1988; the midrank algorithm of Sun & Xu 2014).
  Both models are scored on the same rows, so the covariance of the two AUCs is used.
- ``paired_bootstrap``: any metric's difference, resampling rows (or whole groups, e.g. days)
  with replacement, the SAME resample for both models; percentile interval, fixed seed.
- ``holm`` / ``benjamini_hochberg``: adjusted p-values (family-wise error / false discovery rate).
- ``auc_interval`` / ``proportion_interval`` / ``mean_interval`` / ``bootstrap_interval``: ONE
  model's metric with its interval (live monitoring over a trailing window: ml_assets.ml.performance).

Every comparison returns a ``PairedDifference``: estimate = metric(A) - metric(B) in the metric's
own units, a two-sided interval at ``confidence`` and the p-value of the one-sided test that the
true difference is below a given threshold (``p_below``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

_NORMAL = NormalDist()


@dataclass(frozen=True)
class PairedDifference:
    """metric(A) - metric(B) on the same rows, with its uncertainty."""

    method: str  # "delong" or "bootstrap"
    estimate: float
    se: float
    low: float
    high: float
    confidence: float
    value_a: float
    value_b: float
    n: int
    positives: int
    # bootstrap only: the resampled differences (kept out of as_dict), and resamples left out
    # because a metric was undefined on them (e.g. one class only)
    samples: tuple[float, ...] = ()
    undefined_resamples: int = 0

    def p_below(self, threshold: float) -> float:
        """One-sided p-value of H0 "true difference >= threshold" against H1 "it is below".

        DeLong: normal approximation, Phi((estimate - threshold) / se). Bootstrap: the share of
        resampled differences at or above the threshold ((k + 1) / (B + 1), never 0).
        """
        if self.method == "bootstrap":
            draws = np.asarray(self.samples)
            return float((np.sum(draws >= threshold) + 1) / (draws.size + 1))
        if self.se == 0:
            return 0.0 if self.estimate < threshold else 1.0
        return _NORMAL.cdf((self.estimate - threshold) / self.se)

    def p_above(self, threshold: float) -> float:
        """One-sided p-value of H0 "true difference <= threshold" against H1 "it is above"."""
        if self.method == "bootstrap":
            draws = np.asarray(self.samples)
            return float((np.sum(draws <= threshold) + 1) / (draws.size + 1))
        if self.se == 0:
            return 0.0 if self.estimate > threshold else 1.0
        return 1.0 - _NORMAL.cdf((self.estimate - threshold) / self.se)

    def as_dict(self) -> dict:
        out = asdict(self)
        del out["samples"]
        return out


def normal_quantile(confidence: float) -> float:
    """z such that a two-sided normal interval at ``confidence`` is estimate +- z * se."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    return _NORMAL.inv_cdf(0.5 + confidence / 2.0)


def _two_class(y) -> tuple[np.ndarray, int]:
    labels = np.asarray(y)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"y must be a non-empty 1-D array of 0/1 labels, got shape {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("y must hold only the labels 0 and 1")
    labels = labels.astype(np.int8)
    positives = int(labels.sum())
    return labels, positives


def _scores(p, n: int, name: str) -> np.ndarray:
    scores = np.asarray(p, dtype=float)
    if scores.shape != (n,):
        raise ValueError(f"{name} must hold one score per row: {n} rows, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} holds NaN or infinite scores")
    return scores


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks (as scipy.stats.rankdata 'average')."""
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
    ends = np.r_[starts[1:], ordered.size]
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def delong_auc_difference(y, p_a, p_b, confidence: float = 0.95) -> PairedDifference:
    """ROC AUC(A) - ROC AUC(B) on the same rows with DeLong's paired variance.

    Raises ValueError when the rows hold a single class (the AUC is undefined) or fewer than two
    rows of a class (no variance).
    """
    labels, m = _two_class(y)
    n = labels.size - m
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 positives and 2 negatives, got {m} and {n}")
    z = normal_quantile(confidence)
    positive = labels == 1
    aucs, v_pos, v_neg = [], [], []
    for name, p in (("p_a", p_a), ("p_b", p_b)):
        scores = _scores(p, labels.size, name)
        x, w = scores[positive], scores[~positive]
        tx, tw, tz = _midranks(x), _midranks(w), _midranks(np.r_[x, w])
        aucs.append((tz[:m].sum() / m - (m + 1) / 2.0) / n)
        v_pos.append((tz[:m] - tx) / n)  # per positive: share of negatives ranked below it
        v_neg.append(1.0 - (tz[m:] - tw) / m)  # per negative: share of positives ranked above it
    s_pos, s_neg = np.cov(np.vstack(v_pos)), np.cov(np.vstack(v_neg))
    covariance = s_pos / m + s_neg / n
    variance = covariance[0, 0] + covariance[1, 1] - 2.0 * covariance[0, 1]
    se = float(np.sqrt(max(variance, 0.0)))
    estimate = float(aucs[0] - aucs[1])
    return PairedDifference("delong", estimate, se, estimate - z * se, estimate + z * se, confidence,
                            float(aucs[0]), float(aucs[1]), int(labels.size), m)


def paired_bootstrap(
    y,
    p_a,
    p_b,
    metric: Callable[[np.ndarray, np.ndarray], float | None],
    *,
    resamples: int = 1000,
    seed: int = 13,
    groups=None,
    confidence: float = 0.95,
) -> PairedDifference:
    """metric(A) - metric(B) with a paired percentile bootstrap.

    ``metric(y, p)`` returns the metric (None or NaN when undefined on a resample; such
    resamples are left out and counted). ``groups`` (one key per row, e.g. the day) resamples
    whole groups instead of rows, keeping within-day correlation. Same seed, same answer.
    """
    labels, positives = _two_class(y)
    a, b = _scores(p_a, labels.size, "p_a"), _scores(p_b, labels.size, "p_b")
    if resamples < 10:
        raise ValueError(f"resamples must be at least 10, got {resamples}")
    normal_quantile(confidence)  # validates
    value_a, value_b = metric(labels, a), metric(labels, b)
    if not _defined(value_a) or not _defined(value_b):
        raise ValueError("the metric is undefined on these rows (e.g. a single class)")
    rng = np.random.default_rng(seed)
    if groups is None:
        members = None
    else:
        keys = np.asarray(groups)
        if keys.shape != (labels.size,):
            raise ValueError(f"groups must hold one key per row: {labels.size} rows, got shape {keys.shape}")
        _, codes = np.unique(keys, return_inverse=True)
        members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
        if len(members) < 2:
            raise ValueError("a group bootstrap needs at least 2 groups")
    on_a, on_b = _on_rows(metric, labels, a), _on_rows(metric, labels, b)
    draws, undefined = [], 0
    for _ in range(resamples):
        if members is None:
            rows = rng.integers(0, labels.size, labels.size)
        else:
            rows = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        da, db = on_a(rows), on_b(rows)
        if _defined(da) and _defined(db):
            draws.append(da - db)
        else:
            undefined += 1
    if len(draws) < resamples // 2:
        raise ValueError(f"the metric was undefined on {undefined} of {resamples} resamples")
    samples = np.asarray(draws, dtype=float)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return PairedDifference("bootstrap", float(value_a - value_b), float(samples.std(ddof=1)), float(low),
                            float(high), confidence, float(value_a), float(value_b), int(labels.size),
                            positives, tuple(float(s) for s in samples), undefined)


def _on_rows(metric, labels: np.ndarray, scores: np.ndarray) -> Callable[[np.ndarray], float | None]:
    """rows -> metric(labels[rows], scores[rows]); a metric with ``on_rows`` (ml_assets.ml.metrics.MetricFunction)
    precomputes what every resample shares and returns bit-identical values."""
    if hasattr(metric, "on_rows"):
        return metric.on_rows(labels, scores)
    return lambda rows: metric(labels[rows], scores[rows])


def _defined(value) -> bool:
    return value is not None and np.isfinite(value)


def _check_p_values(p_values: Sequence[float]) -> list[float]:
    values = [float(p) for p in p_values]
    bad = [p for p in values if not 0.0 <= p <= 1.0]
    if bad:
        raise ValueError(f"p-values must lie in [0, 1], got {bad[:3]}")
    return values


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (controls the family-wise error rate), in input order."""
    values = _check_p_values(p_values)
    m = len(values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=values.__getitem__)):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return adjusted


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (controls the false discovery rate), in input order."""
    values = _check_p_values(p_values)
    m = len(values)
    adjusted = [0.0] * m
    running = 1.0
    for rank, index in reversed(list(enumerate(sorted(range(m), key=values.__getitem__), start=1))):
        running = min(running, m / rank * values[index])
        adjusted[index] = running
    return adjusted


CORRECTIONS: dict[str, Callable[[Sequence[float]], list[float]]] = {
    "holm": holm, "bh": benjamini_hochberg, "none": lambda p: _check_p_values(p),
}


def adjust(p_values: Sequence[float], method: str) -> list[float]:
    """Adjusted p-values by ``method``: holm, bh (Benjamini-Hochberg) or none."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; choose from {sorted(CORRECTIONS)}")
    return CORRECTIONS[method](p_values)


# --- one model's metric with its uncertainty (live monitoring) -----------------------------------


@dataclass(frozen=True)
class MetricInterval:
    """One model's metric on some rows, with a two-sided interval at ``confidence``."""

    method: str  # "delong", "wilson", "normal" or "bootstrap"
    estimate: float
    se: float
    low: float
    high: float
    confidence: float
    n: int
    positives: int

    def as_dict(self) -> dict:
        return asdict(self)


midranks = _midranks  # public name: ml_assets.ml.cbpe ranks scores the same way


def auc_interval(y, p, confidence: float = 0.95) -> MetricInterval:
    """ROC AUC with DeLong's variance (the single-model case of ``delong_auc_difference``).

    Raises ValueError with fewer than 2 rows of a class (no variance).
    """
    labels, m = _two_class(y)
    n = labels.size - m
    if m < 2 or n < 2:
        raise ValueError(f"an AUC interval needs at least 2 positives and 2 negatives, got {m} and {n}")
    z = normal_quantile(confidence)
    scores = _scores(p, labels.size, "p")
    positive = labels == 1
    x, w = scores[positive], scores[~positive]
    tx, tw, tz = _midranks(x), _midranks(w), _midranks(np.r_[x, w])
    auc = float((tz[:m].sum() / m - (m + 1) / 2.0) / n)
    variance = np.var((tz[:m] - tx) / n, ddof=1) / m + np.var(1.0 - (tz[m:] - tw) / m, ddof=1) / n
    se = float(np.sqrt(max(variance, 0.0)))
    return MetricInterval("delong", auc, se, max(0.0, auc - z * se), min(1.0, auc + z * se), confidence,
                          int(labels.size), m)


def proportion_interval(successes: int, n: int, confidence: float = 0.95, positives: int = 0) -> MetricInterval:
    """A proportion (e.g. accuracy: correct rows / rows) with Wilson's score interval."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"a proportion needs 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z = normal_quantile(confidence)
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return MetricInterval("wilson", float(share), float(np.sqrt(share * (1 - share) / n)), float(centre - half),
                          float(centre + half), confidence, int(n), int(positives))


def mean_interval(values, confidence: float = 0.95, positives: int = 0, estimate: float | None = None) -> MetricInterval:
    """A mean of per-row values (e.g. Brier or log loss terms) with the normal (CLT) interval.

    ``estimate`` replaces the plain mean as the centre (e.g. a metric computed with its own clipping).
    """
    data = np.asarray(values, dtype=float)
    if data.ndim != 1 or data.size < 2 or not np.isfinite(data).all():
        raise ValueError(f"mean_interval needs at least 2 finite values, got shape {data.shape}")
    z = normal_quantile(confidence)
    centre = float(data.mean()) if estimate is None else float(estimate)
    se = float(data.std(ddof=1) / np.sqrt(data.size))
    return MetricInterval("normal", centre, se, centre - z * se, centre + z * se, confidence, int(data.size),
                          int(positives))


def bootstrap_interval(
    y, p, metric: Callable[[np.ndarray, np.ndarray], float | None], *, resamples: int = 200, seed: int = 13,
    confidence: float = 0.95,
) -> MetricInterval:
    """Any metric with a percentile bootstrap over rows (resamples where it is undefined are left out)."""
    labels, positives = _two_class(y)
    scores = _scores(p, labels.size, "p")
    if resamples < 10:
        raise ValueError(f"resamples must be at least 10, got {resamples}")
    normal_quantile(confidence)
    return _percentile_interval(labels, scores, positives, metric, resamples, seed, confidence,
                                lambda rng: rng.integers(0, labels.size, labels.size))


def group_bootstrap_interval(
    y, p, metric: Callable[[np.ndarray, np.ndarray], float | None], groups, *, resamples: int = 1000,
    seed: int = 13, confidence: float = 0.95,
) -> MetricInterval:
    """``bootstrap_interval`` resampling whole groups (e.g. holdout days) instead of rows.

    Keeps within-group correlation, as ``paired_bootstrap(groups=...)`` does for differences.
    """
    labels, positives = _two_class(y)
    scores = _scores(p, labels.size, "p")
    keys = np.asarray(groups)
    if keys.shape != (labels.size,):
        raise ValueError(f"groups must hold one key per row: {labels.size} rows, got shape {keys.shape}")
    if resamples < 10:
        raise ValueError(f"resamples must be at least 10, got {resamples}")
    normal_quantile(confidence)
    _, codes = np.unique(keys, return_inverse=True)
    members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    if len(members) < 2:
        raise ValueError("a group bootstrap needs at least 2 groups")
    return _percentile_interval(
        labels, scores, positives, metric, resamples, seed, confidence,
        lambda rng: np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))]))


def _percentile_interval(labels: np.ndarray, scores: np.ndarray, positives: int, metric, resamples: int,
                         seed: int, confidence: float, draw_rows) -> MetricInterval:
    """The metric on the rows and its percentile interval over `resamples` row sets from `draw_rows(rng)`
    (resamples where the metric is undefined, e.g. one class drawn, are left out)."""
    value = metric(labels, scores)
    if not _defined(value):
        raise ValueError("the metric is undefined on these rows (e.g. a single class)")
    rng = np.random.default_rng(seed)
    on_rows = _on_rows(metric, labels, scores)
    draws = []
    for _ in range(resamples):
        rows = draw_rows(rng)  # the same draws, in the same order, whatever the metric
        draw = on_rows(rows)
        if _defined(draw):
            draws.append(draw)
    if len(draws) < resamples // 2:
        raise ValueError(f"the metric was undefined on {resamples - len(draws)} of {resamples} resamples")
    samples = np.asarray(draws, dtype=float)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return MetricInterval("bootstrap", float(value), float(samples.std(ddof=1)), float(low), float(high),
                          confidence, int(labels.size), positives)


def hanley_mcneil_se(auc: float, positives: int, negatives: int) -> float:
    """Standard error of an ROC AUC known only by its value and class counts (Hanley & McNeil 1982),
    e.g. a stored holdout AUC: var = (A(1-A) + (m-1)(Q1-A^2) + (n-1)(Q2-A^2)) / (m n)."""
    if positives < 1 or negatives < 1 or not 0.0 <= auc <= 1.0:
        raise ValueError(f"hanley_mcneil_se needs an AUC in [0, 1] and both classes, got {auc}, {positives}, {negatives}")
    q1, q2 = auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / (
        positives * negatives)
    return float(np.sqrt(max(variance, 0.0)))
