"""The Keras candidate: an MLP with its preprocessing in the graph, exported as a TF Serving SavedModel.

The preprocessing is in the graph (missing numerics filled with the training mean plus a
missing-indicator, a Normalization layer, a StringLookup with one out-of-vocabulary bucket and
an embedding per categorical); so is the calibration (ml_assets.ml.calibration), when fitted.
The artifact is a TensorFlow SavedModel that TensorFlow Serving loads as is: ``saved_model.pb``
and ``variables/`` at the directory root, a ``serving_default`` signature taking one tensor of
shape ``[None]`` per feature (float32 for numeric, string for categorical) and returning one
output, ``probability`` (float32, shape ``[None]``). Loading runs exactly that signature, as TF
Serving would. TensorFlow is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_assets.ml.calibration import CalibrationParams, Calibrator, calibrated_fit, tf_apply
from ml_assets.ml.model_inputs import FeatureColumns, _feature_columns, _labels

KERAS = "keras"
SERVING_SIGNATURE = "serving_default"
OUTPUT_NAME = "probability"
_UNSEEN = "\x00unseen"  # stands in for a category not in the vocabulary while training
# Training steps run per graph call: the same steps in the same order (same weights), without one
# Python round trip per batch of 256 rows, which was most of a fit's time on this small network.
STEPS_PER_EXECUTION = 32


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


def _tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def import_tensorflow_in_background() -> threading.Thread | None:
    """Start importing TensorFlow and Keras (~7 s) in a thread, for a process that will train or load a
    Keras model later and has waiting (e.g. on Spark) to do first; None when already imported.

    Whoever imports TensorFlow meanwhile waits for this import (the import lock) and finds it loaded;
    if it fails here, that import raises the error. Not a daemon: a process ending meanwhile waits for
    the import rather than tearing it down halfway.
    """
    if "tensorflow" in sys.modules:
        return None

    def load() -> None:
        with contextlib.suppress(Exception):
            _tensorflow()
            import keras  # noqa: F401

    thread = threading.Thread(target=load, name="import-tensorflow")
    thread.start()
    return thread


def _serving_spec(columns: FeatureColumns) -> dict[str, Any]:
    tf = _tensorflow()
    spec = {name: tf.TensorSpec([None], tf.float32, name=name) for name in columns.numeric}
    spec.update({name: tf.TensorSpec([None], tf.string, name=name) for name in columns.categorical})
    return spec


class KerasTabularModel:
    """A Keras model (in memory, after training) or its SavedModel signature (after loading).

    Both score through a concrete TensorFlow function with the serving signature, never
    `keras.Model.predict`, so one row costs one graph call. ``calibrator`` (in memory only) is
    the calibration the function applies after the network; a loaded SavedModel has it in its
    graph already.
    """

    flavor = KERAS

    def __init__(self, columns: FeatureColumns, function: Any, *, keras_model: Any = None,
                 loaded: Any = None, epochs_trained: int | None = None,
                 calibrator: Calibrator | None = None) -> None:
        self.columns = columns
        self.keras_model = keras_model
        self.epochs_trained = epochs_trained
        self.calibrator = calibrator
        self._function = function
        self._loaded = loaded  # keeps the loaded SavedModel's variables alive

    def calibration_info(self) -> dict:
        """How the probabilities were calibrated (for the manifest); {} when not known (loaded)."""
        return self.calibrator.as_dict() if self.calibrator is not None else {}

    def predict_uncalibrated(self, records: list[dict] | pd.DataFrame) -> np.ndarray:
        """The network's own probabilities, before calibration (a model in memory only)."""
        if self.keras_model is None:
            raise ValueError("a loaded SavedModel holds only its calibrated signature")
        return _scores(_concrete_function(self.keras_model, self.columns, None), self.columns, records)

    def predict_proba(self, records: list[dict] | pd.DataFrame) -> np.ndarray:
        return _scores(self._function, self.columns, records)


def _scores(function: Any, columns: FeatureColumns, records: list[dict] | pd.DataFrame) -> np.ndarray:
    values = _feature_columns(records, columns)
    if not len(next(iter(values.values()))):
        return np.empty(0, dtype=np.float64)
    tf = _tensorflow()
    tensors = {name: tf.constant(values[name], dtype=tf.float32) for name in columns.numeric}
    tensors.update({name: tf.constant(values[name], dtype=tf.string) for name in columns.categorical})
    return function(**tensors)[OUTPUT_NAME].numpy().astype(np.float64)


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


def _serving_function(model: Any, calibrator: Calibrator | None = None):
    """The Python function behind the serving signature: raw feature tensors -> probability.

    The calibration runs inside the graph, so TF Serving returns calibrated probabilities.
    """
    tf = _tensorflow()

    def serve(features):
        probability = tf.reshape(model(features, training=False), [-1])
        if calibrator is not None:
            probability = tf_apply(calibrator, probability)
        return {OUTPUT_NAME: probability}

    return serve


def _concrete_function(model: Any, columns: FeatureColumns, calibrator: Calibrator | None):
    tf = _tensorflow()
    function = tf.function(_serving_function(model, calibrator), input_signature=[_serving_spec(columns)],
                           autograph=False).get_concrete_function()

    def call(**features):
        return function(features)

    return call


def train_keras(frame: pd.DataFrame, y: np.ndarray, columns: FeatureColumns, params: KerasParams,
                seed: int, *, calibration: CalibrationParams | None = None, days=None) -> KerasTabularModel:
    """Train the MLP on raw feature columns of `frame` (extra columns ignored); seeded, deterministic.

    Sets Keras' global seeds (Python, NumPy, TensorFlow) and enables TensorFlow op determinism
    for the process, which reproducible training needs. With an active ``calibration``, the
    network trains on all but ``calibration.days`` held-out days (``days``: each row's day,
    default the frame's ``date`` column) and the calibrator fitted on those is part of the graph.
    """
    if calibration is None or not calibration.active:
        return _train_keras(frame, y, columns, params, seed)
    model, calibrator = calibrated_fit(frame, y, calibration, days,
                                       lambda rows, labels: _train_keras(rows, labels, columns, params, seed))
    return KerasTabularModel(columns, _concrete_function(model.keras_model, columns, calibrator),
                             keras_model=model.keras_model, epochs_trained=model.epochs_trained,
                             calibrator=calibrator)


def _train_keras(frame: pd.DataFrame, y: np.ndarray, columns: FeatureColumns, params: KerasParams,
                 seed: int) -> KerasTabularModel:
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
                  loss="binary_crossentropy", jit_compile=False, steps_per_execution=STEPS_PER_EXECUTION)

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
    return KerasTabularModel(columns, _concrete_function(model, columns, None), keras_model=model,
                             epochs_trained=len(history.history.get("loss", [])))


def _save_keras(model: KerasTabularModel, directory: Path) -> None:
    tf = _tensorflow()
    if model.keras_model is not None:
        import keras

        archive = keras.export.ExportArchive()
        archive.track(model.keras_model)
        archive.add_endpoint(SERVING_SIGNATURE, _serving_function(model.keras_model, model.calibrator),
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

