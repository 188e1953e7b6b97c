"""The LogisticRegression baseline on constructed data: preprocessing as described, a known signal found."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ml_assets.ml.baseline import train_baseline
from ml_assets.ml.models import FeatureColumns

COLUMNS = FeatureColumns(numeric=["x", "empty"], categorical=["carrier"])


def frame(rng, n):
    carrier = rng.choice(["AA", "UA", "WN"], size=n)
    x = rng.normal(size=n) * 10 + 100
    x[rng.random(n) < 0.1] = np.nan
    logit = 0.3 * np.nan_to_num(x - 100) + np.where(carrier == "WN", 1.5, -0.5)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"x": x, "empty": np.nan, "carrier": carrier, "extra": 1}), y


def test_baseline_imputes_medians_scales_one_hot_encodes_and_finds_the_signal():
    rng = np.random.default_rng(0)
    train, y = frame(rng, 2000)
    model = train_baseline(train, y, COLUMNS)
    preprocess = model.pipeline.named_steps["preprocess"]
    imputer, scaler = preprocess.named_transformers_["numeric"].steps[0][1], preprocess.named_transformers_["numeric"].steps[1][1]
    assert imputer.statistics_[0] == pytest.approx(np.nanmedian(train["x"]))
    assert scaler.scale_[0] > 1  # standardized: x has sd ~10
    assert list(preprocess.named_transformers_["categorical"].categories_[0]) == ["AA", "UA", "WN"]
    test, y_test = frame(rng, 1000)
    test.loc[:9, "carrier"] = "B6"  # unseen carrier: ignored, not an error
    p = model.predict_proba(test)
    assert p.shape == (1000,) and ((p > 0) & (p < 1)).all()
    assert roc_auc_score(y_test, p) > 0.75


def test_baseline_refuses_one_class():
    rng = np.random.default_rng(1)
    train, _ = frame(rng, 50)
    with pytest.raises(ValueError, match="both classes"):
        train_baseline(train, np.zeros(50, dtype=int), COLUMNS)
