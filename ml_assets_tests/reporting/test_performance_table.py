"""The performance trigger's table in the cycle report: each day's window with the metric's and the drop's interval."""

from ml_assets.ml.performance import window_performance
from ml_assets.reporting.markdown_html import markdown_to_html
from ml_assets.reporting.performance import performance_trigger_table


def test_each_triggering_day_shows_its_window_and_intervals_and_missing_days_say_so():
    import numpy as np

    y = np.r_[np.zeros(60, int), np.ones(40, int)]
    p = np.r_[np.linspace(0.1, 0.7, 60), np.linspace(0.3, 0.9, 40)]
    result = window_performance(y, p, metric="roc_auc", holdout_value=0.95, max_drop=0.05,
                                days=["2024-05-10", "2024-05-11"])
    metadata = {**result.as_dict(), "window": "2024-05-10..2024-05-11 (2 days)"}
    table = performance_trigger_table(["2024-05-11", "2024-05-12"], {"2024-05-11": metadata})
    row = next(line for line in table.splitlines() if line.startswith("| 2024-05-11"))
    assert f"{result.live:.4f} [{result.low:.4f}, {result.high:.4f}]" in row
    assert f"{result.drop:+.4f} [{result.drop_low:+.4f}, {result.drop_high:+.4f}]" in row
    assert "| 2024-05-10..2024-05-11 (2 days) |" in row and "significant (95%)" in row and "| 100 |" in row
    assert "| 2024-05-12 | (missing) |" in table
    # Reports judged before windows existed have no interval: n/a, not an error.
    old = performance_trigger_table(["d"], {"d": {"metric": "roc_auc", "live": 0.7, "holdout": 0.8, "drop": 0.1,
                                                  "max_drop": 0.05, "rows": 900}})
    assert "0.7000 [n/a, n/a]" in old and "fixed" in old
    assert "<table" in markdown_to_html(table)
