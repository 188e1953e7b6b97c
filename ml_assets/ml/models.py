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
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

KERAS, SKLEARN = "keras", "sklearn"
FLAVORS = (KERAS, SKLEARN)
SERVING_SIGNATURE = "serving_default"
OUTPUT_NAME = "probability"
SKOPS_FILE = "model.skops"
MISSING_CATEGORY = ""
_UNSEEN = "\x00unseen"  # stands in for a category not in the vocabulary while training

# Every type a saved pipeline of this module contains (as written by skops.io.dump for what
# train_sklearn builds, with or without early stopping), plus inert numpy scalar types. Loading
# asks skops which types of a file it does not trust by default and refuses the file if any of
# them is not listed here; it never passes on what the file itself asks to be trusted.
SKOPS_ALLOWED_TYPES: tuple[str, ...] = (
    "builtins.slice",
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


class InvalidRecordsError(ValueError):
    """Records a model cannot score; the message names the record index, the field and the problem."""


class UntrustedArtifactError(ValueError):
    """A saved sklearn artifact needs types outside SKOPS_ALLOWED_TYPES; it is not loaded."""


@dataclass(frozen=True)
class FeatureColumns:
    """The feature names a model reads, in order: numeric first, then categorical."""

    numeric: list[str]
    categorical: list[str]

    def __post_init__(self) -> None:
        names = [*self.numeric, *self.categorical]
        if not names:
            raise ValueError("a model needs at least one feature column")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"feature columns listed more than once: {duplicates}")

    @classmethod
    def from_spec(cls, spec: Any) -> FeatureColumns:
        return cls(numeric=list(spec.features.numeric_names),
                   categorical=list(spec.features.categorical_names))

    @property
    def names(self) -> list[str]:
        return [*self.numeric, *self.categorical]


# ---------------------------------------------------------------------------------------------
# Raw records -> validated columns


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(index: int, name: str, problem: str) -> InvalidRecordsError:
    return InvalidRecordsError(f"record {index}: feature {name!r} {problem}")


def _numeric_value(value: Any, index: int, name: str) -> float:
    """One raw numeric value as a float; None and NaN are missing (NaN)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return math.nan
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise _bad(index, name, f"must be a number or null, got {type(value).__name__} {_show(value)}")
    try:
        number = float(value)
    except (OverflowError, ValueError):
        raise _bad(index, name, f"is not representable as a float: {_show(value)}") from None
    if math.isinf(number):
        raise _bad(index, name, f"must be finite, got {_show(value)}")
    return number


def _categorical_value(value: Any, index: int, name: str) -> str:
    """One raw categorical value as a string; None and NaN are missing ("")."""
    if isinstance(value, str):
        return value
    if value is None or value is pd.NA:
        return MISSING_CATEGORY
    if isinstance(value, float | np.floating) and math.isnan(value):
        return MISSING_CATEGORY
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return str(int(value))
    raise _bad(index, name, f"must be a string, an integer or null, got {type(value).__name__} {_show(value)}")


def _check_finite(name: str, values: np.ndarray) -> None:
    infinite = np.isinf(values)
    if infinite.any():
        index = int(np.argmax(infinite))
        raise _bad(index, name, f"must be finite, got {values[index]!r}")


def _columns_from_records(records: list[dict], columns: FeatureColumns) -> dict[str, np.ndarray]:
    """Row-wise validation for a list of mappings (the serving path: one to a few hundred rows)."""
    n = len(records)
    numeric = {name: np.empty(n, dtype=np.float64) for name in columns.numeric}
    categorical = {name: np.empty(n, dtype=object) for name in columns.categorical}
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise InvalidRecordsError(
                f"record {index}: expected an object mapping feature names to values, "
                f"got {type(record).__name__}")
        for name, out in numeric.items():
            try:
                value = record[name]
            except KeyError:
                raise InvalidRecordsError(f"record {index}: missing feature {name!r}") from None
            kind = type(value)
            if kind is float and not math.isinf(value):
                out[index] = value
            else:
                out[index] = _numeric_value(value, index, name)
        for name, out in categorical.items():
            try:
                value = record[name]
            except KeyError:
                raise InvalidRecordsError(f"record {index}: missing feature {name!r}") from None
            out[index] = value if type(value) is str else _categorical_value(value, index, name)
    return {**numeric, **categorical}


def _numeric_column(name: str, series: pd.Series) -> np.ndarray:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise _bad(0, name, f"must be a number or null, got a boolean column ({dtype})")
    if pd.api.types.is_numeric_dtype(dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        raw = series.to_numpy(dtype=object)
        values = np.fromiter((_numeric_value(v, i, name) for i, v in enumerate(raw)),
                             dtype=np.float64, count=len(raw))
    _check_finite(name, values)
    return values


def _categorical_column(name: str, series: pd.Series) -> np.ndarray:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise _bad(0, name, f"must be a string, an integer or null, got a boolean column ({dtype})")
    if isinstance(dtype, pd.CategoricalDtype):
        series = series.astype(object)
    raw = series.to_numpy(dtype=object)
    missing = pd.isna(raw)
    kind = pd.api.types.infer_dtype(raw, skipna=True)
    if kind in ("string", "empty"):
        values = raw.copy()
        values[missing] = MISSING_CATEGORY
        return values
    if kind == "integer" and not missing.any():
        return np.array([str(int(v)) for v in raw], dtype=object)
    return np.array([_categorical_value(v, i, name) for i, v in enumerate(raw)], dtype=object)


def _columns_from_frame(frame: pd.DataFrame, columns: FeatureColumns) -> dict[str, np.ndarray]:
    for name in columns.names:
        if name not in frame.columns:
            raise InvalidRecordsError(f"record 0: missing feature {name!r} (the frame has no such column)")
    out = {name: _numeric_column(name, frame[name]) for name in columns.numeric}
    out.update({name: _categorical_column(name, frame[name]) for name in columns.categorical})
    return out


def _feature_columns(records: list[dict] | pd.DataFrame, columns: FeatureColumns) -> dict[str, np.ndarray]:
    if isinstance(records, pd.DataFrame):
        return _columns_from_frame(records, columns)
    if isinstance(records, Mapping | str | bytes):
        raise InvalidRecordsError(
            f"expected a list of records or a DataFrame, got a single {type(records).__name__}")
    return _columns_from_records(list(records), columns)


def records_to_frame(records: list[dict] | pd.DataFrame, columns: FeatureColumns) -> pd.DataFrame:
    """Validated raw records as a frame of exactly the feature columns, numeric then categorical.

    Numeric values must be int/float or null (bool and str are errors, +-inf too); missing is
    NaN and the column float64. Categorical values must be str/int or null; ints become their
    decimal string, missing becomes "" and the column holds Python str (object dtype). Keys
    that are not features are ignored. A DataFrame keeps its index; a list gets 0..n-1.
    Raises InvalidRecordsError naming the record index, the feature and the problem.
    """
    values = _feature_columns(records, columns)
    index = records.index if isinstance(records, pd.DataFrame) else None
    return pd.DataFrame(values, columns=columns.names, index=index)


def _labels(y: Any, rows: int) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != rows:
        raise ValueError(f"labels must be a 1-d array of {rows} values, got shape {labels.shape}")
    if len(labels) and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    labels = labels.astype(np.int64)
    if len(np.unique(labels)) < 2:
        raise ValueError(f"training needs both classes; the {rows} labels are all one class")
    return labels


# ---------------------------------------------------------------------------------------------
# Hyper-parameters and the model protocol


@dataclass(frozen=True)
class KerasParams:
    """Hyper-parameters of the Keras MLP.

    hidden_units: width of each ReLU hidden layer, in order.
    epochs: most passes over the training rows (early stopping may end sooner).
    batch_size: rows per gradient step.
    learning_rate: Adam step size.
    embedding_dim: width of the learned embedding of each categorical feature (one row per
        training vocabulary value plus one out-of-vocabulary row for unseen values).
    validation_fraction: share of the training rows (seeded random pick) held out to monitor
        the loss; training stops after `patience` epochs without improvement and keeps the
        best epoch's weights. 0 trains all epochs on every row.
    patience: epochs without validation improvement before stopping.
    unknown_category_rate: share of training values of each categorical feature (seeded
        random pick) shown to the model as an unseen value, so the out-of-vocabulary embedding
        is trained (on an average row) rather than left at its random initial value.
    """

    hidden_units: tuple[int, ...] = (32, 16)
    epochs: int = 8
    batch_size: int = 256
    learning_rate: float = 1e-3
    embedding_dim: int = 4
    validation_fraction: float = 0.1
    patience: int = 2
    unknown_category_rate: float = 0.02


@dataclass(frozen=True)
class SklearnParams:
    """Hyper-parameters of HistGradientBoostingClassifier (same names and meaning)."""

    max_iter: int = 200
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    l2_regularization: float = 0.0
    early_stopping: bool = True


@runtime_checkable
class TabularModel(Protocol):
    flavor: str
    columns: FeatureColumns

    def predict_proba(self, records: list[dict] | pd.DataFrame) -> np.ndarray:
        """P(label = 1) for each record, float64, shape (n,)."""
        ...


# ---------------------------------------------------------------------------------------------
# Keras


def _tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def _serving_spec(columns: FeatureColumns) -> dict[str, Any]:
    tf = _tensorflow()
    spec = {name: tf.TensorSpec([None], tf.float32, name=name) for name in columns.numeric}
    spec.update({name: tf.TensorSpec([None], tf.string, name=name) for name in columns.categorical})
    return spec


class KerasTabularModel:
    """A Keras model (in memory, after training) or its SavedModel signature (after loading).

    Both score through a concrete TensorFlow function with the serving signature, never
    `keras.Model.predict`, so one row costs one graph call.
    """

    flavor = KERAS

    def __init__(self, columns: FeatureColumns, function: Any, *, keras_model: Any = None,
                 loaded: Any = None, epochs_trained: int | None = None) -> None:
        self.columns = columns
        self.keras_model = keras_model
        self.epochs_trained = epochs_trained
        self._function = function
        self._loaded = loaded  # keeps the loaded SavedModel's variables alive

    def _tensors(self, values: dict[str, np.ndarray]) -> dict[str, Any]:
        tf = _tensorflow()
        tensors = {name: tf.constant(values[name], dtype=tf.float32) for name in self.columns.numeric}
        tensors.update({name: tf.constant(values[name], dtype=tf.string)
                        for name in self.columns.categorical})
        return tensors

    def predict_proba(self, records: list[dict] | pd.DataFrame) -> np.ndarray:
        values = _feature_columns(records, self.columns)
        if not len(next(iter(values.values()))):
            return np.empty(0, dtype=np.float64)
        output = self._function(**self._tensors(values))[OUTPUT_NAME]
        return output.numpy().astype(np.float64)


def _vocabulary(values: np.ndarray) -> list[str]:
    """Training values by descending frequency, ties by value: deterministic for a given frame."""
    counts = pd.Series(values).value_counts(sort=False)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [value for value, _ in ordered]


def _build_keras_model(columns: FeatureColumns, values: dict[str, np.ndarray], params: KerasParams):
    import keras

    inputs = {name: keras.Input(shape=(), dtype="float32", name=name) for name in columns.numeric}
    inputs.update({name: keras.Input(shape=(), dtype="string", name=name) for name in columns.categorical})
    parts = []
    if columns.numeric:
        train = np.stack([values[name] for name in columns.numeric], axis=1)
        missing = np.isnan(train)
        # The training mean of each column (0 for a column with no values at all).
        fill = np.array([column[~np.isnan(column)].mean() if (~np.isnan(column)).any() else 0.0
                         for column in train.T])
        imputed = np.where(missing, fill, train)
        stacked = keras.ops.stack([inputs[name] for name in columns.numeric], axis=-1)
        is_missing = keras.ops.isnan(stacked)
        filled = keras.ops.where(is_missing, keras.ops.convert_to_tensor(fill.astype(np.float32)), stacked)
        normalize = keras.layers.Normalization(mean=imputed.mean(axis=0), variance=imputed.var(axis=0),
                                               name="normalize_numeric")
        parts.append(normalize(filled))
        # Indicators only for columns with missing training values: elsewhere a missing value
        # at serving time is simply the training mean.
        seen_missing = [i for i in range(len(columns.numeric)) if missing[:, i].any()]
        if seen_missing:
            indicators = keras.ops.take(keras.ops.cast(is_missing, "float32"), seen_missing, axis=1)
            parts.append(indicators)
    for name in columns.categorical:
        vocabulary = _vocabulary(values[name])
        lookup = keras.layers.StringLookup(vocabulary=vocabulary, num_oov_indices=1,
                                           mask_token=None, name=f"lookup_{name}")
        embed = keras.layers.Embedding(len(vocabulary) + 1, params.embedding_dim, name=f"embed_{name}")
        parts.append(embed(lookup(inputs[name])))
    hidden = keras.layers.Concatenate(name="features")(parts) if len(parts) > 1 else parts[0]
    for i, units in enumerate(params.hidden_units):
        hidden = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(hidden)
    output = keras.layers.Dense(1, activation="sigmoid", name=OUTPUT_NAME)(hidden)
    return keras.Model(inputs=inputs, outputs=output, name="tabular_mlp")


def _serving_function(model: Any):
    """The Python function behind the serving signature: raw feature tensors -> probability."""
    tf = _tensorflow()

    def serve(features):
        return {OUTPUT_NAME: tf.reshape(model(features, training=False), [-1])}

    return serve


def train_keras(frame: pd.DataFrame, y: np.ndarray, columns: FeatureColumns, params: KerasParams,
                seed: int) -> KerasTabularModel:
    """Train the MLP on raw feature columns of `frame` (extra columns ignored); seeded, deterministic.

    Sets Keras' global seeds (Python, NumPy, TensorFlow) and enables TensorFlow op determinism
    for the process, which reproducible training needs.
    """
    values = _feature_columns(frame, columns)
    labels = _labels(y, len(frame))
    tf = _tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    rows = len(labels)
    order = np.random.default_rng(seed).permutation(rows)
    n_val = round(rows * max(params.validation_fraction, 0.0))
    if n_val >= rows or len(np.unique(labels[order[:n_val]])) < 2:
        n_val = 0  # too few rows to monitor: train every epoch on all of them
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])

    model = _build_keras_model(columns, {k: v[train_idx] for k, v in values.items()}, params)
    if params.unknown_category_rate > 0 and columns.categorical:
        rng = np.random.default_rng([seed, 1])
        values = dict(values)
        for name in columns.categorical:
            hidden = rng.random(rows) < params.unknown_category_rate
            values[name] = np.where(hidden, _UNSEEN, values[name])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=params.learning_rate),
                  loss="binary_crossentropy", jit_compile=False)

    def dataset(idx: np.ndarray, shuffle: bool, batch_size: int):
        # Shuffle and batch row *indices*, then gather whole batches: far cheaper than
        # shuffling rows of 14 tensors one element at a time.
        tensors = {name: tf.constant(values[name][idx].astype(np.float32)) for name in columns.numeric}
        tensors.update({name: tf.constant(values[name][idx].astype(str)) for name in columns.categorical})
        target = tf.constant(labels[idx].astype(np.float32).reshape(-1, 1))
        batches = tf.data.Dataset.range(len(idx))
        if shuffle:
            batches = batches.shuffle(len(idx), seed=seed, reshuffle_each_iteration=True)

        def gather(batch):
            return {name: tf.gather(t, batch) for name, t in tensors.items()}, tf.gather(target, batch)

        return batches.batch(batch_size).map(gather).prefetch(2)

    callbacks = []
    validation = None
    if n_val:
        validation = dataset(val_idx, shuffle=False, batch_size=max(params.batch_size, 4096))
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=params.patience,
                                                       restore_best_weights=True))
    history = model.fit(dataset(train_idx, shuffle=True, batch_size=params.batch_size),
                        validation_data=validation,
                        epochs=params.epochs, callbacks=callbacks, shuffle=False, verbose=0)
    function = tf.function(_serving_function(model), input_signature=[_serving_spec(columns)],
                           autograph=False).get_concrete_function()

    def call(**features):
        return function(features)

    return KerasTabularModel(columns, call, keras_model=model,
                             epochs_trained=len(history.history.get("loss", [])))


def _save_keras(model: KerasTabularModel, directory: Path) -> None:
    tf = _tensorflow()
    if model.keras_model is not None:
        import keras

        archive = keras.export.ExportArchive()
        archive.track(model.keras_model)
        archive.add_endpoint(SERVING_SIGNATURE, _serving_function(model.keras_model),
                             input_signature=[_serving_spec(model.columns)])
        archive.write_out(str(directory), verbose=False)
    elif model._loaded is not None:
        signature = model._loaded.signatures[SERVING_SIGNATURE]
        tf.saved_model.save(model._loaded, str(directory), signatures={SERVING_SIGNATURE: signature})
    else:
        raise ValueError("this Keras model has neither a Keras model nor a loaded SavedModel to save")


def _load_keras(directory: Path, columns: FeatureColumns) -> KerasTabularModel:
    tf = _tensorflow()
    if not (directory / "saved_model.pb").is_file():
        raise FileNotFoundError(f"no saved_model.pb in {directory}")
    loaded = tf.saved_model.load(str(directory))
    if SERVING_SIGNATURE not in loaded.signatures:
        raise ValueError(f"{directory}: the SavedModel has no {SERVING_SIGNATURE!r} signature")
    signature = loaded.signatures[SERVING_SIGNATURE]
    expected = {name: spec.dtype for name, spec in _serving_spec(columns).items()}
    actual = {name: spec.dtype for name, spec in signature.structured_input_signature[1].items()}
    if actual != expected:
        raise ValueError(f"{directory}: the signature's inputs {sorted(actual)} do not match the "
                         f"feature columns {sorted(expected)} (or their dtypes differ)")
    if set(signature.structured_outputs) != {OUTPUT_NAME}:
        raise ValueError(f"{directory}: the signature's outputs are {sorted(signature.structured_outputs)}, "
                         f"expected [{OUTPUT_NAME!r}]")
    return KerasTabularModel(columns, signature, loaded=loaded)


# ---------------------------------------------------------------------------------------------
# scikit-learn


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
    the tests check it equals `pipeline.predict_proba` exactly.
    """

    flavor = SKLEARN

    def __init__(self, columns: FeatureColumns, pipeline: Pipeline) -> None:
        self.columns = columns
        self.pipeline = pipeline
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
                  seed: int) -> SklearnTabularModel:
    """Fit the pipeline on raw feature columns of `frame` (extra columns ignored); seeded."""
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


# ---------------------------------------------------------------------------------------------
# Artifacts


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
