"""Our drift statistics against Evidently's DataDriftPreset defaults, on the same seeded data.

Evidently (a dev dependency: only this test and bench/bench_drift.py import it, never ml_assets)
with more than 1000 reference rows scores a numeric column with more than 5 distinct values by
the Wasserstein distance normed by the reference std, and a categorical column by the
Jensen-Shannon distance with the natural log; both drift at >= 0.1. Our Wasserstein is the same
statistic (exactly, while the reference fits in ``sample_size``) and our JS distance is base 2,
i.e. Evidently's divided by sqrt(ln 2) (exactly, while every reference category is in the top K).
"""

import importlib.metadata
import math

import numpy as np
import pandas as pd
import pytest

from ml_assets.ml.drift import drift, reference_stats

JS_BASE2_TO_NATURAL = math.sqrt(math.log(2.0))
EVIDENTLY_WASSERSTEIN = "Wasserstein distance (normed)"
EVIDENTLY_JS = "Jensen-Shannon distance"
NUMERIC = ["x", "y"]
CATEGORICAL = ["c"]
CATEGORIES = ["a", "b", "c", "d", "e", "f"]
WEIGHTS = np.array([0.3, 0.25, 0.2, 0.12, 0.08, 0.05])


def frame(n: int, seed: int, shift: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(10.0, 2.0, n) + (0.6 if shift else 0.0)  # 0.3 reference std
    y = rng.exponential(3.0, n) * (1.3 if shift else 1.0)
    if shift:  # mass moves to the tail, and a category the reference never saw appears
        categories, weights = (
            [*CATEGORIES, "new"],
            np.array([0.15, 0.15, 0.2, 0.15, 0.15, 0.1, 0.1]),
        )
    else:
        categories, weights = CATEGORIES, WEIGHTS
    c = rng.choice(categories, n, p=weights / weights.sum())
    out = pd.DataFrame({"x": x, "y": y, "c": pd.Series(c, dtype=object)})
    out.loc[rng.random(n) < 0.02, "x"] = np.nan  # nulls are dropped by both
    return out


def evidently_columns(current: pd.DataFrame, reference: pd.DataFrame) -> dict[str, dict]:
    """Per column: Evidently's resolved method, drift score and verdict (its "drift" test)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    payload = snapshot.dict()
    columns = {}
    for metric in payload["metrics"]:
        config = metric["config"]
        if config["type"] == "evidently:metric_v2:ValueDrift":
            columns[config["column"]] = {
                "method": config["method"],
                "threshold": config["threshold"],
                "score": float(metric["value"]),
            }
    for test in payload["tests"]:
        params = test["metric_config"]["params"]
        if test["id"] == "drift" and params["type"] == "evidently:metric_v2:ValueDrift":
            columns[params["column"]]["drifted"] = test["status"] == "FAIL"
    return columns


def test_evidently_imports_under_the_pinned_pandas():
    # pandas stays on 2.3 on purpose: evidently 0.7 fails to import under pandas 3.
    import evidently
    from evidently import Report  # noqa: F401
    from evidently.presets import DataDriftPreset  # noqa: F401

    assert importlib.metadata.version("pandas").startswith("2.3.")
    assert evidently.__version__ == importlib.metadata.version("evidently")


@pytest.mark.parametrize("shift", [False, True], ids=["unshifted", "shifted"])
def test_wasserstein_and_js_match_evidently(shift):
    reference = frame(3000, seed=1)  # > 1000 rows: Evidently's Wasserstein / JS defaults
    current = frame(800, seed=2, shift=shift)
    stats = reference_stats(reference, NUMERIC, CATEGORICAL, window=[])
    ours = {f.name: f for f in drift(stats, current).features}
    theirs = evidently_columns(current, reference)

    for name in NUMERIC:
        assert theirs[name]["method"] == EVIDENTLY_WASSERSTEIN
        assert theirs[name]["threshold"] == pytest.approx(0.1)
        # The whole reference is our sample (3000 <= sample_size): the very same statistic.
        assert ours[name].wasserstein == pytest.approx(theirs[name]["score"], rel=0, abs=1e-9)
        assert (ours[name].wasserstein >= 0.1) == theirs[name]["drifted"]
    assert theirs["c"]["method"] == EVIDENTLY_JS
    # Every reference category is in our top K; the one unseen category is our __other__ bin,
    # which has no reference mass, as Evidently's own bin for it.
    js_natural = ours["c"].js_distance * JS_BASE2_TO_NATURAL
    assert js_natural == pytest.approx(theirs["c"]["score"], rel=0, abs=1e-9)
    assert (js_natural >= 0.1) == theirs["c"]["drifted"]

    verdicts = {name: column["drifted"] for name, column in theirs.items()}
    if shift:
        assert verdicts == {"x": True, "y": True, "c": True}
    else:
        assert verdicts == {"x": False, "y": False, "c": False}
