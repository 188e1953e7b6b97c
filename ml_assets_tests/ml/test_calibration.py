"""Post-hoc calibration: the fits against sklearn's references, the TF graph against numpy, and
calibrated artifacts of both flavors scoring the same in batch, after loading and when served."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from ml_assets.ml.calibration import (
    EPSILON,
    CalibrationParams,
    calibration_split,
    expected_calibration_error,
    fit_calibrator,
    fit_isotonic,
    fit_platt,
    tf_apply,
)
from ml_assets.ml.models import (
    FeatureColumns,
    KerasParams,
    SklearnParams,
    load_model,
    save_model,
    train_keras,
    train_sklearn,
)
from ml_assets_tests.serving.helpers import batch_scores, predict, publish, serving


def _logit(p):
    return np.log(p) - np.log1p(-p)


def miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(overconfident and shifted scores, labels drawn from the true probabilities)."""
    rng = np.random.default_rng(seed)
    truth = 1.0 / (1.0 + np.exp(-rng.normal(-1.0, 1.2, n)))
    labels = (rng.random(n) < truth).astype(int)
    scores = 1.0 / (1.0 + np.exp(-(2.5 * _logit(truth) + 1.0)))
    return scores, labels


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_lowers_ece_on_held_out_rows(method):
    scores, labels = miscalibrated(20_000, seed=1)
    calibrator = fit_calibrator(scores[:10_000], labels[:10_000], method)
    before = expected_calibration_error(labels[10_000:], scores[10_000:])
    after = expected_calibration_error(labels[10_000:], calibrator.apply(scores[10_000:]))
    assert before > 0.1
    assert after < 0.02
    # the ranking is kept: a non-decreasing map of the scores
    order = np.argsort(scores)
    assert (np.diff(calibrator.apply(scores[order])) >= -1e-12).all()


def test_isotonic_equals_sklearn_isotonic_regression():
    scores, labels = miscalibrated(3_000, seed=2)
    scores = np.round(scores, 3)  # ties: rows sharing a score are pooled first
    mine = fit_isotonic(scores, labels)
    reference = IsotonicRegression(out_of_bounds="clip").fit(scores, labels)
    probe = np.r_[np.linspace(0.0, 1.0, 2001), scores]
    np.testing.assert_allclose(mine.apply(probe), reference.predict(probe), atol=1e-12)
    assert len(mine.x) <= len(reference.X_thresholds_)


def test_platt_equals_unpenalized_logistic_regression_on_the_logit():
    scores, labels = miscalibrated(5_000, seed=3)
    mine = fit_platt(scores, labels)
    z = _logit(np.clip(scores, EPSILON, 1 - EPSILON)).reshape(-1, 1)
    reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(z, labels)
    assert mine.a == pytest.approx(reference.coef_[0, 0], abs=1e-5)
    assert mine.b == pytest.approx(reference.intercept_[0], abs=1e-5)
    np.testing.assert_allclose(mine.apply(scores), reference.predict_proba(z)[:, 1], atol=1e-6)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_tensorflow_ops_equal_the_numpy_calibrator(method):
    import tensorflow as tf

    scores, labels = miscalibrated(4_000, seed=4)
    calibrator = fit_calibrator(scores, labels, method)
    # float32 inputs as the network emits them, including both ends and values outside the thresholds
    probe = np.r_[0.0, 1.0, 1e-9, 1 - 1e-9, np.linspace(0, 1, 4001), scores].astype(np.float32)
    graph = tf.function(lambda p: tf_apply(calibrator, p))(tf.constant(probe)).numpy()
    assert graph.dtype == np.float32
    np.testing.assert_allclose(graph, calibrator.apply(probe.astype(np.float64)), atol=1e-6, rtol=0)


def test_calibration_split_holds_out_the_last_or_spread_days_and_says_what_is_wrong():
    days = np.array(["2013-03-02", "2013-03-01", "2013-03-08", "2013-03-08", *(f"2013-03-0{d}" for d in range(3, 8))])
    fit, held, names = calibration_split(days, 2, "last")
    assert names == ["2013-03-07", "2013-03-08"]
    assert list(held) == [2, 3, 8] and list(fit) == [0, 1, 4, 5, 6, 7]
    _, held, names = calibration_split(days, 2, "spread")  # the first and the last day
    assert names == ["2013-03-01", "2013-03-08"] and list(held) == [1, 2, 3]
    _, _, names = calibration_split(days, 5, "last")  # at most a quarter of the 8 days
    assert names == ["2013-03-07", "2013-03-08"]
    with pytest.raises(ValueError, match="span only 3 day"):
        calibration_split(days[:3], 1)
    with pytest.raises(ValueError, match="both classes"):
        fit_calibrator(np.array([0.2, 0.4]), np.array([1, 1]), "isotonic")
    with pytest.raises(ValueError, match="unknown"):
        CalibrationParams(method="beta")
    with pytest.raises(ValueError, match="positive integer"):
        CalibrationParams(days=0)
    with pytest.raises(ValueError, match="split 'first' is unknown"):
        CalibrationParams(split="first")


# --------------------------------------------------------------------------- calibrated artifacts

COLUMNS = FeatureColumns(numeric=["x1", "x2"], categorical=["c"])


def tabular(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    x2[rng.random(n) < 0.05] = np.nan
    c = rng.choice(["a", "b", "c"], n)
    logit = 1.5 * x1 - np.nan_to_num(x2) + np.select([c == "b", c == "c"], [1.0, -1.0], 0.0) - 0.5
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    days = np.array([f"2013-03-{1 + i % 12:02d}" for i in range(n)])
    return pd.DataFrame({"date": days, "x1": x1, "x2": x2, "c": c}), labels


@pytest.fixture(scope="module")
def calibrated_models():
    frame, labels = tabular(3_000, seed=5)
    calibration = CalibrationParams(method="isotonic", days=3, split="last")
    return {
        "sklearn": train_sklearn(frame, labels, COLUMNS, SklearnParams(max_iter=30), seed=0,
                                 calibration=calibration),
        "keras": train_keras(frame, labels, COLUMNS, KerasParams(hidden_units=(8,), epochs=2,
                                                                  validation_fraction=0.0), seed=0,
                             calibration=CalibrationParams(method="platt", days=3)),
    }


@pytest.mark.parametrize("flavor", ["sklearn", "keras"])
def test_calibrated_artifact_scores_calibrated_probabilities_after_loading(calibrated_models, flavor, tmp_path):
    model = calibrated_models[flavor]
    info = model.calibration_info()
    expected_days = {"sklearn": ["2013-03-10", "2013-03-11", "2013-03-12"],  # split="last"
                     "keras": ["2013-03-01", "2013-03-07", "2013-03-12"]}  # split="spread" (the default)
    assert info["days"] == expected_days[flavor] and info["rows"] == 750
    assert info["method"] == {"sklearn": "isotonic", "keras": "platt"}[flavor]
    rows, _ = tabular(400, seed=6)
    expected = model.calibrator.apply(model.predict_uncalibrated(rows))
    np.testing.assert_allclose(model.predict_proba(rows), expected, atol=1e-6, rtol=0)
    save_model(model, tmp_path)
    loaded = load_model(tmp_path, flavor, COLUMNS)
    np.testing.assert_allclose(loaded.predict_proba(rows), expected, atol=1e-6, rtol=0)
    if flavor == "sklearn":  # the saved Pipeline itself returns them (batch scoring with sklearn alone)
        np.testing.assert_allclose(loaded.pipeline.predict_proba(rows[COLUMNS.names])[:, 1], expected, atol=1e-12)


def test_calibration_needs_the_day_of_each_row():
    frame, labels = tabular(200, seed=7)
    with pytest.raises(ValueError, match="needs each row's day"):
        train_sklearn(frame.drop(columns="date"), labels, COLUMNS, SklearnParams(max_iter=5), seed=0,
                      calibration=CalibrationParams())


@pytest.mark.parametrize("flavor", ["sklearn", "keras"])
def test_served_probabilities_equal_batch_scoring(calibrated_models, flavor, tmp_path):
    from ml_assets.storage import LocalBlobStore
    from ml_assets.storage.model_store import ModelStore

    store = ModelStore(LocalBlobStore(tmp_path / "blobs"), tmp_path / "cache")
    version = publish(store, calibrated_models[flavor], tmp_path)
    rows, _ = tabular(64, seed=8)
    instances = [{"x1": r.x1, "x2": None if np.isnan(r.x2) else r.x2, "c": r.c} for r in rows.itertuples()]
    with serving(store) as (client, _):
        served = np.concatenate([predict(client, instances[:1]), predict(client, instances[1:])])
    batch = batch_scores(store, version, instances)
    np.testing.assert_allclose(served, batch, atol=1e-6, rtol=0)
    np.testing.assert_allclose(batch, calibrated_models[flavor].predict_proba(rows), atol=1e-6, rtol=0)


def test_serving_fast_path_keeps_the_calibration(calibrated_models):
    from ml_assets.serving.fastpath import accelerate

    model = calibrated_models["sklearn"]
    fast = accelerate(model)
    assert fast is not None  # verified against predict_proba, else it would be None
    rows, _ = tabular(50, seed=9)
    instances = [{"x1": r.x1, "x2": None if np.isnan(r.x2) else r.x2, "c": r.c} for r in rows.itertuples()]
    np.testing.assert_allclose(fast(instances), model.predict_proba(rows), atol=1e-12, rtol=0)
    assert not np.allclose(fast(instances), model.predict_uncalibrated(rows))


def test_refit_keeps_every_training_day_and_applies_the_held_out_calibrator():
    frame, labels = tabular(1_200, seed=10)
    params = SklearnParams(max_iter=20)
    held_out = train_sklearn(frame, labels, COLUMNS, params, seed=0, calibration=CalibrationParams(days=3))
    refit = train_sklearn(frame, labels, COLUMNS, params, seed=0, calibration=CalibrationParams(days=3, refit=True))
    everything = train_sklearn(frame, labels, COLUMNS, params, seed=0)
    rows, _ = tabular(300, seed=11)
    assert refit.calibrator == held_out.calibrator  # fitted on the same held-out days, same model
    assert refit.calibration_info()["refit"] is True
    np.testing.assert_array_equal(refit.predict_uncalibrated(rows), everything.predict_proba(rows))
    np.testing.assert_allclose(refit.predict_proba(rows), refit.calibrator.apply(everything.predict_proba(rows)),
                               atol=1e-12)
