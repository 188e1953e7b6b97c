"""Evaluation metrics against hand-computed values and scikit-learn; tables and plots."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from ml_assets.ml.evaluation import (
    HIGHER_IS_BETTER,
    METRICS,
    MISSING_SLICE,
    calibration,
    compute_metrics,
    evaluate,
    metrics_table_markdown,
    plot_evaluation,
    slice_table_markdown,
)

# Six points, each alone in its decile bin.
Y6 = np.array([0, 0, 1, 1, 0, 1])
P6 = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.9])


def _close(a, b):
    """Metrics equal up to float summation order."""
    da, db = a.as_dict(), b.as_dict()
    assert da.keys() == db.keys()
    for key in da:
        if da[key] is None or db[key] is None:
            assert da[key] is db[key], key
        else:
            assert da[key] == pytest.approx(db[key], rel=1e-12, abs=1e-15), key
    return True


def _synthetic(n=5000, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    p = 1 / (1 + np.exp(-1.5 * x))
    y = (rng.random(n) < p).astype(int)
    if noise:
        p = np.clip(p + rng.normal(0, noise, n), 0, 1)
    return y, p, rng


def test_metric_directions_cover_every_metric():
    assert set(HIGHER_IS_BETTER) == set(METRICS)
    assert [m for m in METRICS if HIGHER_IS_BETTER[m]] == ["roc_auc", "pr_auc", "accuracy"]


def test_metrics_by_hand_on_six_points():
    m = compute_metrics(Y6, P6)
    assert (m.n, m.positives, m.threshold) == (6, 3, 0.5)
    # AUC by counting pairs: positives 0.35, 0.8, 0.9 vs negatives 0.1, 0.4, 0.7.
    # 0.35 beats one negative, 0.8 and 0.9 beat all three: 7 of 9 pairs.
    assert m.roc_auc == pytest.approx(7 / 9)
    # Ranked by p: 0.9(+) 0.8(+) 0.7(-) 0.4(-) 0.35(+) 0.1(-): precision at each positive.
    assert m.pr_auc == pytest.approx((1 / 1 + 2 / 2 + 3 / 5) / 3)
    brier = (0.1**2 + 0.4**2 + 0.65**2 + 0.2**2 + 0.7**2 + 0.1**2) / 6
    assert m.brier == pytest.approx(brier)
    assert m.brier == pytest.approx(0.18875)
    log_loss = (
        -(
            math.log(0.9)
            + math.log(0.6)
            + math.log(0.35)
            + math.log(0.8)
            + math.log(0.3)
            + math.log(0.9)
        )
        / 6
    )
    assert m.log_loss == pytest.approx(log_loss)
    # Predictions at 0.5: 0 0 0 1 1 1 against 0 0 1 1 0 1.
    assert m.accuracy == pytest.approx(4 / 6)
    # Every point is alone in its bin, so ECE is the mean |p - y|.
    assert m.ece == pytest.approx((0.1 + 0.4 + 0.65 + 0.2 + 0.7 + 0.1) / 6)


def test_threshold_is_inclusive_and_configurable():
    assert compute_metrics([0, 1], [0.5, 0.5]).accuracy == 0.5  # both predicted positive
    assert compute_metrics(Y6, P6, threshold=0.3).accuracy == pytest.approx(4 / 6)
    assert compute_metrics(Y6, P6, threshold=0.75).accuracy == pytest.approx(5 / 6)


def test_ties_count_half_a_pair():
    # One positive and one negative share p = 0.5: 0.5 of a pair; the other 3 pairs are won.
    m = compute_metrics([1, 0, 1, 0], [0.5, 0.5, 0.9, 0.1])
    assert m.roc_auc == pytest.approx(3.5 / 4)


def test_log_loss_clips_certain_mistakes():
    m = compute_metrics([1, 0], [0.0, 1.0])
    assert m.log_loss == pytest.approx(-math.log(1e-7))
    assert math.isfinite(m.log_loss)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_agree_with_sklearn(seed):
    y, p, _ = _synthetic(n=3000, seed=seed)
    p = np.round(p, 2)  # many ties
    m = compute_metrics(y, p, threshold=0.4)
    assert m.roc_auc == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert m.pr_auc == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    assert m.log_loss == pytest.approx(skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), rel=1e-12)
    assert m.brier == pytest.approx(skm.brier_score_loss(y, p), rel=1e-12)
    assert m.accuracy == pytest.approx(skm.accuracy_score(y, (p >= 0.4).astype(int)))
    assert m.positives == int(y.sum())


def test_ece_weights_bins_by_count():
    y = np.array([1, 0, 0, 1, 1, 1])
    p = np.array([0.12, 0.15, 0.18, 0.61, 0.65, 0.99])
    # Bin [0.1, 0.2): mean p 0.15, fraction 1/3, 3 rows; bin [0.6, 0.7): 0.63 vs 1, 2 rows;
    # bin [0.9, 1.0]: 0.99 vs 1, 1 row.
    expected = (3 * abs(0.15 - 1 / 3) + 2 * abs(0.63 - 1) + 1 * abs(0.99 - 1)) / 6
    assert compute_metrics(y, p).ece == pytest.approx(expected)


def test_single_class_gives_none_auc_but_other_metrics():
    m = compute_metrics([1, 1, 1], [0.9, 0.6, 0.4])
    assert m.roc_auc is None and m.pr_auc is None
    assert m.brier == pytest.approx((0.01 + 0.16 + 0.36) / 3)
    assert m.accuracy == pytest.approx(2 / 3)
    assert m.as_dict()["roc_auc"] is None
    assert set(m.as_dict()) == {"n", "positives", *METRICS, "threshold"}


def test_calibration_bins():
    y = np.array([0, 1, 1, 0, 1, 1])
    p = np.array([0.0, 0.05, 0.3, 0.55, 0.95, 1.0])
    cal = calibration(y, p, bins=4)
    assert cal.bin_edges == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert cal.counts == [2, 1, 1, 2]  # p = 1.0 falls in the last bin
    assert cal.mean_predicted == pytest.approx([0.025, 0.3, 0.55, 0.975])
    assert cal.fraction_positive == pytest.approx([0.5, 1.0, 0.0, 1.0])


def test_calibration_empty_bins_and_exact_edges():
    cal = calibration([0, 1], [0.3, 0.3], bins=10)
    assert cal.counts == [0, 0, 0, 2, 0, 0, 0, 0, 0, 0]  # 0.3 opens bin [0.3, 0.4)
    assert cal.mean_predicted[3] == pytest.approx(0.3)
    assert cal.fraction_positive[3] == pytest.approx(0.5)
    assert cal.mean_predicted[0] is None and cal.fraction_positive[9] is None
    assert sum(cal.counts) == 2


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], "labels 0 and 1"),
        (["no", "yes"], [0.1, 0.2], "y_true"),
        ([0, 1], [0.1, 1.2], r"p must lie in \[0, 1\]"),
        ([0, 1], [-0.1, 0.5], r"p must lie in \[0, 1\]"),
        ([0, 1], [0.1, np.nan], "NaN"),
        ([0, 1, 1], [0.1, 0.2], "differ in length"),
        ([[0, 1]], [[0.1, 0.2]], "y_true must be 1-D"),
        ([0, 1], [[0.1, 0.9], [0.8, 0.2]], "p must be 1-D"),
        ([], [], "empty"),
        ([0, 1], ["a", "b"], "p must be numeric"),
    ],
)
def test_invalid_inputs_raise_naming_the_problem(y, p, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(y, p)


def test_invalid_threshold_and_bins():
    with pytest.raises(ValueError, match="threshold"):
        compute_metrics(Y6, P6, threshold=1.5)
    with pytest.raises(ValueError, match="bins"):
        calibration(Y6, P6, bins=0)


def test_boolean_and_float_labels_accepted():
    expected = compute_metrics(Y6, P6)
    assert compute_metrics(Y6.astype(bool), P6) == expected
    assert compute_metrics(Y6.astype(float), P6) == expected


def test_evaluate_slices():
    y, p, rng = _synthetic(n=4000, seed=3)
    carrier = rng.choice(["AA", "UA", "DL"], size=y.size)
    carrier[:20] = "XX"  # 20 rows: below the minimum size
    cluster = rng.integers(0, 3, size=y.size).astype(float)
    cluster[20:60] = np.nan  # a missing slice of 40 rows
    origin = np.where(np.arange(y.size) < 100, "ONE", "JFK")
    y = y.copy()
    y[:100] = 1  # origin ONE holds a single class
    frame = pd.DataFrame(
        {"carrier": carrier, "cluster_id": cluster, "origin": origin},
        index=np.arange(y.size) + 1000,
    )  # the index is ignored
    result = evaluate("candidate", y, p, frame, min_slice_size=30)
    assert result.model == "candidate"
    assert result.overall == compute_metrics(y, p)
    assert set(result.slices) == {"carrier", "cluster_id", "origin"}
    assert set(result.slices["carrier"]) == {"AA", "DL", "UA"}
    assert list(result.slices["cluster_id"]) == ["0", "1", "2", MISSING_SLICE]
    assert result.slices["cluster_id"][MISSING_SLICE].n == 40
    for value in ("AA", "DL", "UA"):
        mask = carrier == value
        assert _close(result.slices["carrier"][value], compute_metrics(y[mask], p[mask]))
    one = result.slices["origin"]["ONE"]
    assert one.n == 100 and one.positives == 100
    assert one.roc_auc is None and one.pr_auc is None and one.brier >= 0
    assert result.slices["origin"]["JFK"].roc_auc is not None
    assert sum(m.n for m in result.slices["cluster_id"].values()) == y.size


def test_evaluate_min_slice_size_and_length_check():
    y, p, _ = _synthetic(n=100)
    frame = pd.DataFrame({"g": ["a"] * 70 + ["b"] * 30})
    assert set(evaluate("m", y, p, frame, min_slice_size=31).slices["g"]) == {"a"}
    assert set(evaluate("m", y, p, frame, min_slice_size=30).slices["g"]) == {"a", "b"}
    assert evaluate("m", y, p, frame, min_slice_size=71).slices == {"g": {}}
    with pytest.raises(ValueError, match="slices has 99 rows"):
        evaluate("m", y, p, frame.iloc[:99])
    assert evaluate("m", y, p).slices == {}


def test_roc_curve_downsampled():
    y, p, _ = _synthetic(n=20000, seed=4)
    fpr, tpr = evaluate("m", y, p).roc_curve
    assert 2 <= len(fpr) <= 200 and len(fpr) == len(tpr)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert all(b >= a for a, b in itertools.pairwise(fpr))
    assert evaluate("m", [1, 1], [0.2, 0.3]).roc_curve == ([], [])


def _two_results():
    y, p, rng = _synthetic(n=3000, seed=5)
    _, p_old, _ = _synthetic(n=3000, seed=5, noise=0.15)
    frame = pd.DataFrame({"carrier": rng.choice(["AA", "UA"], size=y.size)})
    frame.loc[:9, "carrier"] = "ZZ"  # only in one model's result below
    cand = evaluate("candidate", y, p, frame, min_slice_size=10)
    champ = evaluate("champion", y, p_old, frame, min_slice_size=11)
    return cand, champ


def test_metrics_table_markdown_contains_the_numbers():
    cand, champ = _two_results()
    table = metrics_table_markdown([cand, champ])
    lines = table.splitlines()
    assert lines[0] == "| metric | candidate | champion |"
    assert f"{cand.overall.roc_auc:.4f}" in table and f"{champ.overall.roc_auc:.4f}" in table
    assert f"{champ.overall.log_loss:.4f}" in table
    assert any(line.startswith("| roc_auc (higher is better) |") for line in lines)
    assert any(line.startswith("| ece (lower is better) |") for line in lines)
    assert "| n | 3000 | 3000 |" in table


def test_slice_table_markdown():
    cand, champ = _two_results()
    table = slice_table_markdown([cand, champ], "carrier")
    header = table.splitlines()[0]
    assert "candidate n" in header and "champion roc_auc" in header
    assert header.index("candidate ece") < header.index("champion n")
    aa = cand.slices["carrier"]["AA"]
    row_aa = next(line for line in table.splitlines() if line.startswith("| AA |"))
    assert f"{aa.roc_auc:.4f}" in row_aa and f"| {aa.n} |" in row_aa
    row_zz = next(line for line in table.splitlines() if line.startswith("| ZZ |"))
    assert "—" in row_zz  # champion has no ZZ slice (below its minimum size)
    with pytest.raises(ValueError, match="slice dimension 'nope'"):
        slice_table_markdown([cand], "nope")


def test_slice_table_shows_na_for_single_class():
    frame = pd.DataFrame({"g": ["x"] * 40 + ["y"] * 40})
    y = np.r_[np.ones(40, int), np.tile([0, 1], 20)]
    p = np.linspace(0.05, 0.95, 80)
    table = slice_table_markdown([evaluate("m", y, p, frame)], "g", metrics=("roc_auc", "brier"))
    row_x = next(line for line in table.splitlines() if line.startswith("| x |"))
    assert row_x.split(" | ")[2] == "n/a"


def test_plot_evaluation_png():
    cand, champ = _two_results()
    single = evaluate("one-class", [1] * 40, np.linspace(0.1, 0.9, 40))
    png = plot_evaluation([cand, champ, single])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) < 300_000
    with pytest.raises(ValueError):
        plot_evaluation([])


# --- one metric at a time, and a metric's bootstrap interval (the gate's absolute bars) ---------------


def test_metric_function_equals_compute_metrics_for_every_metric():
    from ml_assets.ml.metrics import metric_function

    rng = np.random.default_rng(4)
    y = (rng.random(500) < 0.3).astype(np.int8)
    p = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.2, 500), 0, 1)
    reference = compute_metrics(y, p, threshold=0.4)
    for metric in METRICS:
        assert metric_function(metric, 0.4)(y, p) == pytest.approx(getattr(reference, metric), abs=1e-12), metric


def test_metric_intervals_by_rows_and_by_days():
    from ml_assets.ml.metrics import metric_intervals

    rng = np.random.default_rng(5)
    y = (rng.random(2000) < 0.3).astype(int)
    p = np.clip(0.3 + 0.2 * (y - 0.3) + rng.normal(0, 0.15, 2000), 0, 1)
    days = np.repeat([f"2013-03-0{d}" for d in range(1, 9)], 250)
    rows = metric_intervals(y, p, ["ece", "roc_auc"], resamples=300, seed=1)
    by_day = metric_intervals(y, p, ["ece", "roc_auc"], resamples=300, seed=1, groups=days)
    for metric in ("ece", "roc_auc"):
        expected = getattr(compute_metrics(y, p), metric)
        for result in (rows, by_day):
            assert result[metric]["estimate"] == pytest.approx(expected)
            assert result[metric]["low"] <= result[metric]["high"]
        assert rows[metric]["low"] < expected < rows[metric]["high"]
    assert metric_intervals(y, p, ["ece"], resamples=300, seed=1) == metric_intervals(y, p, ["ece"], resamples=300,
                                                                                     seed=1)
    one_day = metric_intervals(y, p, ["ece"], resamples=300, groups=np.repeat("2013-03-01", 2000))
    assert "at least 2 groups" in one_day["ece"]["error"]
