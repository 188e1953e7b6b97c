"""Debounce and cooldown of retraining triggers, and the live-performance verdict of one day."""

import numpy as np
import pytest

from ml_assets.ml.performance import live_performance
from ml_assets.ml.triggers import DayVerdict, cooldown_end, decide, flagged_streak


def verdicts(flags: dict[str, bool]) -> dict[str, DayVerdict]:
    return {day: DayVerdict(day, flagged, "figures" if flagged else "calm") for day, flagged in flags.items()}


def test_no_verdicts_is_no_request():
    decision = decide({}, signal="drift", debounce_days=3)
    assert not decision.request and "no day judged yet" in decision.reason


def test_debounce_needs_consecutive_flagged_days():
    flags = {"2013-03-01": True, "2013-03-02": True, "2013-03-03": False, "2013-03-04": True, "2013-03-05": True}
    decision = decide(verdicts(flags), signal="drift", debounce_days=3)
    assert not decision.request
    assert "2 of 3 consecutive flagged day(s)" in decision.reason and "latest 2013-03-05: figures" in decision.reason
    flags["2013-03-06"] = True
    decision = decide(verdicts(flags), signal="drift", debounce_days=3)
    assert decision.request and decision.as_of == "2013-03-06"
    assert decision.days == ("2013-03-04", "2013-03-05", "2013-03-06")


def test_a_calm_latest_day_resets_the_streak():
    flags = {"2013-03-01": True, "2013-03-02": True, "2013-03-03": True, "2013-03-04": False}
    assert flagged_streak(verdicts(flags)) == []
    assert not decide(verdicts(flags), signal="drift", debounce_days=3).request


def test_calendar_gaps_neither_break_nor_extend_a_streak():
    # 8-9 Feb failed their checks and were never judged.
    flags = {"2013-02-06": True, "2013-02-07": True, "2013-02-10": True}
    assert flagged_streak(verdicts(flags)) == ["2013-02-06", "2013-02-07", "2013-02-10"]
    assert decide(verdicts(flags), signal="drift", debounce_days=3).request


def test_cooldown_holds_a_streak_back_until_it_ends():
    flags = {f"2013-03-{d:02d}": True for d in range(1, 6)}
    until = cooldown_end("2013-02-20", 14)
    assert until == "2013-03-06"
    decision = decide(verdicts(flags), signal="drift", debounce_days=3, cooldown_until=until)
    assert not decision.request and "cooldown lasts until 2013-03-06" in decision.reason
    flags["2013-03-07"] = True
    decision = decide(verdicts(flags), signal="drift", debounce_days=3, cooldown_until=until)
    assert decision.request and decision.as_of == "2013-03-07"


def test_cooldown_end_without_a_previous_retrain():
    assert cooldown_end(None, 14) is None


def test_debounce_must_be_positive():
    with pytest.raises(ValueError, match="debounce_days"):
        decide(verdicts({"2013-03-01": True}), signal="drift", debounce_days=0)


def test_live_performance_drop_and_flag():
    y = np.array([0, 0, 1, 1] * 100)
    perfect = y.astype(float) * 0.8 + 0.1
    good = live_performance(y, perfect, metric="roc_auc", holdout_value=0.9, max_drop=0.05, min_rows=100)
    assert good.judged and not good.flagged and good.live == pytest.approx(1.0) and good.drop == pytest.approx(-0.1)
    inverted = 1.0 - perfect
    bad = live_performance(y, inverted, metric="roc_auc", holdout_value=0.9, max_drop=0.05, min_rows=100)
    assert bad.flagged and bad.drop == pytest.approx(0.9)
    assert "drop +0.900 > 0.05 on 400 rows" in bad.summary


def test_live_performance_lower_is_better_metric():
    y = np.array([0, 1] * 200)
    p = np.where(y == 1, 0.6, 0.4)
    result = live_performance(y, p, metric="brier", holdout_value=0.10, max_drop=0.05, min_rows=10)
    assert result.live == pytest.approx(0.16) and result.drop == pytest.approx(0.06) and result.flagged


def test_live_performance_too_few_rows_or_one_class_is_not_judged():
    few = live_performance(np.array([0, 1]), np.array([0.2, 0.8]), metric="roc_auc", holdout_value=0.7,
                           max_drop=0.05, min_rows=10)
    assert not few.judged and not few.flagged and "2 labelled rows < 10" in few.summary
    one_class = live_performance(np.zeros(50), np.full(50, 0.3), metric="roc_auc", holdout_value=0.7,
                                 max_drop=0.05, min_rows=10)
    assert not one_class.judged and "undefined" in one_class.note


def test_live_performance_needs_a_holdout_value():
    with pytest.raises(ValueError, match="no holdout roc_auc"):
        live_performance(np.array([0, 1]), np.array([0.2, 0.8]), metric="roc_auc", holdout_value=None,
                         max_drop=0.05, min_rows=1)
