"""Performance estimated before labels arrive (confidence-based performance estimation, NannyML's CBPE).

If the model's probabilities are calibrated (P(y=1 | p) = p: the candidates carry a fitted
isotonic/Platt calibrator, ml_assets.ml.calibration), each row's label is a Bernoulli(p) draw, so
the metrics the labels WILL give can be estimated from the probabilities alone:

- expected accuracy at threshold t: mean over rows of p (predicted 1) or 1 - p (predicted 0);
- expected ROC AUC: the expected number of correctly ordered (positive, negative) pairs over the
  expected number of pairs, sum_ij p_i (1 - p_j) [s_i > s_j] / sum_{i != j} p_i (1 - p_j) (ties
  count one half), in O(n log n) from ranks and cumulative sums;
- the band: the realised metric still varies around its expectation because labels are random:
  ``samples`` label sets are drawn from the probabilities (Monte Carlo, fixed seed) and the band is
  the central ``confidence`` interval of the metric over them.

The estimate sees covariate shift (the model meets rows it is less sure about) but NOT concept
drift (the same rows now have other labels) nor a miscalibrated model: realised performance, once
labels land, remains the judge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ml_assets.ml.stats import midranks, normal_quantile

ESTIMABLE = ("accuracy", "roc_auc")


@dataclass(frozen=True)
class Estimate:
    """Expected metrics of one batch of probabilities, each with its band."""

    n: int
    expected_positives: float
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    roc_auc: float | None  # None: fewer than 2 rows (no pair to order)
    roc_auc_low: float | None
    roc_auc_high: float | None
    confidence: float
    samples: int
    threshold: float

    def value(self, metric: str) -> tuple[float | None, float | None, float | None]:
        """(estimate, band low, band high) of ``metric``."""
        if metric not in ESTIMABLE:
            raise ValueError(f"CBPE estimates {list(ESTIMABLE)}, not {metric!r}")
        return getattr(self, metric), getattr(self, f"{metric}_low"), getattr(self, f"{metric}_high")

    def as_dict(self) -> dict:
        return asdict(self)


def _probabilities(p) -> np.ndarray:
    q = np.asarray(p, dtype=float)
    if q.ndim != 1 or q.size == 0:
        raise ValueError(f"probabilities must be a non-empty 1-D array, got shape {q.shape}")
    if not np.isfinite(q).all() or (q < 0).any() or (q > 1).any():
        raise ValueError("probabilities must be finite and lie in [0, 1]")
    return q


def expected_accuracy(p, threshold: float = 0.5) -> float:
    q = _probabilities(p)
    return float(np.mean(np.where(q >= threshold, q, 1.0 - q)))


def expected_roc_auc(p) -> float | None:
    """Expected correctly ordered pairs / expected pairs, scores = the probabilities themselves."""
    q = _probabilities(p)
    if q.size < 2:
        return None
    order = np.argsort(q, kind="mergesort")
    s, pos = q[order], q[order]
    neg = 1.0 - pos
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    ends = np.r_[starts[1:], s.size]
    group_neg = np.add.reduceat(neg, starts)  # expected negatives per distinct score
    below = np.r_[0.0, np.cumsum(group_neg)[:-1]]  # expected negatives strictly below each group
    sizes = ends - starts
    # Within a tie group a pair (i, j), i != j, counts one half.
    per_row_tied = np.repeat(group_neg, sizes) - neg
    correct = np.sum(pos * (np.repeat(below, sizes) + 0.5 * per_row_tied))
    pairs = pos.sum() * neg.sum() - np.sum(pos * neg)
    return float(correct / pairs) if pairs > 0 else None


def estimate(p, *, threshold: float = 0.5, samples: int = 200, confidence: float = 0.95,
             seed: int = 7, chunk_rows: int = 4_000_000) -> Estimate:
    """Expected accuracy and ROC AUC of calibrated probabilities ``p``, with Monte-Carlo bands."""
    q = _probabilities(p)
    if samples < 20:
        raise ValueError(f"samples must be at least 20 for a band, got {samples}")
    normal_quantile(confidence)  # validates
    rng = np.random.default_rng(seed)
    ranks = midranks(q)
    predicted = q >= threshold
    accuracies, aucs = [], []
    per_chunk = max(1, chunk_rows // q.size)  # bounds memory: samples x rows booleans at a time
    for start in range(0, samples, per_chunk):
        labels = rng.random((min(per_chunk, samples - start), q.size)) < q
        m = labels.sum(axis=1)
        accuracies.append((labels == predicted).mean(axis=1))
        rank_sum = labels.astype(float) @ ranks
        defined = (m > 0) & (m < q.size)
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = (rank_sum - m * (m + 1) / 2.0) / (m * (q.size - m))
        aucs.append(auc[defined])
    tail = (1.0 - confidence) / 2.0
    acc_low, acc_high = np.quantile(np.concatenate(accuracies), [tail, 1.0 - tail])
    auc_draws = np.concatenate(aucs)
    expected = expected_roc_auc(q)
    if expected is None or auc_draws.size < samples // 2:
        auc_low = auc_high = None
        expected = None if auc_draws.size < samples // 2 else expected
    else:
        auc_low, auc_high = (float(v) for v in np.quantile(auc_draws, [tail, 1.0 - tail]))
    return Estimate(n=int(q.size), expected_positives=float(q.sum()), accuracy=expected_accuracy(q, threshold),
                    accuracy_low=float(acc_low), accuracy_high=float(acc_high), roc_auc=expected,
                    roc_auc_low=auc_low, roc_auc_high=auc_high, confidence=confidence, samples=samples,
                    threshold=threshold)
