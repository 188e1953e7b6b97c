"""The champion's permutation feature importance: how much of its ROC AUC each feature carries.

A feature's importance is the mean ROC AUC lost on labelled rows when that feature's column is
shuffled (``repeats`` seeded permutations; Breiman 2001, scikit-learn's ``permutation_importance``).
It needs only the model's ``predict_proba`` on a frame, so it is the same for every framework.
Losses below zero (shuffling helped, i.e. noise) count as zero. ``weights`` turns the losses into
shares that sum to one over the features a drift rule counts, so that "how much of the model
drifted" can be read off the drifted features (ml_assets.ml.drift_rule).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def permutation_importance(predict: Callable[[pd.DataFrame], np.ndarray], frame: pd.DataFrame, y: np.ndarray,
                           features: Sequence[str], *, repeats: int = 5, seed: int = 0) -> dict[str, float]:
    """ROC AUC lost per feature when its column is shuffled (mean over ``repeats``), at least 0."""
    y = np.asarray(y).astype(int)
    if len(y) != len(frame):
        raise ValueError(f"{len(y)} labels for {len(frame)} rows")
    if len(np.unique(y)) < 2:
        raise ValueError("permutation importance needs labelled rows of both classes")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    missing = [name for name in features if name not in frame.columns]
    if missing:
        raise KeyError(f"frame lacks feature columns {missing}")
    rng = np.random.default_rng(seed)
    base = roc_auc_score(y, predict(frame))
    importance = {}
    shuffled = frame.copy()  # one copy: each feature's column is shuffled in it, then put back
    for name in features:
        original = frame[name].to_numpy()
        losses = []
        for _ in range(repeats):
            shuffled[name] = original[rng.permutation(len(frame))]
            losses.append(base - roc_auc_score(y, predict(shuffled)))
        shuffled[name] = frame[name]
        importance[name] = max(float(np.mean(losses)), 0.0)
    return importance


def weights(importance: dict[str, float], counted: Iterable[str]) -> dict[str, float]:
    """Shares of the counted features' importance, summing to 1; equal shares when none carries any.

    A counted feature the importance does not name weighs 0 (it was not a model input)."""
    counted = list(counted)
    if not counted:
        return {}
    values = {name: max(float(importance.get(name, 0.0)), 0.0) for name in counted}
    total = sum(values.values())
    if total <= 0:
        return {name: 1.0 / len(counted) for name in counted}
    return {name: value / total for name, value in values.items()}
