"""The reference every cycle is measured against: a plain LogisticRegression on the same window.

One-hot categoricals (unseen values ignored), median-imputed and standardized numerics. A
candidate that cannot beat this on the same holdout rows adds nothing a linear model would not.
It is trained in the evaluation step and not published: it is a yardstick, not a servable model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ml_assets.ml.models import FeatureColumns, records_to_frame

if TYPE_CHECKING:
    import pandas as pd

BASELINE_LABEL = "baseline (logistic regression)"


class BaselineModel:
    """predict_proba over raw feature frames, like the published models."""

    def __init__(self, columns: FeatureColumns, pipeline) -> None:
        self.columns = columns
        self.pipeline = pipeline

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        features = records_to_frame(frame, self.columns).reset_index(drop=True)
        return self.pipeline.predict_proba(features)[:, 1].astype(np.float64)


def train_baseline(frame: pd.DataFrame, y, columns: FeatureColumns, seed: int = 13,
                   max_iter: int = 1000) -> BaselineModel:
    """Fit the baseline on the raw feature columns of ``frame`` (extra columns ignored)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    features = records_to_frame(frame, columns).reset_index(drop=True)
    labels = np.asarray(y)
    if labels.shape != (len(features),):
        raise ValueError(f"baseline labels must be one per row: {len(features)} rows, got shape {labels.shape}")
    if np.unique(labels).size != 2:
        raise ValueError("the baseline needs both classes in its training rows")
    transformers = []
    if columns.numeric:
        # keep_empty_features: a feature with no value in the window still has its column (0 after scaling)
        transformers.append(("numeric", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                                      StandardScaler()), list(columns.numeric)))
    if columns.categorical:
        transformers.append(("categorical", OneHotEncoder(handle_unknown="ignore"), list(columns.categorical)))
    pipeline = Pipeline([
        ("preprocess", ColumnTransformer(transformers, remainder="drop")),
        ("classifier", LogisticRegression(max_iter=max_iter, random_state=seed)),
    ])
    pipeline.fit(features, labels.astype(int))
    return BaselineModel(columns, pipeline)
