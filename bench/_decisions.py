"""Pieces of bench_decisions.py: judging a case on one or pooled fold weeks, and the ceiling of any holdout rule.

A case is a challenger against a reference (the champion) at one as-of date. Its ``folds`` list
(latest first) holds, per rolling-origin fold week, the rows and the full-length prediction
arrays of the candidate configuration's model for that fold, the reference and the baseline
refitted for that fold. "holdout" judges fold 0 alone (the single holdout week, as the gate ran
before); "folds_k" judges the pooled rows of the k fold weeks - the criterion selection uses.
"""

from __future__ import annotations

import numpy as np

from ml_assets.ml.comparison import compare
from ml_assets.ml.evaluation import compute_metrics
from ml_assets.ml.gate import InfraResult, absolute_intervals, decide
from ml_assets.ml.stats import delong_auc_difference

INFRA_OK = InfraResult(loaded=True, answered=1, requested=1, p95_latency_ms=1.0, size_mb=1.0)
BARS = {"roc_auc": 0.6, "ece": 0.1}  # every absolute bar a setting uses: intervals computed for these


def pooled(case: dict, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, candidate, reference, baseline) on the pooled rows of the case's latest ``k`` fold weeks."""
    folds = case["folds"][:k]
    rows = np.concatenate([f["rows"] for f in folds])
    pick = [np.concatenate([f[key][f["rows"]] for f in folds]) for key in ("candidate", "reference", "baseline")]
    return rows, *pick


def intervals_if_needed(promotion, y, p, days) -> dict:
    """The candidate's absolute-bar intervals, as the evaluation step stores them.

    The bootstrap costs seconds per call, so it runs only for a bar in BARS the point estimate
    misses: a point estimate on the right side of a bar leaves the interval's far end on the right
    side too, and the rule (fail only when the WHOLE interval misses) passes either way.
    """
    metrics = compute_metrics(y, p, promotion.decision_threshold)
    missed = {metric: bar for metric, bar in BARS.items()
              if (metrics.roc_auc is None or metrics.roc_auc < bar if metric == "roc_auc" else metrics.ece > bar)}
    if not missed:
        return {}
    return absolute_intervals(promotion.model_copy(update={"absolute": missed}), y, p, days)


def judge(promotion, y, p_candidate, p_reference, p_baseline, slices, days, intervals: dict):
    """decide() as the promotion check runs it, on the given rows: (passed, failed rule names)."""
    champion_metrics = sorted({*promotion.min_improvement, *promotion.min_relative_improvement, "roc_auc"})
    vs_champion = compare(promotion, y, p_candidate, p_reference, reference="champion", metrics=champion_metrics,
                          slices=slices, days=days)
    vs_baseline = compare(promotion, y, p_candidate, p_baseline, reference="baseline",
                          metrics=sorted({*promotion.baseline_margin, "roc_auc"}), days=days, gate_slices=False)
    candidate = {"overall": compute_metrics(y, p_candidate, promotion.decision_threshold).as_dict(),
                 "intervals": intervals}
    champion = {"overall": compute_metrics(y, p_reference, promotion.decision_threshold).as_dict()}
    verdict = decide(promotion, candidate, champion, INFRA_OK, vs_champion=vs_champion, vs_baseline=vs_baseline)
    failed = sorted({row.rule + ("" if row.slice == "overall" else " (slice)") + f" {row.metric}"
                     for row in verdict.rows if not row.passed})
    return verdict.passed, failed


def auc_delta(y, p_a, p_b) -> tuple[float, float]:
    """ROC AUC of A minus B on the same rows, and DeLong's standard error of it."""
    difference = delong_auc_difference(y, p_a, p_b)
    return float(difference.estimate), float(difference.se)


def rate(hits: int, total: int) -> float | None:
    return None if total == 0 else round(hits / total, 3)


def oracle_table(predictor: np.ndarray, truth: np.ndarray, better: float) -> dict:
    """Pass rule "predictor >= t" judged against truth classes (better >= +better, worse <= -better).

    The best any rule reading ``predictor`` alone can do: for each threshold t, better-passed and
    worse-passed rates, and whether one t meets both goals (>= 80% and <= 5%).
    """
    is_better, is_worse = truth >= better, truth <= -better
    rows, reachable = [], []
    for t in (-0.02, -0.01, -0.005, 0.0, 0.005, 0.01, 0.015, 0.02, 0.03):
        passed = predictor >= t
        entry = {"threshold": t, "better_passed": rate(int(np.sum(passed & is_better)), int(is_better.sum())),
                 "worse_passed": rate(int(np.sum(passed & is_worse)), int(is_worse.sum()))}
        rows.append(entry)
        if (entry["better_passed"] or 0) >= 0.8 and (entry["worse_passed"] or 0) <= 0.05:
            reachable.append(t)
    return {"better": int(is_better.sum()), "worse": int(is_worse.sum()), "by_threshold": rows,
            "thresholds_meeting_both_goals": reachable}


def self_agreement(y, cases: list[dict], better: float, splits: int = 20, seed: int = 0) -> dict:
    """The future week against itself: split its rows in two halves (random rows, or alternate days).

    Half A's delta predicts half B's class. Both halves are the SAME week (no time passes, same
    days for the row split), so this is an upper bound on how well a holdout week - one week
    earlier - can predict the future week's class, at half the rows (noise is sqrt(2) larger than
    on the full week, which is why the full week's DeLong standard error is reported too).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for how in ("rows", "days"):
        a_all, b_all = [], []
        for _repeat in range(splits if how == "rows" else 1):
            for c in cases:
                rows = c["future"]
                if how == "rows":
                    half = rng.random(rows.size) < 0.5
                else:
                    day_index = np.unique(c["future_days"], return_inverse=True)[1]
                    half = day_index % 2 == 0
                a = auc_delta(y[rows[half]], c["p_future"][rows[half]], c["champion_future"][rows[half]])[0]
                b = auc_delta(y[rows[~half]], c["p_future"][rows[~half]], c["champion_future"][rows[~half]])[0]
                a_all.append(a)
                b_all.append(b)
        a_all, b_all = np.array(a_all), np.array(b_all)
        out[how] = {"pairs": int(a_all.size), "repeats": splits if how == "rows" else 1,
                    "correlation": round(float(np.corrcoef(a_all, b_all)[0, 1]), 3),
                    "same_sign": rate(int(np.sum(np.sign(a_all) == np.sign(b_all))), a_all.size),
                    "oracle_on_half_a": oracle_table(a_all, b_all, better)}
    return out


def tally(promotion, cases: list[dict], judged: dict, slice_columns, y, dates, better: float) -> dict:
    """One gate setting on one judgement mode: the counts, rates and goals of every case."""
    counts = {k: 0 for k in ("better", "better_passed", "worse", "worse_passed", "indifferent",
                             "indifferent_passed", "worse_any", "worse_any_passed", "poisoned",
                             "poisoned_blocked", "reseeds", "reseeds_blocked", "reseeds_flagged_regression")}
    failures: dict[str, int] = {}
    missed_poison = []
    for index, c in enumerate(cases):
        rows, p_candidate, p_reference, p_baseline, intervals = judged[index]
        slices = slice_columns.iloc[rows].reset_index(drop=True)
        passed, failed = judge(promotion, y[rows], p_candidate, p_reference, p_baseline, slices, dates[rows],
                               intervals)
        for rule in failed:
            failures[f"{c['kind']}: {rule}"] = failures.get(f"{c['kind']}: {rule}", 0) + 1
        if c["kind"] == "natural":
            group = ("better" if c["future_delta"] >= better else "worse" if c["future_delta"] <= -better
                     else "indifferent")
            counts[group] += 1
            counts[f"{group}_passed"] += passed
            if c["future_delta"] < 0:
                counts["worse_any"] += 1
                counts["worse_any_passed"] += passed
        elif c["kind"] == "poisoned":
            counts["poisoned"] += 1
            counts["poisoned_blocked"] += not passed
            if passed:
                missed_poison.append(f"{c['as_of']} {c['candidate']}")
        else:
            counts["reseeds"] += 1
            counts["reseeds_blocked"] += not passed
            # "beats champion" under superiority is not a regression: an identical configuration is not better
            regression = [r for r in failed if not (promotion.policy == "superiority"
                                                    and r.startswith("beats champion"))]
            counts["reseeds_flagged_regression"] += bool(regression)
    reseed_blocked = counts["reseeds_flagged_regression"] if promotion.policy == "superiority" else \
        counts["reseeds_blocked"]
    goals = {
        "poisoned_blocked_100pct": counts["poisoned_blocked"] == counts["poisoned"],
        "reseeds_blocked_le_5pct": reseed_blocked <= 0.05 * counts["reseeds"],
        "worse_passed_le_5pct": counts["worse_passed"] <= 0.05 * max(counts["worse"], 1),
        "better_passed_ge_80pct": counts["better_passed"] >= 0.8 * counts["better"],
    }
    return {
        "counts": counts,
        "rates": {"better_passed": rate(counts["better_passed"], counts["better"]),
                  "worse_passed": rate(counts["worse_passed"], counts["worse"]),
                  "worse_any_passed": rate(counts["worse_any_passed"], counts["worse_any"]),
                  "indifferent_passed": rate(counts["indifferent_passed"], counts["indifferent"]),
                  "poisoned_blocked": rate(counts["poisoned_blocked"], counts["poisoned"]),
                  "reseeds_blocked": rate(counts["reseeds_blocked"], counts["reseeds"]),
                  "reseeds_flagged_regression": rate(counts["reseeds_flagged_regression"], counts["reseeds"])},
        "goals": goals, "poisoned_passed": missed_poison,
        "failed_rules": dict(sorted(failures.items(), key=lambda kv: -kv[1])),
    }
