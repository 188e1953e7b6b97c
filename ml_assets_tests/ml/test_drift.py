"""Drift statistics against hand-computed values, stored references, and seeded flights-like days."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ml_assets.ml import drift as drift_module
from ml_assets.ml import drift_reference
from ml_assets.ml.drift import (
    OTHER,
    CategoricalReference,
    DriftThresholds,
    NumericReference,
    ReferenceStats,
    drift,
    plot_drift,
    reference_stats,
)

# Tiny hand-made inputs: judge every feature however few its values.
TINY = DriftThresholds(min_count=1)

NUMERIC = [
    "distance", "temp", "dewp", "humid", "wind_speed", "precip", "pressure", "visib",
    "sched_dep_hour", "sched_dep_minute_of_day",
]
CATEGORICAL = ["carrier", "origin", "dest", "weekday"]
CARRIERS = ["UA", "B6", "EV", "DL", "AA", "MQ", "US", "9E", "WN", "VX", "FL", "AS", "F9", "YV", "HA", "OO"]
CARRIER_WEIGHTS = np.array([58, 54, 54, 48, 33, 27, 21, 18, 12, 5, 3, 1, 1, 1, 0.5, 0.1])
DESTS = [f"D{i:02d}" for i in range(15)]
DEST_WEIGHTS = 1.0 / np.arange(1, 16)
DEST_MILES = np.linspace(200, 2500, 15)


def flights_like(n: int, seed: int, distance_shift: float = 0.0, dominant_carrier: str | None = None):
    """Independent draws shaped like the flights spec's 14 features (weather joined, derived)."""
    rng = np.random.default_rng(seed)
    dest = rng.choice(len(DESTS), n, p=DEST_WEIGHTS / DEST_WEIGHTS.sum())
    temp = rng.normal(55, 17, n)
    hour = rng.choice(np.arange(5, 24), n).astype(float)
    frame = pd.DataFrame({
        "distance": DEST_MILES[dest] + rng.normal(0, 30, n) + distance_shift,
        "temp": temp,
        "dewp": temp - rng.gamma(2.0, 5.0, n),
        "humid": np.clip(rng.normal(60, 18, n), 10, 100),
        "wind_speed": rng.gamma(3.0, 3.5, n),
        "precip": np.where(rng.random(n) < 0.92, 0.0, rng.exponential(0.05, n).round(2)),
        "pressure": np.where(rng.random(n) < 0.1, np.nan, rng.normal(1017, 7, n)),
        "visib": np.where(rng.random(n) < 0.85, 10.0, rng.uniform(0, 10, n).round(1)),
        "sched_dep_hour": hour,
        "sched_dep_minute_of_day": hour * 60 + rng.choice(np.arange(0, 60, 5), n),
        "carrier": rng.choice(CARRIERS, n, p=CARRIER_WEIGHTS / CARRIER_WEIGHTS.sum()),
        "origin": rng.choice(["EWR", "JFK", "LGA"], n, p=[0.36, 0.33, 0.31]),
        "dest": np.array(DESTS)[dest],
        "weekday": rng.choice([str(d) for d in range(1, 8)], n),
    })
    if dominant_carrier:
        frame.loc[rng.random(n) < 0.6, "carrier"] = dominant_carrier
    return frame


@pytest.fixture(scope="module")
def reference():
    """28 days x 900 rows of reference, summarised once."""
    window = [f"2013-06-{d:02d}" for d in range(1, 29)]
    return reference_stats(flights_like(28 * 900, seed=7), NUMERIC, CATEGORICAL, window)


def by_name(report):
    return {f.name: f for f in report.features}


# --- hand-computed statistics ----------------------------------------------------------------


def test_psi_matches_hand_computation():
    # Reference 1, 2, 3, 4 in 2 bins: the median (inverted CDF) is 2, so the bins are
    # (-inf, 2] and (2, inf] with fractions 0.5 / 0.5.
    ref = reference_stats(pd.DataFrame({"x": [1.0, 2, 3, 4]}), ["x"], [], [], bins=2)
    x = ref.features["x"]
    assert x.bin_edges == [-math.inf, 2.0, math.inf]
    assert x.bin_fractions == [0.5, 0.5]

    # Current 1, 1, 1, 4 -> fractions 0.75 / 0.25.
    # PSI = (0.75 - 0.5) ln(0.75 / 0.5) + (0.25 - 0.5) ln(0.25 / 0.5)
    #     = 0.25 ln 1.5 + 0.25 ln 2 = 0.25 ln 3 = 0.274653
    result = by_name(drift(ref, pd.DataFrame({"x": [1.0, 1, 1, 4]}), TINY))["x"]
    assert result.psi == pytest.approx(0.25 * math.log(3)) == pytest.approx(0.274653, abs=1e-6)
    assert result.statistic == "psi" and result.threshold == 0.2 and result.drifted

    # Current 1, 1, 1, 1 -> fractions 1.0 / 0.0; the empty bin is floored at 1e-4:
    # PSI = (1 - 0.5) ln(1 / 0.5) + (1e-4 - 0.5) ln(1e-4 / 0.5)
    #     = 0.5 * 0.693147 + (-0.4999) * (-8.517193) = 0.346574 + 4.257745 = 4.604318
    result = by_name(drift(ref, pd.DataFrame({"x": [1.0, 1, 1, 1]}), TINY))["x"]
    assert result.psi == pytest.approx(4.604318, abs=1e-5)


def test_normalized_wasserstein_matches_hand_computation():
    # Reference 0, 0, 2, 2: mean 1, population std sqrt(((1 + 1 + 1 + 1) / 4)) = 1.
    # Two distinct values <= bins, so each gets its own bin: the edge is the midpoint 1.
    ref = reference_stats(pd.DataFrame({"x": [0.0, 0, 2, 2]}), ["x"], [], [])
    assert ref.features["x"].std == 1.0
    assert ref.features["x"].bin_edges == [-math.inf, 1.0, math.inf]

    # Current 0, 2, 2, 2. The CDFs are 0.5 (reference) and 0.25 (current) on [0, 2), so
    # W1 = integral |F - G| = 0.25 * 2 = 0.5, divided by std 1 -> 0.5.
    current = pd.DataFrame({"x": [0.0, 2, 2, 2]})
    result = by_name(drift(ref, current, DriftThresholds(min_count=1, numeric_rule="wasserstein")))["x"]
    assert result.wasserstein == pytest.approx(0.5)
    assert result.statistic == "wasserstein" and result.threshold == 0.1 and result.drifted
    # The same day's PSI: fractions 0.25 / 0.75 against 0.5 / 0.5 -> 0.25 ln 2 + 0.25 ln 1.5 = 0.25 ln 3.
    assert result.psi == pytest.approx(0.25 * math.log(3))
    # The KS p-value is scipy's two-sample test of the stored sample against the current values.
    expected = stats.ks_2samp([0.0, 0, 2, 2], [0.0, 2, 2, 2], method="asymp").pvalue
    assert result.p_value == pytest.approx(expected)


def test_constant_reference_floors_std_like_evidently():
    # Reference 5, 5, 5, 5 has std 0 -> floored at 0.001. Current 5, 5, 5, 6:
    # W1 = 0.25 * (6 - 5) = 0.25, / 0.001 = 250.
    ref = reference_stats(pd.DataFrame({"x": [5.0, 5, 5, 5]}), ["x"], [], [])
    moved = by_name(drift(ref, pd.DataFrame({"x": [5.0, 5, 5, 6]}), TINY))["x"]
    assert moved.wasserstein == pytest.approx(250.0)
    still = by_name(drift(ref, pd.DataFrame({"x": [5.0, 5, 5, 5]}), TINY))["x"]
    assert still.wasserstein == 0.0 and still.psi == pytest.approx(0.0) and not still.drifted


def test_js_distance_and_chi_square_match_hand_computation():
    # Reference a, a, b, b -> p = (a 0.5, b 0.5, __other__ 0). Current a, a, a, a -> q = (1, 0, 0).
    # m = (p + q) / 2 = (0.75, 0.25, 0)
    # KL(p || m) = 0.5 log2(0.5 / 0.75) + 0.5 log2(0.5 / 0.25) = 0.5 (-0.584963) + 0.5 (1) = 0.207519
    # KL(q || m) = 1 log2(1 / 0.75) = 0.415037
    # JS divergence = (0.207519 + 0.415037) / 2 = 0.311278; distance = sqrt(0.311278) = 0.557923
    ref = reference_stats(pd.DataFrame({"c": ["a", "a", "b", "b"]}), [], ["c"], [])
    assert ref.features["c"].frequencies == {"a": 0.5, "b": 0.5, OTHER: 0.0}
    result = by_name(drift(ref, pd.DataFrame({"c": ["a"] * 4}), TINY))["c"]
    assert result.js_distance == pytest.approx(0.557923, abs=1e-6)
    assert result.statistic == "jensen_shannon" and result.drifted

    # Chi-square: top_k=2 of a, a, b, c keeps a (0.5) and b (0.25; the b/c tie goes by name);
    # c is __other__ (0.25). Current a, b, c, c: observed (1, 1, 2), expected 4 * (0.5, 0.25, 0.25)
    # = (2, 1, 1). chi2 = (1 - 2)^2 / 2 + 0 + (2 - 1)^2 / 1 = 1.5 with 2 degrees of freedom,
    # whose survival function is exp(-x / 2): p = exp(-0.75) = 0.472367.
    ref = reference_stats(pd.DataFrame({"c": ["a", "a", "b", "c"]}), [], ["c"], [], top_k=2)
    assert ref.features["c"].frequencies == {"a": 0.5, "b": 0.25, OTHER: 0.25}
    result = by_name(drift(ref, pd.DataFrame({"c": ["a", "b", "c", "c"]}), TINY))["c"]
    assert result.p_value == pytest.approx(math.exp(-0.75)) == pytest.approx(0.472367, abs=1e-6)


def test_unseen_categories_go_to_other():
    # top_k=1: reference a, a, a, b -> (a 0.75, __other__ 0.25). A current day with an unseen "z"
    # in b's place has the same distribution over (a, __other__): JS distance 0.
    ref = reference_stats(pd.DataFrame({"c": ["a", "a", "a", "b"]}), [], ["c"], [], top_k=1)
    assert ref.features["c"].frequencies == {"a": 0.75, OTHER: 0.25}
    same = by_name(drift(ref, pd.DataFrame({"c": ["a", "z", "a", "a"]}), TINY))["c"]
    assert same.js_distance == pytest.approx(0.0, abs=1e-7) and not same.drifted

    # Only unseen values: all mass on __other__, disjoint from (a 0.5, b 0.5) -> distance 1 (base 2).
    ref = reference_stats(pd.DataFrame({"c": ["a", "a", "b", "b"]}), [], ["c"], [])
    new = by_name(drift(ref, pd.DataFrame({"c": ["y", "z", "z", "z"]}), TINY))["c"]
    assert new.js_distance == pytest.approx(1.0) and new.drifted


def test_nulls_are_excluded_and_reported():
    frame = pd.DataFrame({"x": [1.0, 2, 3, 4, np.nan, np.nan], "c": ["a", "a", "b", "b", None, None]})
    ref = reference_stats(frame, ["x"], ["c"], [], bins=2)
    x, c = ref.features["x"], ref.features["c"]
    assert x.null_rate == pytest.approx(1 / 3) and x.n == 6 and x.n_non_null == 4
    assert x.bin_fractions == [0.5, 0.5] and x.mean == 2.5
    assert c.null_rate == pytest.approx(1 / 3) and c.frequencies == {"a": 0.5, "b": 0.5, OTHER: 0.0}

    # Nulls (and infinities) in the current day neither move PSI/JS nor count in n_current.
    current = pd.DataFrame({"x": [1.0, 1, 1, 4, np.nan, np.inf], "c": ["a", "a", "a", "a", None, None]})
    report = drift(ref, current, TINY)
    rx, rc = by_name(report)["x"], by_name(report)["c"]
    assert rx.psi == pytest.approx(0.25 * math.log(3))  # as without the nulls
    assert rx.n_current == 4 and rx.n_reference == 4 and rx.null_rate_current == pytest.approx(1 / 3)
    assert rc.js_distance == pytest.approx(0.557923, abs=1e-6) and rc.n_current == 4
    assert report.n_current == 6

    # A day with too few non-null values is reported, not judged.
    empty = drift(ref, pd.DataFrame({"x": [np.nan] * 6, "c": [None] * 6}))
    for result in empty.features:
        assert not result.drifted and result.n_current == 0 and result.note.startswith("not judged")
        assert result.psi is None and result.js_distance is None and result.null_rate_current == 1.0
    assert empty.drifted_share == 0.0

    with pytest.raises(ValueError, match="no non-null values"):
        reference_stats(pd.DataFrame({"x": [np.nan, np.nan]}), ["x"], [], [])


def test_point_mass_and_discrete_binning():
    # 88 zeros then 12 distinct positives (precip-like). The deciles 0.1-0.8 are all 0 (the CDF
    # reaches 0.88 at 0) and deduplicate to one edge; the 0.9 quantile is the 2nd positive, 0.02
    # (CDF 0.90). Bins (-inf, 0], (0, 0.02], (0.02, inf] hold 88, 2 and 10 values.
    positives = [0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5]
    precip = pd.DataFrame({"p": [0.0] * 88 + positives})
    p = reference_stats(precip, ["p"], [], []).features["p"]
    assert p.bin_edges == [-math.inf, 0.0, 0.02, math.inf]
    assert p.bin_fractions == pytest.approx([0.88, 0.02, 0.10])
    # Few distinct levels: one bin each, edges at the midpoints.
    hours = pd.DataFrame({"h": [5.0, 6, 6, 7, 7, 7]})
    h = reference_stats(hours, ["h"], [], []).features["h"]
    assert h.bin_edges == [-math.inf, 5.5, 6.5, math.inf]
    assert h.bin_fractions == pytest.approx([1 / 6, 2 / 6, 3 / 6])


# --- stored reference ------------------------------------------------------------------------


def test_reference_json_round_trip(reference):
    text = reference.to_json()
    # Strict JSON: no NaN or Infinity tokens (the outer infinite edges are implied).
    json.loads(text, parse_constant=lambda token: pytest.fail(f"non-standard JSON token {token}"))
    loaded = ReferenceStats.from_json(text)
    assert loaded == reference
    assert loaded.window == reference.window and len(loaded.window) == 28
    distance = loaded.features["distance"]
    assert isinstance(distance, NumericReference)
    assert distance.bin_edges[0] == -math.inf and distance.bin_edges[-1] == math.inf
    assert len(distance.bin_edges) == 11 and sum(distance.bin_fractions) == pytest.approx(1.0)
    assert len(distance.sorted_sample) == 5000
    assert distance.sorted_sample == sorted(distance.sorted_sample)
    carrier = loaded.features["carrier"]
    assert isinstance(carrier, CategoricalReference)
    assert list(carrier.frequencies)[-1] == OTHER
    assert sum(carrier.frequencies.values()) == pytest.approx(1.0)


def test_drift_reads_only_the_stored_reference(reference, monkeypatch):
    text = reference.to_json()
    current = flights_like(900, seed=11)
    expected = drift(reference, current)

    # No reference frame and no way to rebuild one: drift() must work from the JSON alone.
    def forbidden(*args, **kwargs):
        raise AssertionError("drift() recomputed reference statistics")

    for module in (drift_module, drift_reference):
        monkeypatch.setattr(module, "reference_stats", forbidden)
        monkeypatch.setattr(module, "_inner_edges", forbidden)
    report = drift(ReferenceStats.from_json(text), current)
    assert report == expected
    assert report.n_current == 900 and len(report.features) == 14


# --- realistic synthetic days ----------------------------------------------------------------


def test_unshifted_days_do_not_drift(reference):
    # Twenty independent days from the reference's distribution: with the default rule (PSI for
    # numeric, JS for categorical) none flags. (Measured: 0 of 200 such days flag.)
    for seed in range(100, 120):
        report = drift(reference, flights_like(900, seed=seed))
        assert report.drifted_features == [], (seed, report.table_markdown())
        assert report.drifted_share == 0.0
        assert all(r.n_current > 700 and r.note == "" for r in report.features)
        assert max(r.psi for r in report.features if r.kind == "numeric") < 0.05  # 4x margin


@pytest.mark.parametrize("rule", ["wasserstein", "either"])
def test_unshifted_day_under_wasserstein_rules(reference, rule):
    # Normalised Wasserstein at 0.1 is much closer to its noise floor: on 200 such days, 10 had a
    # false alarm on one of the ten numeric features. This day is a typical one.
    report = drift(reference, flights_like(900, seed=100), DriftThresholds(numeric_rule=rule))
    assert report.drifted_features == [], report.table_markdown()
    assert max(r.wasserstein for r in report.features if r.kind == "numeric") < 0.1


def test_injected_shifts_are_flagged(reference):
    shift = 1.5 * reference.features["distance"].std
    for seed in range(100, 105):
        day = flights_like(900, seed=seed, distance_shift=shift, dominant_carrier="ZZ")
        report = drift(reference, day)
        assert sorted(report.drifted_features) == ["carrier", "distance"], report.table_markdown()
        assert report.drifted_share == pytest.approx(2 / 14)
        for rule in ("wasserstein", "either"):  # these may add a noise alarm (see above)
            report = drift(reference, day, DriftThresholds(numeric_rule=rule))
            assert {"carrier", "distance"} <= set(report.drifted_features)
    results = by_name(drift(reference, day))
    # A +1.5 std location shift moves the distributions 1.5 std apart.
    assert results["distance"].wasserstein == pytest.approx(1.5, abs=0.1)
    assert results["distance"].psi > 1.0
    # The new carrier ZZ lands in __other__ (about 60 % of the day against ~0 in the reference).
    assert results["carrier"].js_distance > 0.5
    assert results["carrier"].p_value < 1e-6


def test_either_rule_reports_the_deciding_statistic():
    ref = reference_stats(pd.DataFrame({"x": [0.0, 0, 2, 2]}), ["x"], [], [])
    # PSI 0.25 ln 3 = 0.27 is 1.4x its 0.2 threshold; Wasserstein 0.5 is 5x its 0.1 threshold.
    result = by_name(drift(ref, pd.DataFrame({"x": [0.0, 2, 2, 2]}),
                           DriftThresholds(min_count=1, numeric_rule="either")))["x"]
    assert result.drifted and result.statistic == "wasserstein" and result.threshold == 0.1
    assert result.value == pytest.approx(0.5)
    with pytest.raises(ValueError):
        DriftThresholds(numeric_rule="ks")


def test_missing_feature_column_is_an_error(reference):
    with pytest.raises(KeyError, match="dest"):
        drift(reference, flights_like(100, seed=1).drop(columns=["dest"]))


# --- outputs ---------------------------------------------------------------------------------


def test_markdown_lists_every_feature_and_dict_is_json(reference):
    day = flights_like(900, seed=3, distance_shift=1000.0)
    report = drift(reference, day)
    table = report.table_markdown()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split("|")[1].strip() for row in rows] == NUMERIC + CATEGORICAL
    assert "| distance | numeric | psi |" in table and "**yes**" in table
    assert "1 of 14 counted features drifted" in table
    payload = json.loads(json.dumps(report.as_dict()))
    assert payload["drifted_features"] == ["distance"] and len(payload["features"]) == 14
    assert payload["thresholds"]["psi"] == 0.2


def test_excluded_features_are_reported_but_not_counted(reference):
    day = flights_like(900, seed=3, distance_shift=1000.0)
    report = drift(reference, day, exclude_from_share=["distance", "carrier"])
    distance = next(f for f in report.features if f.name == "distance")
    assert distance.drifted and not distance.counted
    assert report.drifted_features == [] and report.drifted_share == 0.0
    assert len(report.counted_features) == 12
    assert "(not counted)" in report.table_markdown()
    counted = drift(reference, day)
    assert counted.drifted_share == pytest.approx(1 / 14)
    with pytest.raises(KeyError, match="nonsense"):
        drift(reference, day, exclude_from_share=["nonsense"])


def test_plot_is_a_png(reference):
    report = drift(reference, flights_like(900, seed=3, dominant_carrier="ZZ"))
    png = plot_drift(report)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    # Nothing judged still draws.
    empty = drift(reference, flights_like(10, seed=3))
    assert plot_drift(empty)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("n_sample", "n_current"), [(5000, 6551), (40, 31), (5000, 900)])
def test_sample_tests_match_scipy(n_sample, n_current):
    # One merge gives both: the KS p-value exactly as scipy's asymptotic ks_2samp, the Wasserstein
    # distance as scipy's up to the last bits of its final sum (numpy's, not BLAS's dot). Ties included.
    rng = np.random.default_rng(n_sample + n_current)
    sample = np.sort(np.round(rng.normal(10, 3, n_sample), 1))
    current = np.round(rng.normal(10.5, 3, n_current), 1)
    distance, p_value = drift_module._sample_tests(sample, np.sort(current), True)
    assert distance == pytest.approx(stats.wasserstein_distance(sample, current), rel=1e-12)
    assert p_value == stats.ks_2samp(sample, current, method="asymp").pvalue
    assert drift_module._sample_tests(sample, np.sort(current), False) == (distance, None)


@pytest.mark.parametrize("values", [
    ["a", "b", None, "a", np.nan, "c"],  # strings: counted as they are
    [1, "1", 2.0, None, "x"],  # mixed: by string form, 1 and "1" together
    [3, 1, 3, 2],  # integers
    [],
])
def test_category_counts_are_counts_of_the_string_forms(values):
    series = pd.Series(values, dtype=object)
    counts, n = drift_module._category_counts(series)
    expected = series.dropna().astype(str).value_counts()
    assert n == len(series.dropna()) and counts.sort_index().to_dict() == expected.sort_index().to_dict()
