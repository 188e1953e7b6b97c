"""The dataset drift rule (count vs champion-importance weighting, any-of-top-k) and permutation importance,
on constructed data whose answer is known."""

import numpy as np
import pandas as pd
import pytest

from ml_assets.ml.drift import DriftThresholds, drift, reference_stats
from ml_assets.ml.drift_rule import judge
from ml_assets.ml.importance import permutation_importance, weights

NAMES = [f"x{i}" for i in range(10)]
# x0 carries 70% of the model, x1 20%, x2 10%, the other seven nothing.
IMPORTANCE = {"x0": 0.14, "x1": 0.04, "x2": 0.02, **{f"x{i}": 0.0 for i in range(3, 10)}}


def _frame(n: int, seed: int, shifted: tuple[str, ...] = ()) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.normal(0, 1, n) for name in NAMES})
    for name in shifted:
        frame[name] += 1.5  # PSI ~ 2: far over 0.2
    return frame


@pytest.fixture(scope="module")
def reference():
    return reference_stats(_frame(5000, seed=1), NAMES, [], ["2024-01-01"])


def _report(reference, shifted):
    return drift(reference, _frame(1000, seed=2, shifted=shifted), DriftThresholds(), p_values=False)


def test_one_important_feature_drifting_is_missed_by_the_count_and_caught_by_importance(reference):
    report = _report(reference, ("x0",))
    assert report.drifted_features == ["x0"]
    by_count = judge(report, share_threshold=0.5)
    assert not by_count.drifted and by_count.share == pytest.approx(0.1)
    by_importance = judge(report, share_threshold=0.5, weighting="importance", importance=IMPORTANCE)
    assert by_importance.drifted and by_importance.share == pytest.approx(0.7)
    assert "70% of importance >= 50%" in by_importance.summary


def test_many_unused_features_drifting_flag_by_count_but_not_by_importance(reference):
    unused = tuple(f"x{i}" for i in range(3, 9))  # 6 of 10 features, none used by the model
    report = _report(reference, unused)
    assert judge(report, share_threshold=0.5).drifted
    verdict = judge(report, share_threshold=0.5, weighting="importance", importance=IMPORTANCE)
    assert not verdict.drifted and verdict.share == 0.0


def test_stable_day_is_not_flagged_under_either_rule(reference):
    report = _report(reference, ())
    assert report.drifted_features == []
    assert not judge(report, share_threshold=0.5).drifted
    assert not judge(report, share_threshold=0.1, weighting="importance", importance=IMPORTANCE, any_of_top=3).drifted


def test_any_of_top_k_flags_a_drifted_top_feature_only(reference):
    second = _report(reference, ("x1",))  # the second most important: 20% of importance
    assert not judge(second, share_threshold=0.5, weighting="importance", importance=IMPORTANCE).drifted
    verdict = judge(second, share_threshold=0.5, importance=IMPORTANCE, any_of_top=2)
    assert verdict.drifted and verdict.top_drifted == ["x1"] and "top 2 by importance: x1 drifted" in verdict.summary
    assert not judge(second, share_threshold=0.5, importance=IMPORTANCE, any_of_top=1).drifted


def test_excluded_features_leave_the_weights_and_the_rest_renormalise(reference):
    report = drift(reference, _frame(1000, seed=2, shifted=("x1",)), DriftThresholds(), p_values=False,
                   exclude_from_share=["x0"])
    verdict = judge(report, share_threshold=0.5, weighting="importance", importance=IMPORTANCE)
    assert "x0" not in verdict.weights and verdict.share == pytest.approx(0.04 / 0.06)
    assert verdict.drifted


def test_bad_rule_settings_are_named():
    report = drift(reference_stats(_frame(200, 1), NAMES, [], ["d"]), _frame(200, 2), DriftThresholds())
    with pytest.raises(ValueError, match="needs the champion's feature importance"):
        judge(report, share_threshold=0.5, weighting="importance")
    with pytest.raises(ValueError, match="weighting must be count or importance"):
        judge(report, share_threshold=0.5, weighting="gini")
    with pytest.raises(ValueError, match="share_threshold"):
        judge(report, share_threshold=0.0)


def test_weights_sum_to_one_and_fall_back_to_equal_shares():
    assert weights(IMPORTANCE, NAMES) == pytest.approx({"x0": 0.7, "x1": 0.2, "x2": 0.1,
                                                        **{f"x{i}": 0.0 for i in range(3, 10)}})
    assert weights({name: 0.0 for name in NAMES}, ["x0", "x1"]) == {"x0": 0.5, "x1": 0.5}
    assert weights({"x0": 1.0}, ["x0", "unknown"]) == {"x0": 1.0, "unknown": 0.0}


def test_permutation_importance_finds_the_features_a_known_model_uses():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"strong": rng.normal(size=4000), "weak": rng.normal(size=4000),
                          "unused": rng.normal(size=4000)})

    def predict(f: pd.DataFrame) -> np.ndarray:
        return 1 / (1 + np.exp(-(2.0 * f["strong"].to_numpy() + 0.5 * f["weak"].to_numpy())))

    y = (rng.random(4000) < predict(frame)).astype(int)
    importance = permutation_importance(predict, frame, y, ["strong", "weak", "unused"], repeats=3)
    assert importance["unused"] == 0.0  # the model never reads it: shuffling changes nothing
    assert importance["strong"] > 5 * importance["weak"] > 0
    with pytest.raises(ValueError, match="both classes"):
        permutation_importance(predict, frame, np.zeros(4000), ["strong"])
    with pytest.raises(KeyError, match="missing_column"):
        permutation_importance(predict, frame, y, ["missing_column"])


def test_count_weighting_words_its_verdict_as_before(reference):
    # Specs on the default rule (flights) keep the exact summary their timelines and emails show.
    verdict = judge(_report(reference, ("x0", "x1", "x2", "x3")), share_threshold=0.4)
    assert verdict.drifted and verdict.summary == "4/10 features drifted (40% >= 40%)"
