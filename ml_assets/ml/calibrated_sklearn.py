"""The calibrated classifier step of a saved scikit-learn pipeline (a separate module: it imports sklearn).

``Pipeline([("preprocess", ...), ("classifier", CalibratedClassifier(fitted_hgb, ...))])``: the
wrapped classifier was fitted on the training rows, the calibration parameters on the held-out
calibration days (ml_assets.ml.calibration); predict_proba returns calibrated probabilities, so
batch scoring of the saved pipeline needs nothing else. Its attributes are plain strings, floats
and arrays, so skops stores it without trusting anything beyond this class.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ml_assets.ml.calibration import Calibrator


class CalibratedClassifier(ClassifierMixin, BaseEstimator):
    """A fitted binary classifier followed by a fitted calibrator (prefit: ``fit`` refuses)."""

    def __init__(self, estimator=None, method: str = "none", thresholds=None, values=None, a: float = 1.0,
                 b: float = 0.0) -> None:
        self.estimator = estimator
        self.method = method
        self.thresholds = thresholds
        self.values = values
        self.a = a
        self.b = b

    @classmethod
    def wrap(cls, estimator, calibrator: Calibrator) -> CalibratedClassifier:
        return cls(estimator, calibrator.method, np.asarray(calibrator.x, dtype=np.float64),
                   np.asarray(calibrator.y, dtype=np.float64), float(calibrator.a), float(calibrator.b))

    @property
    def calibrator(self) -> Calibrator:
        return Calibrator(self.method, tuple(np.asarray(self.thresholds if self.thresholds is not None else ()).tolist()),
                          tuple(np.asarray(self.values if self.values is not None else ()).tolist()), self.a, self.b)

    @property
    def classes_(self) -> np.ndarray:
        return self.estimator.classes_

    def __sklearn_is_fitted__(self) -> bool:
        return self.estimator is not None

    def fit(self, X, y=None):
        raise TypeError("CalibratedClassifier wraps an already fitted classifier and calibrator; it is not refitted")

    def predict_proba(self, X) -> np.ndarray:
        raw = self.estimator.predict_proba(X)[:, 1]
        calibrated = self.calibrator.apply(raw)
        return np.column_stack([1.0 - calibrated, calibrated])

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]
