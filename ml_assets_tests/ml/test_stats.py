"""Paired comparisons and corrections against references (sklearn, scipy, a direct DeLong, hand sums)."""

import numpy as np
import pytest
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score

from ml_assets.ml.stats import (
    _midranks,
    adjust,
    benjamini_hochberg,
    delong_auc_difference,
    holm,
    normal_quantile,
    paired_bootstrap,
)


def _auc(y, p):
    """Mann-Whitney AUC from ranks (sklearn's roc_auc_score is the reference below, but slow per resample)."""
    m = int(y.sum())
    if not 0 < m < y.size:
        return None
    return (rankdata(p)[y == 1].sum() - m * (m + 1) / 2) / (m * (y.size - m))


def correlated_models(rng, n=400, rate=0.3, shift_a=1.0, shift_b=0.8, noise=0.7):
    """Binormal scores sharing a latent part; true AUC of each = Phi(shift / sqrt(2 (1 + noise^2)))."""
    y = (rng.random(n) < rate).astype(int)
    shared = rng.normal(size=n)
    a = shared + noise * rng.normal(size=n) + shift_a * y
    b = shared + noise * rng.normal(size=n) + shift_b * y
    return y, a, b


def true_auc(shift, noise=0.7):
    return norm.cdf(shift / np.sqrt(2 * (1 + noise**2)))


def direct_delong(y, scores):
    """DeLong's estimator written out with the O(m n) kernel psi(x, w) = 1[x > w] + 1/2 1[x = w]."""
    pos, neg = y == 1, y == 0
    v10, v01, aucs = [], [], []
    for s in scores:
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    cov = np.cov(np.vstack(v10)) / pos.sum() + np.cov(np.vstack(v01)) / neg.sum()
    return aucs[0] - aucs[1], cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], aucs


def test_midranks_match_scipy_rankdata():
    x = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 0.5, 1.0])
    np.testing.assert_allclose(_midranks(x), rankdata(x, method="average"))


def test_delong_matches_sklearn_aucs_and_the_direct_formula_with_ties():
    rng = np.random.default_rng(1)
    y, a, b = correlated_models(rng, n=300)
    a, b = np.round(a, 1), np.round(b, 1)  # many ties
    d = delong_auc_difference(y, a, b)
    assert _auc(y, a) == pytest.approx(roc_auc_score(y, a))
    assert d.value_a == pytest.approx(roc_auc_score(y, a)) and d.value_b == pytest.approx(roc_auc_score(y, b))
    estimate, variance, _ = direct_delong(y, [a, b])
    assert d.estimate == pytest.approx(estimate) and d.se == pytest.approx(np.sqrt(variance))
    z = norm.ppf(0.975)
    assert (d.low, d.high) == pytest.approx((d.estimate - z * d.se, d.estimate + z * d.se))
    # the interval's ends are where the one-sided tests reach (1 - confidence) / 2
    assert d.p_below(d.high) == pytest.approx(0.025) and d.p_above(d.low) == pytest.approx(0.025)


def test_delong_identical_models_have_zero_difference_and_variance():
    rng = np.random.default_rng(2)
    y, a, _ = correlated_models(rng, n=200)
    d = delong_auc_difference(y, a, a.copy())
    assert d.estimate == 0 and d.se == pytest.approx(0, abs=1e-12)


def test_delong_interval_covers_the_true_difference_at_the_nominal_rate():
    rng = np.random.default_rng(3)
    truth = true_auc(1.0) - true_auc(0.8)
    covered = [
        (d := delong_auc_difference(*correlated_models(rng))).low <= truth <= d.high for _ in range(400)
    ]
    # 95% nominal; 400 draws give a binomial standard error of about 0.011
    assert 0.92 <= np.mean(covered) <= 0.98


def test_delong_refuses_a_single_class():
    with pytest.raises(ValueError, match="2 positives and 2 negatives"):
        delong_auc_difference([1, 1, 1, 0], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="one score per row"):
        delong_auc_difference([1, 0, 1, 0], [0.1, 0.2, 0.3], [0.4, 0.3, 0.2, 0.1])


def test_paired_bootstrap_is_seeded_and_agrees_with_delong_on_auc():
    rng = np.random.default_rng(4)
    y, a, b = correlated_models(rng, n=600)
    first = paired_bootstrap(y, a, b, _auc, resamples=400, seed=7)
    again = paired_bootstrap(y, a, b, _auc, resamples=400, seed=7)
    assert first.as_dict() == again.as_dict() and "samples" not in first.as_dict()
    delong = delong_auc_difference(y, a, b)
    assert first.estimate == pytest.approx(delong.estimate)
    assert first.se == pytest.approx(delong.se, rel=0.2)
    assert first.low == pytest.approx(delong.low, abs=0.02) and first.high == pytest.approx(delong.high, abs=0.02)
    assert 0.0 < first.p_below(first.high) <= 0.04 and first.p_above(first.low) <= 0.04


def test_group_bootstrap_resamples_whole_groups():
    rng = np.random.default_rng(5)
    y, a, b = correlated_models(rng, n=700)
    days = np.repeat(np.arange(7), 100)
    grouped = paired_bootstrap(y, a, b, lambda t, p: float(np.mean((p > 0.5) == t)), resamples=200, groups=days)
    assert grouped.method == "bootstrap" and grouped.low <= grouped.estimate <= grouped.high
    with pytest.raises(ValueError, match="at least 2 groups"):
        paired_bootstrap(y, a, b, _auc, resamples=50, groups=np.zeros(700))


def test_holm_and_bh_on_a_hand_computed_family():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1 with a running max -> 0.02, 0.03, 0.06, 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: 0.005*4/1, 0.01*4/2, 0.03*4/3, 0.04*4/4 with a running min from the top -> 0.02, 0.02, 0.04, 0.04
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjust(p, "none") == p and holm([]) == []
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="unknown correction"):
        adjust(p, "bonferonni")


def test_normal_quantile_matches_scipy():
    for confidence in (0.8, 0.9, 0.95, 0.99):
        assert normal_quantile(confidence) == pytest.approx(norm.ppf(0.5 + confidence / 2))
    with pytest.raises(ValueError, match="confidence"):
        normal_quantile(1.0)


def _rounded_scores(rng, y, decimals):
    # Rounding makes ties (within and across classes), as float32 model outputs do.
    return np.round(np.clip(0.3 * y + rng.random(y.size) * 0.7, 0.0, 1.0), decimals)


@pytest.mark.parametrize("metric", ["roc_auc", "ece", "pr_auc", "brier"])
def test_metric_on_rows_is_bit_identical_to_the_metric_on_the_drawn_rows(metric):
    from ml_assets.ml.metrics import metric_function

    rng = np.random.default_rng(11)
    for n, decimals in ((9, 1), (500, 2), (3000, 6)):
        y = (rng.random(n) < 0.3).astype(np.int8)
        p = _rounded_scores(rng, y, decimals)
        function = metric_function(metric)
        on_rows = function.on_rows(y, p)
        for size in (n, n // 2, 3):
            for _ in range(50):
                rows = rng.integers(0, n, size)
                expected = function(y[rows], p[rows])
                assert on_rows(rows) == expected  # None alike when one class is drawn


def test_bootstrap_intervals_equal_the_per_resample_metric_to_the_last_bit():
    from ml_assets.ml.metrics import metric_function
    from ml_assets.ml.stats import bootstrap_interval, group_bootstrap_interval

    rng = np.random.default_rng(12)
    y = (rng.random(1200) < 0.25).astype(np.int8)
    p, q = _rounded_scores(rng, y, 3), _rounded_scores(rng, y, 2)
    days = np.repeat(np.arange(12), 100)
    for metric in ("roc_auc", "ece"):
        fast = metric_function(metric)
        plain = lambda t, s, f=fast: f(t, s)  # noqa: E731 - no on_rows: evaluated on y[rows], p[rows]
        assert bootstrap_interval(y, p, fast, resamples=300) == bootstrap_interval(y, p, plain, resamples=300)
        assert (group_bootstrap_interval(y, p, fast, days, resamples=200)
                == group_bootstrap_interval(y, p, plain, days, resamples=200))
        fast_pair, plain_pair = (paired_bootstrap(y, p, q, f, resamples=200, groups=days) for f in (fast, plain))
        assert fast_pair == plain_pair and len(fast_pair.samples) == 200
