"""The candidate models: a Keras MLP and a scikit-learn gradient-boosted tree pipeline.

Each model carries its own preprocessing, so a saved artifact takes the *raw* feature values
named in the spec (numbers, strings, nulls) and nothing computed outside it: what training saw
is what serving runs, with no separate transform to keep in step.

* ``keras``: the preprocessing is in the graph (missing numerics filled with the training mean
  plus a missing-indicator, a Normalization layer, a StringLookup with one out-of-vocabulary
  bucket and an embedding per categorical). The artifact is a TensorFlow SavedModel that
  TensorFlow Serving loads as is: ``saved_model.pb`` and ``variables/`` at the directory root,
  a ``serving_default`` signature taking one tensor of shape ``[None]`` per feature (float32
  for numeric, string for categorical) and returning one output, ``probability`` (float32,
  shape ``[None]``). :func:`load_model` runs exactly that signature, as TF Serving would.
* ``sklearn``: a Pipeline of a ColumnTransformer (numerics passed through, NaN included, since
  HistGradientBoosting handles missing values; categoricals ordinal-encoded with unknown and
  missing values mapped to NaN) and a HistGradientBoostingClassifier treating the encoded
  columns as categorical. The artifact is ``model.skops`` (skops format, never pickle); loading
  accepts only the types in :data:`SKOPS_ALLOWED_TYPES` and refuses a file needing any other.

TensorFlow is imported inside the functions that need it, so importing this module is cheap.

Both may carry a post-hoc calibration fitted on held-out training days (ml_assets.ml.calibration),
inside the artifact: TF ops in the Keras graph, a CalibratedClassifier step in the sklearn Pipeline.

The code lives in model_inputs (input rules), models_keras, models_sklearn and calibration; this
module keeps the public names importable from here and saves / loads artifacts of either flavor.
"""

from __future__ import annotations

from pathlib import Path

from ml_assets.ml.calibration import CalibrationParams, Calibrator
from ml_assets.ml.model_inputs import (
    MISSING_CATEGORY,
    FeatureColumns,
    InvalidRecordsError,
    TabularModel,
    records_to_frame,
)
from ml_assets.ml.models_keras import (
    KERAS,
    OUTPUT_NAME,
    SERVING_SIGNATURE,
    KerasParams,
    KerasTabularModel,
    _load_keras,
    _save_keras,
    train_keras,
)
from ml_assets.ml.models_sklearn import (
    SKLEARN,
    SKOPS_ALLOWED_TYPES,
    SKOPS_FILE,
    SklearnParams,
    SklearnTabularModel,
    UntrustedArtifactError,
    _load_sklearn,
    train_sklearn,
)

__all__ = [
    "FLAVORS", "KERAS", "MISSING_CATEGORY", "OUTPUT_NAME", "SERVING_SIGNATURE", "SKLEARN", "SKOPS_ALLOWED_TYPES",
    "SKOPS_FILE", "CalibrationParams", "Calibrator", "FeatureColumns", "InvalidRecordsError", "KerasParams",
    "KerasTabularModel", "SklearnParams", "SklearnTabularModel", "TabularModel", "UntrustedArtifactError",
    "load_model", "records_to_frame", "save_model", "train_keras", "train_sklearn",
]

FLAVORS = (KERAS, SKLEARN)


def save_model(model: TabularModel, directory: Path) -> list[Path]:
    """Write the model's artifact files into `directory` (created if needed); return them.

    keras: a SavedModel (saved_model.pb, variables/, ...) at the directory root, loadable by
    TensorFlow Serving as a model version directory. sklearn: model.skops.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if model.flavor == KERAS:
        _save_keras(model, directory)  # type: ignore[arg-type]
        return sorted(p for p in directory.rglob("*") if p.is_file())
    if model.flavor == SKLEARN:
        import skops.io as sio

        path = directory / SKOPS_FILE
        sio.dump(model.pipeline, path)  # type: ignore[attr-defined]
        return [path]
    raise ValueError(f"unknown model flavor {model.flavor!r}; expected one of {FLAVORS}")


def load_model(directory: Path, flavor: str, columns: FeatureColumns) -> TabularModel:
    """Load an artifact written by save_model; checks it takes exactly `columns`."""
    directory = Path(directory)
    if flavor == KERAS:
        return _load_keras(directory, columns)
    if flavor == SKLEARN:
        return _load_sklearn(directory, columns)
    raise ValueError(f"unknown model flavor {flavor!r}; expected one of {FLAVORS}")
