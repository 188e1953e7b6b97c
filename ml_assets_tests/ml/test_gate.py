"""Promotion gate rules on hand-made evaluations (pure logic, no models)."""

import pytest

from ml_assets.ml.gate import InfraResult, decide
from ml_assets.spec.model import PromotionSpec

SPEC = PromotionSpec(
    absolute={"roc_auc": 0.6, "ece": 0.1},
    min_improvement={"roc_auc": 0.0},
    min_relative_improvement={"log_loss": 0.0},
    max_slice_regression={"roc_auc": 0.05},
    slice_dimensions=["cluster_id"],
    min_slice_size=100,
)
HEALTHY = InfraResult(loaded=True, answered=200, requested=200, p95_latency_ms=3.0, size_mb=1.5)


def evaluation(auc=0.70, ece=0.03, log_loss=0.50, slices=None):
    return {
        "overall": {"roc_auc": auc, "ece": ece, "log_loss": log_loss},
        "slices": {"cluster_id": slices or {"0": {"roc_auc": auc, "n": 500}, "1": {"roc_auc": auc, "n": 500}}},
    }


def failed_rules(verdict):
    return [(r.rule, r.metric, r.slice) for r in verdict.rows if not r.passed]


def test_better_candidate_passes_every_rule():
    verdict = decide(SPEC, evaluation(auc=0.72, log_loss=0.48), evaluation(auc=0.70), HEALTHY)
    assert verdict.passed and not verdict.failures
    beats = next(r for r in verdict.rows if r.rule == "beats champion")
    assert beats.delta == pytest.approx(0.02) and beats.champion == 0.70


def test_worse_challenger_fails():
    verdict = decide(SPEC, evaluation(auc=0.68, log_loss=0.52), evaluation(auc=0.70), HEALTHY)
    assert not verdict.passed
    assert ("beats champion", "roc_auc", "overall") in failed_rules(verdict)
    relative = next(r for r in verdict.rows if r.rule == "beats champion (relative)")
    assert not relative.passed and relative.delta == pytest.approx((0.50 - 0.52) / 0.50)


def test_slice_regression_fails_even_when_overall_improves():
    candidate = evaluation(auc=0.75, slices={"0": {"roc_auc": 0.80, "n": 500}, "1": {"roc_auc": 0.60, "n": 500}})
    champion = evaluation(auc=0.70, slices={"0": {"roc_auc": 0.70, "n": 500}, "1": {"roc_auc": 0.70, "n": 500}})
    verdict = decide(SPEC, candidate, champion, HEALTHY)
    assert failed_rules(verdict) == [("slice regression", "roc_auc", "cluster_id=1")]
    row = next(r for r in verdict.rows if r.slice == "cluster_id=1")
    assert row.delta == pytest.approx(-0.10) and row.threshold == 0.05


def test_small_and_undefined_slices_are_not_gated():
    candidate = evaluation(slices={"0": {"roc_auc": 0.1, "n": 20}, "1": {"roc_auc": None, "n": 500}})
    champion = evaluation(slices={"0": {"roc_auc": 0.9, "n": 20}, "1": {"roc_auc": 0.9, "n": 500}})
    verdict = decide(SPEC, candidate, champion, HEALTHY)
    assert not [r for r in verdict.rows if r.rule == "slice regression"]
    assert verdict.passed


def test_missing_metric_fails():
    candidate = evaluation()
    del candidate["overall"]["ece"]
    verdict = decide(SPEC, candidate, None, HEALTHY)
    assert not verdict.passed
    assert ("absolute", "ece", "overall") in failed_rules(verdict)
    assert "metric missing" in verdict.summary


def test_undefined_metric_fails_like_a_missing_one():
    verdict = decide(SPEC, evaluation(auc=None), evaluation(), HEALTHY)
    assert ("absolute", "roc_auc", "overall") in failed_rules(verdict)
    assert ("beats champion", "roc_auc", "overall") in failed_rules(verdict)


def test_no_thresholds_refuses():
    verdict = decide(PromotionSpec(), evaluation(auc=0.99), None, HEALTHY)
    assert not verdict.passed
    assert "no thresholds configured" in verdict.summary


def test_first_run_skips_relative_rules_but_keeps_absolute_bars():
    verdict = decide(SPEC, evaluation(auc=0.65), None, HEALTHY)
    assert verdict.passed
    skipped = [r for r in verdict.rows if r.note == "skipped: no champion yet"]
    assert {r.rule for r in skipped} == {"beats champion", "beats champion (relative)"}
    assert "first model" in verdict.summary
    below_bar = decide(SPEC, evaluation(auc=0.55), None, HEALTHY)
    assert failed_rules(below_bar) == [("absolute", "roc_auc", "overall")]


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
    verdict = decide(SPEC, evaluation(auc=0.72, log_loss=0.48), evaluation(), infra)
    assert not verdict.passed
    assert ("infra", metric, "overall") in failed_rules(verdict)


def test_forced_promotion_needs_a_reason_and_keeps_the_failures_visible():
    with pytest.raises(ValueError, match="written reason"):
        decide(SPEC, evaluation(auc=0.5), evaluation(), HEALTHY, force_reason="  ")
    verdict = decide(SPEC, evaluation(auc=0.5), evaluation(), HEALTHY, force_reason="hotfix for INC-42")
    assert verdict.passed and verdict.forced and verdict.forced_reason == "hotfix for INC-42"
    assert failed_rules(verdict)
    assert "FORCED" in verdict.summary


def test_markdown_table_lists_every_rule():
    verdict = decide(SPEC, evaluation(auc=0.68), evaluation(auc=0.70), HEALTHY)
    table = verdict.markdown()
    assert table.splitlines()[0].startswith("| rule | metric | slice | candidate | champion | delta | threshold")
    assert "| beats champion | roc_auc | overall | 0.6800 | 0.7000 | -0.0200 | 0.0000 | **FAIL**" in table
    assert len(table.splitlines()) == len(verdict.rows) + 2
