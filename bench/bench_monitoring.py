"""Monitoring decisions: performance-trigger delay and false triggers, daily fixed bound vs trailing window
with an interval, and CBPE (estimated performance) against realised performance. Plain code, no Dagster.

Two sources of scored days, each replayed day by day through the same verdict -> trigger logic the
performance sensor uses (ml_assets.ml.triggers.decide: debounce 3 days; a trigger clears the verdicts
as a retrain would and starts a 14-day cooldown):

1. synthetic: calibrated probabilities (Beta(2, 5), expected ROC AUC 0.72) at 100, 1,000 and 10,000
   labelled rows a day, 150 days, 30% of the labels flipped from day 120 on (expected AUC 0.59); the
   holdout value is measured on 7 independent days. ``--streams`` streams per volume.
2. orders (ml_assets.examples.orders, ~165 rows a day): a calibrated (isotonic) logistic regression trained on
   January-February and scored on every later day, with (a) 30% of the labels flipped from 2024-05-01
   (a pure label-noise drop, before the example's own shift) and (b) the example's shift on 2024-05-15
   as it comes (covariate + concept shift, no injected noise).

Rules compared: ``daily_fixed`` (one day's metric vs holdout - max_drop, min_rows 200: the old rule),
``daily_fixed_any_rows`` (the same with min_rows 1), ``window_significant`` and ``window_confident``
(7-day window, 95% interval widened by the holdout value's own standard error;
ml_assets.ml.performance.window_performance).

CBPE: per day, the estimate from the probabilities (ml_assets.ml.cbpe) next to the realised metric:
mean absolute error and the share of days whose realised metric lies inside the 95% band, before and
after the onset (label noise is invisible to CBPE by construction: that row shows how much).

    .venv/bin/python bench/bench_monitoring.py [--streams 20] [--out bench/results/monitoring.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

from ml_assets.ml import cbpe
from ml_assets.ml.evaluation import compute_metrics
from ml_assets.ml.performance import holdout_standard_error, live_performance, window_performance
from ml_assets.ml.triggers import DayVerdict, decide

MAX_DROP = 0.05
WINDOW_DAYS = 7
DEBOUNCE, COOLDOWN = 3, 14
RULES = ("daily_fixed", "daily_fixed_any_rows", "window_significant", "window_confident")


def judge(rule: str, ys: list, ps: list, holdout: float, metric: str = "roc_auc", max_drop: float = MAX_DROP,
          holdout_se: float = 0.0) -> bool:
    if rule.startswith("daily"):
        return live_performance(ys[-1], ps[-1], metric=metric, holdout_value=holdout, max_drop=max_drop,
                                min_rows=200 if rule == "daily_fixed" else 1).flagged
    return window_performance(np.concatenate(ys[-WINDOW_DAYS:]), np.concatenate(ps[-WINDOW_DAYS:]), metric=metric,
                              holdout_value=holdout, max_drop=max_drop, rule=rule.removeprefix("window_"),
                              min_rows=100, min_class_rows=10, holdout_se=holdout_se).flagged


def replay(days: list[tuple[np.ndarray, np.ndarray]], holdout_metrics, onset: int, metric: str = "roc_auc",
           max_drop: float = MAX_DROP) -> dict[str, dict]:
    """Per rule: trigger days, false triggers per 30 days before the onset, delay (days) after it."""
    out = {}
    holdout = getattr(holdout_metrics, metric)
    holdout_se = holdout_standard_error(metric, holdout_metrics.as_dict())
    for rule in RULES:
        verdicts: dict[str, DayVerdict] = {}
        triggers, cooldown_until = [], -1
        for d in range(len(days)):
            ys, ps = [y for y, _ in days[: d + 1]], [p for _, p in days[: d + 1]]
            key = f"{d:04d}"
            verdicts[key] = DayVerdict(key, judge(rule, ys, ps, holdout, metric, max_drop, holdout_se), "")
            if d > cooldown_until and decide(verdicts, signal=rule, debounce_days=DEBOUNCE).request:
                triggers.append(d)
                verdicts.clear()
                cooldown_until = d + COOLDOWN
        false = [t for t in triggers if t < onset]
        after = [t for t in triggers if t >= onset]
        out[rule] = {"false_per_month": len(false) / (onset / 30.0), "delay_days": after[0] - onset if after else None}
    return out


def synthetic_stream(rng, rows: int, days: int = 150, onset: int = 120, flip: float = 0.3):
    stream = []
    for d in range(days):
        p = rng.beta(2.0, 5.0, rows)
        y = (rng.random(rows) < p).astype(np.int8)
        if d >= onset:
            y = np.where(rng.random(rows) < flip, 1 - y, y).astype(np.int8)
        stream.append((y, p))
    hp = rng.beta(2.0, 5.0, rows * 7)
    return stream, compute_metrics((rng.random(hp.size) < hp).astype(np.int8), hp)


def summarise(results: list[dict]) -> dict:
    out = {}
    for rule in RULES:
        delays = [r[rule]["delay_days"] for r in results]
        found = [d for d in delays if d is not None]
        out[rule] = {
            "false_triggers_per_month": round(float(np.mean([r[rule]["false_per_month"] for r in results])), 3),
            "median_delay_days": float(np.median(found)) if found else None,
            "detected_share": round(len(found) / len(delays), 3),
        }
    return out


def cbpe_vs_realised(days: list[tuple[np.ndarray, np.ndarray]], onset: int) -> dict:
    """MAE and band coverage of the CBPE estimate against the realised metric, before/after the onset."""
    rows = {"roc_auc": [], "accuracy": []}
    for d, (y, p) in enumerate(days):
        est = cbpe.estimate(p, samples=200, seed=d)
        realised = compute_metrics(y, p)
        for metric in rows:
            value, low, high = est.value(metric)
            actual = getattr(realised, metric)
            if value is not None and actual is not None:
                rows[metric].append((d >= onset, abs(value - actual), low <= actual <= high))
    out = {}
    for metric, items in rows.items():
        for name, after in (("before", False), ("after", True)):
            part = [(e, c) for a, e, c in items if a == after]
            out[f"{metric}_{name}"] = {"days": len(part), "mae": round(float(np.mean([e for e, _ in part])), 4),
                                       "band_coverage": round(float(np.mean([c for _, c in part])), 3)}
    return out


def realised_means(days: list[tuple[np.ndarray, np.ndarray]], onset: int) -> dict:
    """Mean daily realised ROC AUC and accuracy before and after the onset (the size of the loss)."""
    out = {}
    for name, part in (("before", days[:onset]), ("after", days[onset:])):
        metrics = [compute_metrics(y, p) for y, p in part]
        out[name] = {m: round(float(np.mean([getattr(x, m) for x in metrics if getattr(x, m) is not None])), 4)
                     for m in ("roc_auc", "accuracy")}
    return out


def orders_days(flip_from: dt.date | None, seed: int = 7):
    """The orders example scored day by day by a calibrated model trained on January-February."""
    import pandas as pd
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from ml_assets.examples.orders import generate

    orders, outcomes = generate(seed=seed)
    frame = orders.merge(outcomes[["order_id", "returned"]], on="order_id")
    frame["day"] = pd.to_datetime(frame["ordered_at"]).dt.date
    categorical = ["channel", "country", "category", "payment"]
    numeric = ["customer_tenure_days", "price", "quantity", "discount_pct", "shipping_days"]
    frame["is_gift"] = frame["is_gift"].astype(int)
    frame["discount_pct"] = frame["discount_pct"].fillna(0.0)
    columns = categorical + numeric + ["is_gift"]
    prep = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), categorical)],
                             remainder=StandardScaler())
    # A linear model: seconds to fit on a loaded 2-core machine; isotonic calibration as the candidates carry.
    model = CalibratedClassifierCV(make_pipeline(prep, LogisticRegression(max_iter=500)), method="isotonic", cv=3)
    train_end, holdout_end = dt.date(2024, 2, 29), dt.date(2024, 3, 14)
    train = frame[frame["day"] <= train_end]
    model.fit(train[columns], train["returned"].astype(int))
    rng = np.random.default_rng(seed)
    days, holdout_y, holdout_p, dates = [], [], [], []
    for day, part in frame[frame["day"] > train_end].groupby("day"):
        p = model.predict_proba(part[columns])[:, 1]
        y = part["returned"].astype(np.int8).to_numpy()
        if day <= holdout_end:
            holdout_y.append(y)
            holdout_p.append(p)
            continue
        if flip_from is not None and day >= flip_from:
            y = np.where(rng.random(y.size) < 0.3, 1 - y, y).astype(np.int8)
        days.append((y, p))
        dates.append(day)
    holdout = compute_metrics(np.concatenate(holdout_y), np.concatenate(holdout_p))
    return days, dates, holdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=20, help="synthetic streams per volume")
    parser.add_argument("--out", type=Path, default=Path("bench/results/monitoring.json"))
    args = parser.parse_args(argv)
    began = time.perf_counter()
    rng = np.random.default_rng(2026)
    result: dict = {"max_drop": MAX_DROP, "window_days": WINDOW_DAYS, "debounce_days": DEBOUNCE,
                    "cooldown_days": COOLDOWN, "metric": "roc_auc", "synthetic": {}, "orders": {}}
    for rows in (100, 1000, 10000):
        streams = [synthetic_stream(rng, rows) for _ in range(args.streams if rows < 10000 else max(3, args.streams // 4))]
        result["synthetic"][f"{rows}_rows_a_day"] = {
            "streams": len(streams), "onset_day": 120, "label_flip": 0.3,
            **summarise([replay(s, h, onset=120) for s, h in streams]),
        }
        if rows == 1000:
            stream, _ = streams[0]
            result["synthetic"]["cbpe_1000_rows_a_day_label_noise_from_day_120"] = cbpe_vs_realised(stream, 120)

    for name, flip_from, onset_day in (("label_noise_from_2024-05-01", dt.date(2024, 5, 1), dt.date(2024, 5, 1)),
                                       ("example_shift_2024-05-15", None, dt.date(2024, 5, 15))):
        days, dates, holdout = orders_days(flip_from)
        onset = dates.index(onset_day)
        result["orders"][name] = {
            "days": len(days), "rows_a_day": round(float(np.mean([y.size for y, _ in days])), 1),
            "holdout": {"roc_auc": round(holdout.roc_auc, 4), "accuracy": round(holdout.accuracy, 4)},
            "onset_index": onset, "realised_mean": realised_means(days, onset),
            "roc_auc_max_drop_0.05": replay(days, holdout, onset),
            "accuracy_max_drop_0.02": replay(days, holdout, onset, metric="accuracy", max_drop=0.02),
            "cbpe_vs_realised": cbpe_vs_realised(days, onset),
        }
    result["seconds"] = round(time.perf_counter() - began, 1)
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
