"""The scikit-learn candidate: encoders + HistGradientBoostingClassifier in one Pipeline, saved with skops.

A Pipeline of a ColumnTransformer (numerics passed through, NaN included, since
HistGradientBoosting handles missing values; categoricals ordinal-encoded with unknown and
missing values mapped to NaN) and a HistGradientBoostingClassifier treating the encoded columns
as categorical; when calibrated, the classifier step is a CalibratedClassifier wrapping it
(ml_assets.ml.calibrated_sklearn). The artifact is ``model.skops`` (skops format, never
pickle); loading accepts only the types in :data:`SKOPS_ALLOWED_TYPES`.
"""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ml_assets.ml.calibration import CalibrationParams, Calibrator, calibrated_fit
from ml_assets.ml.model_inputs import FeatureColumns, _feature_columns, _labels, records_to_frame

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

SKLEARN = "sklearn"
SKOPS_FILE = "model.skops"

# Every type a saved pipeline of this module contains (as written by skops.io.dump for what
# train_sklearn builds, with or without early stopping), plus inert numpy scalar types. Loading
# asks skops which types of a file it does not trust by default and refuses the file if any of
# them is not listed here; it never passes on what the file itself asks to be trusted.
SKOPS_ALLOWED_TYPES: tuple[str, ...] = (
    "builtins.slice",
    "ml_assets.ml.calibrated_sklearn.CalibratedClassifier",  # the calibration step (plain numbers inside)
    "functools.partial",  # HGB's internal FunctionTransformer(partial(check_array, ...))
    "numpy.bool_",
    "numpy.dtype",
    "numpy.float32",
    "numpy.float64",
    "numpy.int32",
    "numpy.int64",
    "numpy.ndarray",
    "numpy.random._generator.Generator",
    "numpy.uint64",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._encoders.OrdinalEncoder",
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.utils.validation.check_array",
)


class UntrustedArtifactError(ValueError):
    """A saved sklearn artifact needs types outside SKOPS_ALLOWED_TYPES; it is not loaded."""



@dataclass(frozen=True)
class SklearnParams:
    """Hyper-parameters of HistGradientBoostingClassifier (same names and meaning)."""

    max_iter: int = 200
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    l2_regularization: float = 0.0
    early_stopping: bool = True


_MAX_BINS = 255
_THREADS_LOCK = threading.Lock()
_thread_controller: Any = None


@contextlib.contextmanager
def _single_threaded():
    """Run OpenMP single-threaded, for fitting and predicting alike.

    HistGradientBoosting parallelizes with OpenMP, whose spinning barriers collapse when the
    cores are busy with other work (the usual case on a 2-core box running Dagster, Spark and
    serving): fitting 25k rows took ~18 s with 2 threads there against ~1 s with one, and a
    one-row prediction woke the pool once per tree. The limit is process-global, so the lock
    keeps concurrent callers from interleaving its save and restore (sklearn calls serialize).
    """
    global _thread_controller
    from threadpoolctl import ThreadpoolController

    with _THREADS_LOCK:
        if _thread_controller is None:
            _thread_controller = ThreadpoolController()  # after sklearn loaded its OpenMP runtime
        with _thread_controller.limit(limits=1, user_api="openmp"):
            yield


class SklearnTabularModel:
    """A fitted Pipeline (ColumnTransformer + HistGradientBoostingClassifier) on raw features.

    `pipeline` is the artifact and takes a frame of raw features. predict_proba computes the
    same encoding without the ColumnTransformer's pandas overhead (a dict lookup per
    categorical value into the fitted encoder's categories) and feeds the classifier directly;
    the tests check it equals `pipeline.predict_proba` exactly. When calibrated, the classifier
    step is a CalibratedClassifier, so both return calibrated probabilities.
    """

    flavor = SKLEARN

    def __init__(self, columns: FeatureColumns, pipeline: Pipeline, calibration_info: dict | None = None) -> None:
        self.columns = columns
        self.pipeline = pipeline
        self._calibration_info = calibration_info  # with where it was fitted (not in the artifact)
        preprocess = pipeline.named_steps["preprocess"]
        fitted = {name: list(cols) for name, _, cols in preprocess.transformers_ if name != "remainder"}
        expected = {"numeric": columns.numeric, "categorical": columns.categorical}
        if fitted != {kind: names for kind, names in expected.items() if names}:
            raise ValueError(f"the pipeline was trained on features {fitted}, not {expected}")
        categories: list[np.ndarray] = []
        if columns.categorical:
            categories = list(preprocess.named_transformers_["categorical"].categories_)
        self._codes = [{value: float(code) for code, value in enumerate(values)} for values in categories]
        self._classifier = pipeline.named_steps["classifier"]

    @property
    def calibrator(self) -> Calibrator | None:
        return getattr(self._classifier, "calibrator", None)

    def calibration_info(self) -> dict:
        """How the probabilities were calibrated (for the manifest); {} when not calibrated."""
        if self._calibration_info is not None:
            return self._calibration_info
        return self.calibrator.as_dict() if self.calibrator is not None else {}

    def predict_uncalibrated(self, records: list[dict] | pd.DataFrame) -> np.ndarray:
        """The classifier's own probabilities, before calibration."""
        classifier = getattr(self._classifier, "estimator", self._classifier)
        matrix = self._matrix(_feature_columns(records, self.columns))
        if not len(matrix):
            return np.empty(0, dtype=np.float64)
        with _single_threaded():
            return classifier.predict_proba(matrix)[:, 1].astype(np.float64)

    def _matrix(self, values: dict[str, np.ndarray]) -> np.ndarray:
        numeric, categorical = self.columns.numeric, self.columns.categorical
        rows = len(values[self.columns.names[0]])
        matrix = np.empty((rows, len(numeric) + len(categorical)), dtype=np.float64)
        for j, name in enumerate(numeric):
            matrix[:, j] = values[name]
        nan = math.nan
        for j, (name, codes) in enumerate(zip(categorical, self._codes, strict=True)):
            get = codes.get
            matrix[:, len(numeric) + j] = [get(value, nan) for value in values[name]]
        return matrix

    def predict_proba(self, records: list[dict] | pd.DataFrame) -> np.ndarray:
        values = _feature_columns(records, self.columns)
        matrix = self._matrix(values)
        if not len(matrix):
            return np.empty(0, dtype=np.float64)
        with _single_threaded():
            return self._classifier.predict_proba(matrix)[:, 1].astype(np.float64)


def _categories(values: np.ndarray) -> list[str]:
    """The training values the encoder knows, sorted: the most frequent max_bins - 1 of them
    (HGB needs category codes below max_bins); the rest are treated as unseen (missing)."""
    counts = pd.Series(values).value_counts(sort=False)
    if len(counts) > _MAX_BINS - 1:
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return sorted(value for value, _ in ordered[: _MAX_BINS - 1])
    return sorted(counts.index)


def _build_pipeline(columns: FeatureColumns, frame: pd.DataFrame, params: SklearnParams,
                    seed: int) -> Pipeline:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    transformers = []
    if columns.numeric:
        transformers.append(("numeric", "passthrough", list(columns.numeric)))
    if columns.categorical:
        # Unknown and missing categories become NaN, which the trees treat as missing.
        encoder = OrdinalEncoder(
            categories=[_categories(frame[name].to_numpy()) for name in columns.categorical],
            handle_unknown="use_encoded_value", unknown_value=np.nan,
            encoded_missing_value=np.nan, dtype=np.float64)
        transformers.append(("categorical", encoder, list(columns.categorical)))
    preprocess = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    categorical_mask = [False] * len(columns.numeric) + [True] * len(columns.categorical)
    classifier = HistGradientBoostingClassifier(
        max_iter=params.max_iter, learning_rate=params.learning_rate,
        max_leaf_nodes=params.max_leaf_nodes, l2_regularization=params.l2_regularization,
        early_stopping=params.early_stopping, categorical_features=categorical_mask,
        max_bins=_MAX_BINS, random_state=seed)
    return Pipeline([("preprocess", preprocess), ("classifier", classifier)])


def train_sklearn(frame: pd.DataFrame, y: np.ndarray, columns: FeatureColumns, params: SklearnParams,
                  seed: int, *, calibration: CalibrationParams | None = None, days=None) -> SklearnTabularModel:
    """Fit the pipeline on raw feature columns of `frame` (extra columns ignored); seeded.

    With an active ``calibration``, the pipeline fits on all but ``calibration.days`` held-out
    days (``days``: each row's day, default the frame's ``date`` column) and its classifier step
    becomes a CalibratedClassifier holding the calibrator fitted on those days.
    """
    if calibration is None or not calibration.active:
        return _train_sklearn(frame, y, columns, params, seed)
    from sklearn.pipeline import Pipeline

    from ml_assets.ml.calibrated_sklearn import CalibratedClassifier

    model, calibrator = calibrated_fit(frame, y, calibration, days,
                                       lambda rows, labels: _train_sklearn(rows, labels, columns, params, seed))
    steps = model.pipeline.steps
    pipeline = Pipeline([steps[0], ("classifier", CalibratedClassifier.wrap(steps[1][1], calibrator))])
    return SklearnTabularModel(columns, pipeline, calibrator.as_dict())


def _train_sklearn(frame: pd.DataFrame, y: np.ndarray, columns: FeatureColumns, params: SklearnParams,
                   seed: int) -> SklearnTabularModel:
    features = records_to_frame(frame, columns).reset_index(drop=True)
    labels = _labels(y, len(features))
    pipeline = _build_pipeline(columns, features, params, seed)
    with _single_threaded():
        pipeline.fit(features, labels)
    return SklearnTabularModel(columns, pipeline)


def _load_sklearn(directory: Path, columns: FeatureColumns) -> SklearnTabularModel:
    import skops.io as sio

    path = directory / SKOPS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {SKOPS_FILE} in {directory}")
    data = path.read_bytes()  # read once: what is audited is what is loaded
    needed = sio.get_untrusted_types(data=data)
    refused = sorted(set(needed) - set(SKOPS_ALLOWED_TYPES))
    if refused:
        raise UntrustedArtifactError(
            f"{path} needs types outside the allow-list, so it is not loaded: {refused}")
    pipeline = sio.loads(data, trusted=needed)
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline):
        raise UntrustedArtifactError(f"{path} holds a {type(pipeline).__name__}, not a Pipeline")
    return SklearnTabularModel(columns, pipeline)

