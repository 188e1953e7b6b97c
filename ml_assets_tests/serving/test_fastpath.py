"""The verified sklearn fast path (serving.fastpath): used when it reproduces predict_proba."""

from __future__ import annotations

import numpy as np

from ml_assets.serving import ModelRegistry
from ml_assets_tests.serving.helpers import NAME, publish


def test_sklearn_fast_path_is_used_and_identical(store, sklearn_models, rows, tmp_path):
    publish(store, sklearn_models[0], tmp_path)
    registry = ModelRegistry(store, NAME)
    registry.refresh()
    loaded = registry.current
    assert loaded.fast_predict is not None
    odd = [
        {**rows[0], "pressure": None, "dest": None, "carrier": "ZZ"},
        {**rows[1], "weekday": 3, "distance": 1000, "origin": ""},
        *rows[2:200],
    ]
    for size in (1, 3, len(odd)):
        for start in range(0, len(odd), size):
            chunk = odd[start : start + size]
            np.testing.assert_allclose(
                loaded.fast_predict(chunk), loaded.model.predict_proba(chunk), rtol=0, atol=1e-12
            )
    # Without acceleration the registry serves predict_proba itself.
    plain = ModelRegistry(store, NAME, accelerate=False)
    plain.refresh()
    assert plain.current.fast_predict is None


def test_fast_path_declines_what_it_cannot_reproduce(
    data, sklearn_models, keras_model, monkeypatch
):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder, StandardScaler

    from ml_assets.ml.models import SklearnTabularModel, records_to_frame
    from ml_assets.serving import fastpath

    frame, labels, columns = data
    assert fastpath.accelerate(keras_model) is None
    # A pipeline that scales its numbers: the probe finds no identity column, so no fast path.
    scaled = Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        ("numeric", StandardScaler(), columns.numeric),
                        (
                            "categorical",
                            OrdinalEncoder(
                                handle_unknown="use_encoded_value", unknown_value=np.nan
                            ),
                            columns.categorical,
                        ),
                    ]
                ),
            ),
            (
                "classifier",
                HistGradientBoostingClassifier(
                    max_iter=10,
                    categorical_features=[False] * len(columns.numeric)
                    + [True] * len(columns.categorical),
                ),
            ),
        ]
    )
    scaled.fit(records_to_frame(frame.iloc[:600], columns), labels[:600])
    assert fastpath.accelerate(SklearnTabularModel(columns, scaled)) is None
    # A compiled function that is off by 1e-9 fails verification.
    real = fastpath._compile_sklearn(sklearn_models[0])
    assert real is not None
    monkeypatch.setattr(fastpath, "_compile_sklearn", lambda model: lambda r: real(r) + 1e-9)
    assert fastpath.accelerate(sklearn_models[0]) is None


