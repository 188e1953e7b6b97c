"""Rolling-origin folds (boundaries, no look-ahead) and selection on pooled fold predictions, on constructed data."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from ml_assets.ml.comparison import compare
from ml_assets.ml.folds import (
    FoldScores,
    fold_of_day,
    pool_folds,
    rolling_folds,
    select_candidate,
    unseen_scores,
)
from ml_assets.ml.gate import InfraResult, decide
from ml_assets.ml.training_set import choose_window
from ml_assets.spec.model import PromotionSpec

START = dt.date(2013, 1, 1)
DAYS = [(START + dt.timedelta(days=i)).isoformat() for i in range(70)]
SPEC = PromotionSpec(absolute={"roc_auc": 0.5})


def test_each_fold_trains_only_on_days_before_its_validation_days():
    folds = rolling_folds(DAYS, DAYS[-1], window_days=28, holdout_days=7, k=3)
    assert len(folds) == 3
    # Oldest first; the last is exactly the published model's window.
    assert folds[-1] == choose_window(DAYS, DAYS[-1], 28, 7)
    assert [f.holdout_days for f in folds] == [DAYS[-21:-14], DAYS[-14:-7], DAYS[-7:]]
    for fold in folds:
        assert len(fold.train_days) == 28 and len(fold.holdout_days) == 7
        assert max(fold.train_days) < min(fold.holdout_days)  # no look-ahead
        last_train = dt.date.fromisoformat(fold.train_days[-1])
        assert last_train + dt.timedelta(days=1) == dt.date.fromisoformat(fold.holdout_days[0])
    assert folds[0].train_days == DAYS[-49:-21]
    owner = fold_of_day(folds)
    assert set(owner) == set(DAYS[-21:]) and owner[DAYS[-1]] == 2 and owner[DAYS[-21]] == 0


def test_unlabelled_days_are_left_out_and_a_fold_too_early_is_named():
    gaps = [d for d in DAYS if d not in {DAYS[-10], DAYS[-30]}]
    folds = rolling_folds(gaps, None, window_days=28, holdout_days=7, k=2)
    assert DAYS[-10] not in folds[0].holdout_days + folds[1].holdout_days
    assert DAYS[-30] not in folds[0].train_days and len(folds[0].train_days) == 27
    with pytest.raises(ValueError, match=r"fold 1 of 10 .*need at least 7"):
        rolling_folds(DAYS, DAYS[-1], window_days=28, holdout_days=7, k=10)
    with pytest.raises(ValueError, match="at least 1"):
        rolling_folds(DAYS, None, 28, 7, k=0)


def _scores(rng, y, strength):
    return 1 / (1 + np.exp(-(strength * (2 * y - 1) + rng.normal(size=y.size))))


def test_selection_picks_the_candidate_with_the_better_pooled_score():
    rng = np.random.default_rng(3)
    # Three folds of 600 rows: B wins the latest fold by a little, A wins the two earlier ones by a lot.
    y = (rng.random(1800) < 0.3).astype(int)
    a = np.concatenate([_scores(rng, y[:1200], 1.5), _scores(rng, y[1200:], 0.8)])
    b = np.concatenate([_scores(rng, y[:1200], 0.6), _scores(rng, y[1200:], 1.0)])
    assert roc_auc_score(y[1200:], b[1200:]) > roc_auc_score(y[1200:], a[1200:])  # the latest fold alone: B
    days = np.repeat(np.arange(18), 100)
    selection = select_candidate(SPEC, y, {"b": b, "a": a}, days=days)
    assert selection.chosen == "a"
    assert selection.scores["a"] == pytest.approx(roc_auc_score(y, a))
    assert selection.scores["b"] == pytest.approx(roc_auc_score(y, b))
    difference = selection.comparison["overall"]["roc_auc"]
    assert selection.comparison["reference"] == "b" and difference["low"] > 0 and selection.established
    assert selection.rows == 1800
    # On the latest fold alone the same rule picks B.
    assert select_candidate(SPEC, y[1200:], {"a": a[1200:], "b": b[1200:]}).chosen == "b"


def test_selection_ties_and_lower_is_better_metrics_and_bad_input():
    rng = np.random.default_rng(4)
    y = (rng.random(500) < 0.4).astype(int)
    p = _scores(rng, y, 1.0)
    tie = select_candidate(SPEC, y, {"first": p, "second": p.copy()})
    assert tie.chosen == "first" and not tie.established  # identical scores: nothing established
    worse = np.clip(p + rng.normal(scale=0.3, size=y.size), 0.01, 0.99)
    by_loss = select_candidate(SPEC, y, {"noisy": worse, "clean": p}, metric="log_loss")
    assert by_loss.chosen == ("clean" if log_loss(y, p) < log_loss(y, worse) else "noisy")
    with pytest.raises(ValueError, match="'short' has 10 predictions for 500"):
        select_candidate(SPEC, y, {"ok": p, "short": p[:10]})
    with pytest.raises(ValueError, match="no candidates"):
        select_candidate(SPEC, y, {})


# --- the gate on pooled fold rows (constructed folds with a known answer) ---

GATE = PromotionSpec(absolute={"roc_auc": 0.6}, min_improvement={"roc_auc": 0.0}, baseline_margin={"roc_auc": -0.03},
                     max_slice_regression={"roc_auc": 0.05}, slice_dimensions=["cluster_id"], min_slice_size=100)
HEALTHY = InfraResult(loaded=True, answered=200, requested=200, p95_latency_ms=3.0, size_mb=1.5)


def constructed_fold(seed, day: str, signals: dict[str, float], n=2000, slice_signal=None) -> FoldScores:
    """One fold week: labels, three clusters, and each model's scores (ROC AUC grows with its signal).

    ``slice_signal`` = (label, cluster, signal) replaces that model's signal on one cluster.
    """
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    clusters = np.repeat([0, 1, 2], [n // 3, n // 3, n - 2 * (n // 3)])
    shared = rng.normal(size=n)
    scores = {}
    for label, signal in signals.items():
        per_row = np.full(n, signal)
        if slice_signal is not None and slice_signal[0] == label:
            per_row[clusters == slice_signal[1]] = slice_signal[2]
        scores[label] = 1 / (1 + np.exp(-(shared + 0.6 * rng.normal(size=n) + per_row * y)))
    return FoldScores(y, np.full(n, day), scores, pd.DataFrame({"cluster_id": clusters}))


def gate_on(spec, pooled, candidate="candidate", champion="champion", baseline="baseline"):
    """decide() on the pooled rows, as the evaluation step builds its comparisons."""
    rows = pooled.scored(candidate, champion)
    vs_champion = compare(spec, pooled.y[rows], pooled.scores[candidate][rows], pooled.scores[champion][rows],
                          reference=champion, metrics=["roc_auc"], slices=pooled.slices[rows].reset_index(drop=True),
                          days=pooled.days[rows])
    vs_baseline = compare(spec, pooled.y, pooled.scores[candidate], pooled.scores[baseline], reference=baseline,
                          metrics=["roc_auc"], days=pooled.days, gate_slices=False)
    evaluation = {"overall": {"roc_auc": 0.7}}
    return decide(spec, evaluation, evaluation, HEALTHY, vs_champion=vs_champion, vs_baseline=vs_baseline)


def test_a_known_small_improvement_is_established_on_three_pooled_folds_far_more_often_than_on_one():
    signals = {"candidate": 0.88, "champion": 0.8, "baseline": 0.8}  # about +0.02 of ROC AUC on every fold
    one_fold = pooled_folds = 0
    for seed in range(20):
        folds = [constructed_fold([seed, j], f"2013-01-{j + 1:02d}", signals) for j in range(3)]
        one_fold += gate_on(GATE, pool_folds(folds[-1:])).passed
        pooled_folds += gate_on(GATE, pool_folds(folds)).passed
    # Three times the rows: the same improvement's interval clears 0 almost always (power ~95% vs ~65%).
    assert pooled_folds >= 18
    assert one_fold <= 15


def test_a_reseed_on_pooled_folds_passes_non_inferiority_and_trips_no_slice_rule():
    # Non-inferiority passes an equal model ~95% of the time only when the margin is >= ~3.6 standard errors
    # of the paired difference (1.96 for the interval + 1.645): here the se is ~0.0055 on 6000 rows.
    refresh = GATE.model_copy(update={"policy": "non_inferiority", "min_improvement": {"roc_auc": 0.02}})
    signals = {"candidate": 0.8, "champion": 0.8, "baseline": 0.8}  # same configuration, another seed
    for seed in range(10):
        pooled = pool_folds([constructed_fold([seed, j], f"2013-01-{j + 1:02d}", signals) for j in range(3)])
        verdict = gate_on(refresh, pooled)
        assert verdict.passed, verdict.summary
        assert all(r.passed for r in gate_on(GATE, pooled).rows if r.rule == "slice regression")


def test_a_known_slice_regression_on_pooled_folds_fails_that_slice_only():
    signals = {"candidate": 1.8, "champion": 0.8, "baseline": 0.8}  # better overall ...
    folds = [constructed_fold([7, j], f"2013-01-{j + 1:02d}", signals, slice_signal=("candidate", 2, 0.0))
             for j in range(3)]  # ... but blind on cluster 2 in every fold
    verdict = gate_on(GATE, pool_folds(folds))
    failed = [(r.rule, r.slice) for r in verdict.rows if not r.passed]
    assert failed == [("slice regression", "cluster_id=2")]
    regressed = next(r for r in verdict.rows if r.slice == "cluster_id=2")
    assert regressed.n == 3 * (2000 - 2 * (2000 // 3)) and regressed.high < -0.05


def test_the_champion_is_judged_only_on_days_it_did_not_train_on():
    signals = {"candidate": 0.8, "champion": 0.8, "baseline": 0.8}
    folds = [constructed_fold([3, j], f"2013-01-{j + 1:02d}", signals) for j in range(3)]
    # the champion trained on 01-01 (the oldest fold's day): its scores there must not be judged
    folds[0] = FoldScores(folds[0].y, folds[0].days, {**folds[0].scores, "champion": unseen_scores(
        folds[0].days, ["2012-12-31", "2013-01-01"], folds[0].scores["champion"])}, folds[0].slices)
    pooled = pool_folds(folds)
    assert pooled.folds == 3 and pooled.y.size == 6000
    assert pooled.days_of(pooled.scored("candidate", "champion")) == ["2013-01-02", "2013-01-03"]
    assert pooled.days_of(pooled.scored("candidate")) == ["2013-01-01", "2013-01-02", "2013-01-03"]
    verdict = gate_on(GATE, pooled)
    assert next(r for r in verdict.rows if r.rule == "beats champion").n == 4000
    assert next(r for r in verdict.rows if r.rule == "beats baseline").n == 6000
    # no recorded training days: the model counts as trained on every day
    assert np.isnan(unseen_scores(["2013-01-02"], None, [0.3])).all()


def test_pooling_names_bad_folds():
    fold = constructed_fold(0, "2013-01-01", {"candidate": 0.8})
    with pytest.raises(ValueError, match="no folds"):
        pool_folds([])
    with pytest.raises(ValueError, match="fold 0: 'candidate' has 3 scores for 2000 rows"):
        pool_folds([FoldScores(fold.y, fold.days, {"candidate": [0.1, 0.2, 0.3]})])
    with pytest.raises(ValueError, match="slice columns given for some folds only"):
        pool_folds([fold, FoldScores(fold.y, fold.days, fold.scores)])
    with pytest.raises(ValueError, match="no scores for 'champion'"):
        pool_folds([fold]).scored("champion")
    with pytest.raises(ValueError, match="3 scores for 1 days"):
        unseen_scores(["2013-01-01"], [], [0.1, 0.2, 0.3])
