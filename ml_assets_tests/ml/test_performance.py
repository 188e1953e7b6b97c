"""Live performance over a window with intervals, and CBPE, against references (sklearn, scipy, brute force)."""

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

from ml_assets.ml import cbpe
from ml_assets.ml.performance import (
    holdout_standard_error,
    live_performance,
    metric_interval,
    window_performance,
    window_table,
)
from ml_assets.ml.stats import (
    auc_interval,
    delong_auc_difference,
    hanley_mcneil_se,
    proportion_interval,
)
from ml_assets.ml.triggers import DayVerdict, decide


def calibrated(rng, n, a=2.0, b=5.0):
    """Probabilities and labels drawn from them: calibrated by construction."""
    p = rng.beta(a, b, n)
    return p, (rng.random(n) < p).astype(int)


# --- intervals of one model's metric -----------------------------------------------------------


def test_auc_interval_matches_sklearn_and_the_paired_delong_against_a_constant():
    rng = np.random.default_rng(1)
    p, y = calibrated(rng, 500)
    single = auc_interval(y, p)
    assert single.estimate == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    # A constant model has AUC 0.5 and no variance, so the paired variance is the single one.
    paired = delong_auc_difference(y, p, np.zeros_like(p))
    assert single.se == pytest.approx(paired.se, rel=1e-9)
    assert single.low == pytest.approx(single.estimate - norm.ppf(0.975) * single.se)


def test_auc_interval_covers_the_true_auc_about_as_often_as_promised():
    # Binormal scores: true AUC = Phi(1 / sqrt(2)).
    rng = np.random.default_rng(2)
    truth, covered = norm.cdf(1 / np.sqrt(2)), 0
    for _ in range(200):
        y = (rng.random(300) < 0.3).astype(int)
        interval = auc_interval(y, rng.normal(size=300) + y)
        covered += interval.low <= truth <= interval.high
    assert 0.90 <= covered / 200 <= 0.99


def test_wilson_interval_matches_scipy():
    ours = proportion_interval(37, 120, 0.9)
    theirs = binomtest(37, 120).proportion_ci(confidence_level=0.9, method="wilson")
    assert (ours.low, ours.high) == pytest.approx((theirs.low, theirs.high), abs=1e-12)


def test_metric_interval_centres_on_the_sklearn_metrics():
    rng = np.random.default_rng(3)
    p, y = calibrated(rng, 400)
    assert metric_interval(y, p, "accuracy").estimate == pytest.approx(accuracy_score(y, p >= 0.5))
    assert metric_interval(y, p, "brier").estimate == pytest.approx(brier_score_loss(y, p))
    assert metric_interval(y, p, "log_loss").estimate == pytest.approx(log_loss(y, p), rel=1e-6)
    pr = metric_interval(y, p, "pr_auc")
    assert pr.method == "bootstrap" and pr.low < pr.estimate < pr.high
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        metric_interval(y, p, "f1")


# --- window judging ----------------------------------------------------------------------------


def days_of(rng, days, rows, flip=0.0):
    """Labelled days from one calibrated model (holdout AUC about 0.72), a share of labels flipped."""
    ys, ps = [], []
    for _ in range(days):
        p, y = calibrated(rng, rows)
        flipped = rng.random(rows) < flip
        ys.append(np.where(flipped, 1 - y, y))
        ps.append(p)
    return np.concatenate(ys), np.concatenate(ps)


HOLDOUT_AUC = 0.72  # the expected AUC of calibrated Beta(2, 5) probabilities (0.7203)


def stream_triggers(rng, days=120, rows=100, flip_from=None, window=7, debounce=3):
    """Days of a stream judged daily (fixed bound) and on the trailing window; the days each retrains on."""
    ys, ps, daily, windowed = [], [], {}, {}
    fired = {"daily": [], "windowed": []}
    for d in range(days):
        y, p = days_of(rng, 1, rows, flip=0.3 if flip_from is not None and d >= flip_from else 0.0)
        ys.append(y)
        ps.append(p)
        key = f"d{d:03d}"
        one = live_performance(y, p, metric="roc_auc", holdout_value=HOLDOUT_AUC, max_drop=0.05, min_rows=50)
        daily[key] = DayVerdict(key, one.flagged, one.summary)
        span = window_performance(np.concatenate(ys[-window:]), np.concatenate(ps[-window:]), metric="roc_auc",
                                  holdout_value=HOLDOUT_AUC, max_drop=0.05)
        windowed[key] = DayVerdict(key, span.flagged, span.summary)
        for name, verdicts in (("daily", daily), ("windowed", windowed)):
            if decide(verdicts, signal=name, debounce_days=debounce).request:
                fired[name].append(d)
                verdicts.clear()  # a retrain starts a new champion's verdicts
    return fired


def test_noise_at_100_rows_a_day_never_retrains_on_the_window_but_does_on_the_daily_fixed_bound():
    fired = stream_triggers(np.random.default_rng(4), days=240)
    assert fired["windowed"] == []
    assert len(fired["daily"]) >= 1  # one day of 100 rows: ROC AUC moves by ~0.05 from noise alone


def test_a_label_noise_drop_retrains_on_the_window_within_days():
    fired = stream_triggers(np.random.default_rng(10), days=40, flip_from=20)
    assert fired["windowed"] and 20 <= fired["windowed"][0] <= 28


def test_a_constructed_significant_drop_is_flagged_by_both_rules():
    rng = np.random.default_rng(5)
    y, p = days_of(rng, 7, 100, flip=0.3)  # AUC falls to about 0.5 + 0.22 * 0.4 = 0.59
    significant = window_performance(y, p, metric="roc_auc", holdout_value=HOLDOUT_AUC, max_drop=0.05,
                                     days=[f"2024-01-0{d}" for d in range(1, 8)])
    assert significant.flagged and significant.drop_low > 0 and significant.drop > 0.05
    assert "significant drop" in significant.summary and "over 2024-01-01..2024-01-07 (7 days)" in significant.summary
    confident = window_performance(y, p, metric="roc_auc", holdout_value=HOLDOUT_AUC, max_drop=0.05,
                                   rule="confident")
    assert confident.flagged == (confident.drop_low > 0.05)
    # A lower-is-better metric: the drop is the increase.
    brier = window_performance(y, p, metric="brier", holdout_value=0.15, max_drop=0.02)
    assert brier.drop == pytest.approx(brier.live - 0.15) and brier.drop_low <= brier.drop <= brier.drop_high


def test_a_window_without_enough_rows_of_each_class_is_not_judged():
    y = np.r_[np.ones(3, int), np.zeros(300, int)]
    result = window_performance(y, np.linspace(0, 1, 303), metric="roc_auc", holdout_value=0.8, max_drop=0.05)
    assert not result.judged and not result.flagged
    assert "3 positive / 300 negative rows (each needs >= 10)" in result.note
    assert "not judged" in window_table(result, [])
    with pytest.raises(ValueError, match="unknown performance rule 'loose'"):
        window_performance(y, y, metric="roc_auc", holdout_value=0.8, max_drop=0.05, rule="loose")
    with pytest.raises(ValueError, match="no holdout roc_auc"):
        window_performance(y, y, metric="roc_auc", holdout_value=float("nan"), max_drop=0.05)


def test_window_table_shows_each_day_and_the_interval():
    rng = np.random.default_rng(6)
    y, p = days_of(rng, 2, 200)
    result = window_performance(y, p, metric="roc_auc", holdout_value=HOLDOUT_AUC, max_drop=0.05,
                                days=["2024-01-01", "2024-01-02"])
    table = window_table(result, [{"day": "2024-01-01", "rows": 200, "positives": 60, "coverage": 0.95,
                                   "value": 0.74, "estimate": 0.75, "estimate_low": 0.7, "estimate_high": 0.8}])
    assert "| 2024-01-01 | 200 | 60 | 95% | 0.740 | 0.750 [0.700, 0.800] |" in table
    assert f"[{result.low:.4f}, {result.high:.4f}]" in table and f"{result.drop_low:+.4f}" in table


# --- CBPE ---------------------------------------------------------------------------------------


def test_expected_auc_is_the_brute_force_pair_expectation_with_ties():
    p = np.round(np.random.default_rng(7).beta(2, 5, 120), 1)  # many ties
    weights = p[:, None] * (1 - p[None, :])
    np.fill_diagonal(weights, 0)
    order = (p[:, None] > p[None, :]) + 0.5 * (p[:, None] == p[None, :])
    assert cbpe.expected_roc_auc(p) == pytest.approx((weights * order).sum() / weights.sum(), rel=1e-12)
    assert cbpe.expected_accuracy(np.array([0.9, 0.2, 0.5])) == pytest.approx((0.9 + 0.8 + 0.5) / 3)


def test_cbpe_on_calibrated_data_lands_within_its_band_of_the_realised_metrics():
    rng = np.random.default_rng(8)
    inside_auc = inside_acc = 0
    errors = []
    for _ in range(100):
        p, y = calibrated(rng, 400)
        est = cbpe.estimate(p, samples=200, seed=int(rng.integers(1 << 30)))
        realised_auc, realised_acc = roc_auc_score(y, p), accuracy_score(y, p >= 0.5)
        inside_auc += est.roc_auc_low <= realised_auc <= est.roc_auc_high
        inside_acc += est.accuracy_low <= realised_acc <= est.accuracy_high
        errors.append(abs(est.roc_auc - realised_auc))
    # 95% bands (accuracy is discrete on 400 rows: measured ~92% over 400 trials)
    assert inside_auc >= 85 and inside_acc >= 85
    assert np.mean(errors) < 0.03


def test_cbpe_sees_a_less_confident_model_and_rejects_bad_input():
    rng = np.random.default_rng(9)
    sure, unsure = cbpe.estimate(rng.beta(0.5, 1.5, 500)), cbpe.estimate(rng.beta(8, 16, 500))
    assert sure.roc_auc - unsure.roc_auc > 0.1 and sure.accuracy > unsure.accuracy
    assert sure.value("roc_auc") == (sure.roc_auc, sure.roc_auc_low, sure.roc_auc_high)
    with pytest.raises(ValueError, match="CBPE estimates"):
        sure.value("brier")
    with pytest.raises(ValueError, match="lie in \\[0, 1\\]"):
        cbpe.estimate(np.array([0.2, 1.5]))


def test_the_holdout_values_own_error_widens_the_drop_interval():
    # Hanley-McNeil by hand for A = 0.8, 30 positives, 70 negatives; and close to DeLong on binormal data.
    q1, q2 = 0.8 / 1.2, 2 * 0.64 / 1.8
    by_hand = np.sqrt((0.8 * 0.2 + 29 * (q1 - 0.64) + 69 * (q2 - 0.64)) / (30 * 70))
    assert hanley_mcneil_se(0.8, 30, 70) == pytest.approx(by_hand, rel=1e-12)
    rng = np.random.default_rng(11)
    y = (rng.random(3000) < 0.3).astype(int)
    delong = auc_interval(y, rng.normal(size=3000) + y)
    assert hanley_mcneil_se(delong.estimate, int(y.sum()), int(3000 - y.sum())) == pytest.approx(delong.se, rel=0.2)
    holdout = {"roc_auc": 0.8, "accuracy": 0.75, "brier": 0.2, "n": 100, "positives": 30}
    assert holdout_standard_error("roc_auc", holdout) == pytest.approx(by_hand)
    assert holdout_standard_error("accuracy", holdout) == pytest.approx(np.sqrt(0.75 * 0.25 / 100))
    assert holdout_standard_error("brier", holdout) == 0.0 and holdout_standard_error("roc_auc", {}) == 0.0

    p, y = calibrated(np.random.default_rng(12), 3000)
    kwargs = {"metric": "roc_auc", "holdout_value": 0.79, "max_drop": 0.05}
    exact = window_performance(y, p, **kwargs)
    widened = window_performance(y, p, **kwargs, holdout_se=0.05)
    assert widened.drop == exact.drop and widened.drop_low < exact.drop_low and widened.drop_high > exact.drop_high
    assert exact.flagged and not widened.flagged  # a holdout measured on few rows cannot prove this drop
