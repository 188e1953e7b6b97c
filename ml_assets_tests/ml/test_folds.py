"""Rolling-origin folds (boundaries, no look-ahead) and selection on pooled fold predictions, on constructed data."""

import datetime as dt

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from ml_assets.ml.folds import fold_of_day, rolling_folds, select_candidate
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
