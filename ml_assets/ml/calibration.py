"""Post-hoc calibration of a trained model's probabilities, fitted on rows it did not train on.

A model trained to rank well is not necessarily calibrated: on the bundled flights data neither
candidate met an ECE bar of 0.1 after training. A calibrator maps the model's probability p to
a calibrated one, and is fitted on a *calibration split*: ``days`` distinct days of the training
window held out from fitting the model (never the gate's holdout), either spread evenly over the
window (``spread``, the default) or its last days (``last``). On the flights data a day's delay rate
swings between about 0.1 and 0.45 from week to week, so the last few days often carry a rate far
from the window's, and a calibrator fitted on them moved every holdout week by it (mean holdout
ECE 0.133 against 0.105 uncalibrated for HistGradientBoosting over six monthly cycles);
spread days carry the window's mix (bench/bench_calibration.py). Platt is the default: it keeps
the model's ranking exactly (ROC AUC unchanged), while isotonic's steps tie scores.

* ``isotonic``: the non-decreasing step function of p minimizing squared error (pool adjacent
  violators), applied as piecewise-linear interpolation between its thresholds and clipped to
  their range, exactly as ``sklearn.isotonic.IsotonicRegression(out_of_bounds="clip")``.
* ``platt``: ``sigmoid(a * logit(p) + b)`` fitted by maximum likelihood (plain 0/1 targets, no
  penalty: a LogisticRegression on the single feature logit(p)); p is clipped to
  [1e-7, 1 - 1e-7] first, as a float32 probability cannot carry more.
* ``none``: no calibration (the model's own probabilities).

The same parameters run as numpy (:meth:`Calibrator.apply`, the sklearn artifact) and as
TensorFlow ops inside the exported Keras graph (:func:`tf_apply`), both in float64, so TF Serving
and batch scoring return the same calibrated probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ISOTONIC, PLATT, NONE = "isotonic", "platt", "none"
METHODS = (ISOTONIC, PLATT, NONE)
SPLITS = ("spread", "last")
EPSILON = 1e-7


@dataclass(frozen=True)
class CalibrationParams:
    """How a candidate is calibrated: ``method`` and the trailing training ``days`` it is fitted on."""

    method: str = PLATT
    days: int = 7
    split: str = "spread"  # "spread": evenly over the window; "last": its last days
    refit: bool = False  # after fitting the calibrator, refit the model on every day (twice the training time)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method {self.method!r} is unknown; choose from {list(METHODS)}")
        if self.split not in SPLITS:
            raise ValueError(f"calibration split {self.split!r} is unknown; choose from {list(SPLITS)}")
        if isinstance(self.days, bool) or not isinstance(self.days, int) or self.days < 1:
            raise ValueError(f"calibration days must be a positive integer, got {self.days!r}")

    @property
    def active(self) -> bool:
        return self.method != NONE

    @classmethod
    def from_spec(cls, training: Any) -> CalibrationParams:
        """From a spec's ``training`` section (calibration, calibration_days, calibration_split)."""
        return cls(method=training.calibration, days=training.calibration_days, split=training.calibration_split,
                   refit=training.calibration_refit)


@dataclass(frozen=True)
class Calibrator:
    """A fitted map p -> calibrated p. ``x``/``y``: isotonic thresholds; ``a``/``b``: Platt's line."""

    method: str
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 1.0
    b: float = 0.0
    fitted_on: dict = field(default_factory=dict, compare=False)  # rows, days, ECE before/after

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of ``p`` (any shape), float64."""
        q = np.asarray(p, dtype=np.float64)
        if self.method == ISOTONIC:
            return np.interp(q, np.asarray(self.x), np.asarray(self.y))
        if self.method == PLATT:
            return _sigmoid(self.a * _logit(q) + self.b)
        return q

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"method": self.method, **self.fitted_on}
        if self.method == ISOTONIC:
            out["thresholds"] = len(self.x)
        elif self.method == PLATT:
            out.update(a=self.a, b=self.b)
        return out


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, EPSILON, 1.0 - EPSILON)
    return np.log(clipped) - np.log1p(-clipped)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _checked(p, y) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(p, dtype=np.float64), np.asarray(y)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"calibration needs one probability per label: shapes {scores.shape} and {labels.shape}")
    if not np.isfinite(scores).all() or (scores < 0).any() or (scores > 1).any():
        raise ValueError("calibration needs probabilities in [0, 1] (no NaN)")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("calibration labels must be 0 or 1")
    if np.unique(labels).size < 2:
        raise ValueError(f"calibration needs both classes; its {labels.size} rows are all one class")
    return scores, labels.astype(np.float64)


def _pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted non-decreasing least-squares fit of ``values`` (already in x order)."""
    means: list[float] = []
    masses: list[float] = []
    sizes: list[int] = []
    for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
        means.append(value)
        masses.append(weight)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            mass = masses[-2] + masses[-1]
            means[-2] = (means[-2] * masses[-2] + means[-1] * masses[-1]) / mass
            masses[-2] = mass
            sizes[-2] += sizes[-1]
            del means[-1], masses[-1], sizes[-1]
    return np.repeat(means, sizes)


def fit_isotonic(p, y) -> Calibrator:
    scores, labels = _checked(p, y)
    # Rows with the same score are one point (their mean label, weighted by their count).
    xs, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=labels) / counts
    fitted = _pool_adjacent_violators(means, counts.astype(np.float64))
    # Keep each constant run's two ends only: interpolation between them is unchanged.
    keep = np.ones(xs.size, dtype=bool)
    if xs.size > 2:
        keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
    xs, fitted = xs[keep], fitted[keep]
    if xs.size == 1:  # one distinct score: a constant map
        xs, fitted = np.array([0.0, 1.0]), np.repeat(fitted, 2)
    return Calibrator(ISOTONIC, x=tuple(xs.tolist()), y=tuple(fitted.tolist()))


def fit_platt(p, y, *, max_iterations: int = 100) -> Calibrator:
    """Maximum-likelihood (a, b) of sigmoid(a * logit(p) + b), by Newton steps with step halving."""
    scores, labels = _checked(p, y)
    design = np.column_stack([_logit(scores), np.ones_like(scores)])
    beta = np.array([1.0, 0.0])

    def loss(coefficients: np.ndarray) -> float:
        z = design @ coefficients
        # log(1 + e^z) - y z, computed stably
        return float(np.mean(np.logaddexp(0.0, z) - labels * z))

    current = loss(beta)
    for _ in range(max_iterations):
        mu = _sigmoid(design @ beta)
        gradient = design.T @ (mu - labels) / labels.size
        hessian = (design * (mu * (1.0 - mu))[:, None]).T @ design / labels.size
        step = np.linalg.solve(hessian + 1e-12 * np.eye(2), gradient)
        scale = 1.0
        while scale > 1e-8 and loss(beta - scale * step) > current:
            scale /= 2.0
        beta = beta - scale * step
        previous, current = current, loss(beta)
        if previous - current < 1e-15 and np.max(np.abs(gradient)) < 1e-10:
            break
    return Calibrator(PLATT, a=float(beta[0]), b=float(beta[1]))


def fit_calibrator(p, y, method: str) -> Calibrator:
    """A calibrator of ``method`` fitted on probabilities ``p`` and their labels ``y``."""
    if method == ISOTONIC:
        return fit_isotonic(p, y)
    if method == PLATT:
        return fit_platt(p, y)
    if method == NONE:
        return Calibrator(NONE)
    raise ValueError(f"calibration method {method!r} is unknown; choose from {list(METHODS)}")


def expected_calibration_error(y, p) -> float:
    """ECE with the evaluation module's definition (ten equal-width bins)."""
    from ml_assets.ml.evaluation import _ece

    return _ece(np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64))


def calibration_split(days, n_days: int, split: str = "last") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(rows to fit the model on, rows to fit the calibrator on, the calibration days).

    The calibration rows are those of ``n_days`` distinct days of ``days``: the last ones
    (``split="last"``) or ones spread evenly from the first day to the last (``"spread"``). At
    most a quarter of the days are held out (a short window early in a data set's life keeps
    three quarters of its days for fitting); fewer than 4 days cannot be split.
    """
    keys = np.asarray([str(d) for d in np.asarray(days, dtype=object)])
    distinct = np.unique(keys)
    if distinct.size < 4:
        raise ValueError(
            f"calibration holds out training days, but the training rows span only {distinct.size} day(s) "
            f"(at least 4 needed): train on more days or set training.calibration to none")
    n_days = min(n_days, distinct.size // 4)
    if split == "last":
        held = distinct[-n_days:]
    elif split == "spread":
        held = distinct[np.unique(np.round(np.linspace(0, distinct.size - 1, n_days)).astype(int))]
    else:
        raise ValueError(f"calibration split {split!r} is unknown; choose from {list(SPLITS)}")
    calibrate = np.isin(keys, held)
    return np.flatnonzero(~calibrate), np.flatnonzero(calibrate), [str(d) for d in held]


def calibrated_fit(frame, y, params: CalibrationParams, days, train: Callable[[Any, np.ndarray], Any]):
    """Train on all but the calibration days, fit the calibrator on those; (model, calibrator).

    ``train(frame, y)`` returns a model with ``predict_proba``; ``days`` gives each row's day
    (default: the frame's ``date`` column). With ``params.refit`` the returned model is then
    trained again on every row (no training data lost; the calibrator, fitted for the model
    trained without its days, is applied to it, as sklearn's CalibratedClassifierCV does with
    ensemble=False).
    """
    labels = np.asarray(y)
    if days is None:
        if "date" not in getattr(frame, "columns", ()):
            raise ValueError("calibration on held-out training days needs each row's day: pass days= "
                             "or give the frame a 'date' column")
        days = frame["date"].to_numpy()
    if len(days) != len(labels):
        raise ValueError(f"days must hold one day per row: {len(labels)} rows, got {len(days)}")
    fit_rows, calibration_rows, held = calibration_split(days, params.days, params.split)
    model = train(frame.iloc[fit_rows], labels[fit_rows])
    raw = np.asarray(model.predict_proba(frame.iloc[calibration_rows]), dtype=np.float64)
    try:
        calibrator = fit_calibrator(raw, labels[calibration_rows], params.method)
    except ValueError as exc:
        raise ValueError(f"calibration days {held[0]}..{held[-1]}: {exc}") from None
    target = labels[calibration_rows]
    info = {"rows": int(calibration_rows.size), "positives": int(target.sum()), "days": held,
            "ece_before": expected_calibration_error(target, raw),
            "ece_after_in_sample": expected_calibration_error(target, calibrator.apply(raw)),
            "refit": params.refit}
    if params.refit:
        model = train(frame, labels)
    return model, Calibrator(calibrator.method, calibrator.x, calibrator.y, calibrator.a, calibrator.b, info)


def tf_apply(calibrator: Calibrator, p):
    """``calibrator.apply`` as TensorFlow ops on a float32 probability tensor (computed in float64)."""
    import tensorflow as tf

    if calibrator.method == NONE:
        return p
    q = tf.cast(p, tf.float64)
    if calibrator.method == PLATT:
        clipped = tf.clip_by_value(q, EPSILON, 1.0 - EPSILON)
        logit = tf.math.log(clipped) - tf.math.log1p(-clipped)
        out = tf.math.sigmoid(calibrator.a * logit + calibrator.b)
    else:
        xs = tf.constant(np.asarray(calibrator.x, dtype=np.float64))
        ys = tf.constant(np.asarray(calibrator.y, dtype=np.float64))
        last = len(calibrator.x) - 1
        clipped = tf.clip_by_value(q, calibrator.x[0], calibrator.x[-1])
        # The segment [x[i-1], x[i]] holding each value, as np.interp picks it.
        upper = tf.clip_by_value(tf.searchsorted(xs, clipped, side="right"), 1, last)
        x0, x1 = tf.gather(xs, upper - 1), tf.gather(xs, upper)
        y0, y1 = tf.gather(ys, upper - 1), tf.gather(ys, upper)
        out = y0 + (clipped - x0) * (y1 - y0) / (x1 - x0)
    return tf.cast(out, p.dtype)
