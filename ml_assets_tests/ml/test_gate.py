"""Promotion gate rules: paired comparisons on constructed data with a known answer, and the plain rules."""

import numpy as np
import pandas as pd
import pytest

from ml_assets.ml.comparison import compare
from ml_assets.ml.gate import InfraResult, decide
from ml_assets.spec.model import PromotionSpec

SPEC = PromotionSpec(
    absolute={"roc_auc": 0.6, "ece": 0.1},
    min_improvement={"roc_auc": 0.0},
    max_slice_regression={"roc_auc": 0.05},
    slice_dimensions=["cluster_id"],
    min_slice_size=100,
    baseline_margin={"roc_auc": 0.0},
)
HEALTHY = InfraResult(loaded=True, answered=200, requested=200, p95_latency_ms=3.0, size_mb=1.5)
N = 3000


def holdout(seed=0):
    """Labels, three clusters of 1000 rows, and a latent score shared by every model (same rows)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(N) < 0.3).astype(int)
    slices = pd.DataFrame({"cluster_id": np.repeat([0, 1, 2], N // 3)})
    return rng, y, slices, rng.normal(size=N)


def model(rng, y, shared, signal, noise=0.6):
    """Probabilities whose ROC AUC grows with ``signal``; ``noise`` is the model's own (seed) part."""
    score = shared + noise * rng.normal(size=N) + signal * y
    return 1 / (1 + np.exp(-score))


def evaluation(auc=0.70, ece=0.03):
    return {"overall": {"roc_auc": auc, "ece": ece}, "slices": {}}


def judge(spec, y, slices, p_candidate, p_champion, p_baseline):
    vs_champion = None if p_champion is None else compare(
        spec, y, p_candidate, p_champion, reference="champion", metrics=list(spec.min_improvement), slices=slices)
    vs_baseline = compare(spec, y, p_candidate, p_baseline, reference="baseline", metrics=list(spec.baseline_margin),
                          gate_slices=False)
    return decide(spec, evaluation(), None if p_champion is None else evaluation(), HEALTHY,
                  vs_champion=vs_champion, vs_baseline=vs_baseline)


def failed_rules(verdict):
    return [(r.rule, r.metric, r.slice) for r in verdict.rows if not r.passed]


def row(verdict, rule, where="overall"):
    return next(r for r in verdict.rows if r.rule == rule and r.slice == where)


def test_a_known_improvement_passes_with_its_interval():
    rng, y, slices, shared = holdout()
    champion, baseline = model(rng, y, shared, 1.0), model(rng, y, shared, 0.7)
    verdict = judge(SPEC, y, slices, model(rng, y, shared, 1.5), champion, baseline)
    assert verdict.passed, verdict.summary
    beats = row(verdict, "beats champion")
    assert beats.low > 0 and beats.low < beats.delta < beats.high and beats.n == N
    assert "superiority" in beats.criterion
    assert row(verdict, "beats baseline").low > 0


def test_a_reseed_of_the_champion_is_blocked_under_superiority_and_passes_non_inferiority():
    rng, y, slices, shared = holdout(2)  # z of the AUC difference: +0.02 (N(0, 1) over 300 holdouts)
    champion, reseed, baseline = model(rng, y, shared, 1.0), model(rng, y, shared, 1.0), model(rng, y, shared, 0.5)
    verdict = judge(SPEC, y, slices, reseed, champion, baseline)
    assert failed_rules(verdict) == [("beats champion", "roc_auc", "overall")]
    beats = row(verdict, "beats champion")
    assert beats.low < 0 < beats.high  # the difference is noise: the interval straddles 0
    refresh = SPEC.model_copy(update={"policy": "non_inferiority", "min_improvement": {"roc_auc": 0.02}})
    verdict = judge(refresh, y, slices, reseed, champion, baseline)
    assert verdict.passed, verdict.summary
    assert row(verdict, "beats champion").threshold == -0.02


def test_a_known_slice_regression_fails_after_correction_while_noise_on_others_does_not():
    rng, y, slices, shared = holdout(6)
    champion, baseline = model(rng, y, shared, 1.0), model(rng, y, shared, 0.5)
    candidate = model(rng, y, shared, 1.4)
    broken = slices["cluster_id"].to_numpy() == 1
    candidate[broken] = rng.random(int(broken.sum()))  # no signal at all on cluster 1
    for correction in ("holm", "bh"):
        verdict = judge(SPEC.model_copy(update={"slice_correction": correction}), y, slices, candidate, champion,
                        baseline)
        assert ("slice regression", "roc_auc", "cluster_id=1") in failed_rules(verdict)
        assert not [f for f in failed_rules(verdict) if f[2] in ("cluster_id=0", "cluster_id=2")]
        regressed = row(verdict, "slice regression", "cluster_id=1")
        assert regressed.p_value < 0.05 and regressed.high < -0.05 and regressed.n == 1000
        assert regressed.positives == int(y[broken].sum()) and correction in regressed.criterion


def test_slices_without_enough_of_both_classes_are_listed_not_gated():
    rng, y, slices, shared = holdout(3)
    y[:1000] = 0
    y[:5] = 1  # cluster 0: 5 positives
    champion, baseline = model(rng, y, shared, 1.0), model(rng, y, shared, 0.5)
    candidate = model(rng, y, shared, 1.3)
    candidate[:1000] = rng.random(1000)
    verdict = judge(SPEC, y, slices, candidate, champion, baseline)
    small = row(verdict, "slice regression", "cluster_id=0")
    assert small.passed and "not gated" in small.note and small.positives == 5 and small.n == 1000


def test_the_baseline_must_be_beaten_even_without_a_champion():
    rng, y, slices, shared = holdout(4)
    weak, baseline = model(rng, y, shared, 0.8), model(rng, y, shared, 1.2)
    verdict = judge(SPEC, y, slices, weak, None, baseline)
    assert failed_rules(verdict) == [("beats baseline", "roc_auc", "overall")]
    assert row(verdict, "beats baseline").delta < 0


def test_first_run_skips_champion_rules_but_keeps_absolute_bars():
    verdict = decide(SPEC.model_copy(update={"baseline_margin": {}}), evaluation(auc=0.65), None, HEALTHY)
    assert verdict.passed
    assert {r.rule for r in verdict.rows if r.note == "skipped: no champion yet"} == {"beats champion"}
    assert "first model" in verdict.summary
    below_bar = decide(SPEC.model_copy(update={"baseline_margin": {}}), evaluation(auc=0.55), None, HEALTHY)
    assert failed_rules(below_bar) == [("absolute", "roc_auc", "overall")]


def test_missing_comparisons_and_metrics_fail_closed():
    verdict = decide(SPEC, evaluation(), evaluation(), HEALTHY)  # champion but no paired comparison
    failed = failed_rules(verdict)
    assert ("beats champion", "roc_auc", "overall") in failed and ("beats baseline", "roc_auc", "overall") in failed
    assert ("slice regression", "-", "overall") in failed
    candidate = evaluation()
    del candidate["overall"]["ece"]
    verdict = decide(SPEC.model_copy(update={"baseline_margin": {}}), candidate, None, HEALTHY)
    assert failed_rules(verdict) == [("absolute", "ece", "overall")] and "metric missing" in verdict.summary
    undefined = {"overall": {"roc_auc": {"error": "DeLong needs at least 2 positives"}}, "dimensions": ["cluster_id"],
                 "slices": []}
    verdict = decide(SPEC, evaluation(auc=None), evaluation(), HEALTHY, vs_champion=undefined, vs_baseline=undefined)
    assert {("absolute", "roc_auc", "overall"), ("beats champion", "roc_auc", "overall")} <= set(failed_rules(verdict))


def test_no_thresholds_refuses():
    verdict = decide(PromotionSpec(), evaluation(auc=0.99), None, HEALTHY)
    assert not verdict.passed and "no thresholds configured" in verdict.summary


@pytest.mark.parametrize(
    ("infra", "metric"),
    [
        (InfraResult(loaded=False, answered=0, requested=200, p95_latency_ms=None, size_mb=1.0,
                     error="sha256 mismatch"), "loads"),
        (InfraResult(loaded=True, answered=150, requested=200, p95_latency_ms=3.0, size_mb=1.0), "sample requests answered"),
        (InfraResult(loaded=True, answered=200, requested=200, p95_latency_ms=80.0, size_mb=1.0), "p95 latency ms"),
        (InfraResult(loaded=True, answered=200, requested=200, p95_latency_ms=3.0, size_mb=900.0), "size MB"),
    ],
    ids=["does-not-load", "unanswered", "slow", "too-big"],
)
def test_infra_failures_fail_the_gate(infra, metric):
    verdict = decide(SPEC.model_copy(update={"baseline_margin": {}}), evaluation(), None, infra)
    assert failed_rules(verdict) == [("infra", metric, "overall")]


def test_forced_promotion_needs_a_reason_and_keeps_the_failures_visible():
    with pytest.raises(ValueError, match="written reason"):
        decide(SPEC, evaluation(auc=0.5), evaluation(), HEALTHY, force_reason="  ")
    verdict = decide(SPEC, evaluation(auc=0.5), evaluation(), HEALTHY, force_reason="hotfix for INC-42")
    assert verdict.passed and verdict.forced and verdict.forced_reason == "hotfix for INC-42"
    assert failed_rules(verdict) and "FORCED" in verdict.summary


def test_markdown_table_shows_estimate_interval_rule_and_slice_counts():
    rng, y, slices, shared = holdout(5)
    verdict = judge(SPEC, y, slices, model(rng, y, shared, 1.3), model(rng, y, shared, 1.0),
                    model(rng, y, shared, 0.5))
    table = verdict.markdown()
    assert table.splitlines()[0].startswith(
        "| rule | metric | slice | n (pos) | candidate | reference | estimate | interval | criterion | adj. p")
    beats = row(verdict, "beats champion")
    assert f"| [{beats.low:+.4f}, {beats.high:+.4f}] | lower end > +0.0000 (superiority, 95% interval)" in table
    cluster = row(verdict, "slice regression", "cluster_id=2")
    assert f"| cluster_id=2 | 1000 ({cluster.positives}) |" in table and f"| {cluster.p_value:.4f} | pass" in table
    assert len(table.splitlines()) == len(verdict.rows) + 2


def test_paired_bootstrap_over_days_for_a_lower_is_better_metric():
    rng, y, slices, shared = holdout(7)
    spec = SPEC.model_copy(update={"min_improvement": {"log_loss": 0.0}, "max_slice_regression": {"log_loss": 0.02},
                                   "baseline_margin": {}, "bootstrap_unit": "day", "bootstrap_resamples": 200})
    days = np.repeat([f"2013-03-0{d}" for d in range(1, 7)], N // 6)
    champion, candidate = model(rng, y, shared, 1.0), model(rng, y, shared, 2.0)
    vs_champion = compare(spec, y, candidate, champion, reference="champion", metrics=["log_loss"],
                          slices=slices, days=days)
    assert vs_champion["overall"]["log_loss"]["method"] == "bootstrap"
    verdict = decide(spec, evaluation(), evaluation(), HEALTHY, vs_champion=vs_champion)
    beats = row(verdict, "beats champion")
    assert verdict.passed and beats.delta > 0 and beats.low > 0  # lower log loss = improvement
    # Each cluster spans two days only: a day bootstrap inside it still runs (2 groups).
    assert all(r.n == 1000 for r in verdict.rows if r.rule == "slice regression")
    again = compare(spec, y, candidate, champion, reference="champion", metrics=["log_loss"], slices=slices, days=days)
    assert again == vs_champion  # seeded


# --- absolute bars judged with the candidate's own interval (ECE after calibration) ------------------


def _scored(n, seed, shift):
    """Labels drawn from a true probability, and predictions ``shift`` above it (ECE about ``shift``)."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.05, 0.75, n)
    y = (rng.random(n) < truth).astype(int)
    return y, np.clip(truth + shift, 0.0, 1.0), rng.integers(0, 7, n)


def _absolute_verdict(y, p, days=None, with_intervals=True):
    from ml_assets.ml.evaluation import compute_metrics
    from ml_assets.ml.gate import absolute_intervals

    spec = PromotionSpec(absolute={"roc_auc": 0.6, "ece": 0.1}, bootstrap_resamples=400,
                         bootstrap_unit="row" if days is None else "day")
    candidate = {"overall": compute_metrics(y, p).as_dict(), "slices": {}}
    if with_intervals:
        candidate["intervals"] = absolute_intervals(spec, y, p, days)
    return decide(spec, candidate, None, HEALTHY), candidate


def test_a_calibrated_candidate_passes_the_ece_bar_and_the_table_shows_estimate_interval_and_rule():
    y, p, _ = _scored(4000, seed=1, shift=0.0)
    verdict, candidate = _absolute_verdict(y, p)
    ece = next(r for r in verdict.rows if r.rule == "absolute" and r.metric == "ece")
    assert ece.passed and ece.candidate < 0.03
    assert ece.low <= ece.candidate <= ece.high and ece.high < 0.1
    assert candidate["intervals"]["ece"]["estimate"] == pytest.approx(candidate["overall"]["ece"])
    line = next(x for x in verdict.markdown().splitlines() if x.startswith("| absolute | ece"))
    assert f"[{ece.low:.4f}, {ece.high:.4f}]" in line and "lower end is above 0.1000 (95% interval)" in line


def test_a_clearly_miscalibrated_candidate_fails_the_ece_bar():
    y, p, _ = _scored(4000, seed=2, shift=0.2)
    verdict, _ = _absolute_verdict(y, p)
    ece = next(r for r in verdict.rows if r.metric == "ece")
    assert not ece.passed and ece.low > 0.1
    assert "interval wholly above the bar" in ece.note
    assert "|mean p - positive rate| = 0.2" in ece.note  # the whole miss is in the large here
    assert ("absolute", "ece", "overall") in failed_rules(verdict)


def test_an_ece_above_the_bar_within_its_interval_passes_but_fails_on_the_point_estimate():
    y, p, days = _scored(160, seed=3, shift=0.11)
    verdict, _ = _absolute_verdict(y, p, days=days)  # whole days resampled
    ece = next(r for r in verdict.rows if r.metric == "ece")
    assert ece.candidate > 0.1 > ece.low  # the known answer: a miss not established at 95%
    assert ece.passed
    without, _ = _absolute_verdict(y, p, with_intervals=False)
    point = next(r for r in without.rows if r.metric == "ece")
    assert not point.passed and "point estimate" in point.criterion
