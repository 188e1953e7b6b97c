"""ECE of both candidates before and after post-hoc calibration, over training cycles of the flights data.

For each as-of date (the last of 7 holdout days) the 28 days before the holdout are the training
window, features built as the spec declares (pandas). Per flavor, with the project's trainers:

* ``uncalibrated``: trained on all 28 days, no calibration (the candidates before calibration);
* per calibration split (``spread``: the spec's calibration_days spread over the window, the
  default; ``last``: the window's last days): ``<split>_uncalibrated``, the model trained on the
  other days (the one the calibrator wraps), and ``<split>_isotonic`` / ``<split>_platt``.

Each is scored on the holdout: ECE with its 95% bootstrap interval (1000 resamples of rows, and
of whole days), the calibration-in-the-large part |mean p - positive rate| (a lower bound of ECE)
and ROC AUC. Prints one JSON object and writes bench/results/calibration.json.

    .venv/bin/python bench/bench_calibration.py [--as-of 2013-03-31,2013-05-31] [--flavors keras,sklearn]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

AS_OF = "2013-03-31,2013-04-30,2013-05-31,2013-06-30,2013-07-31,2013-08-31"
SPLITS = ("spread", "last")
VARIANTS = ("uncalibrated", *(f"{s}_{v}" for s in SPLITS for v in ("uncalibrated", "isotonic", "platt")))


def day_features(frames, day: dt.date):
    import numpy as np

    from ml_assets.examples.flights_features import flights_features

    flights = frames["flights"]
    on_day = flights[(flights.year == day.year) & (flights.month == day.month) & (flights.day == day.day)]
    frame, labels = flights_features({**frames, "flights": on_day}, n_rows=len(on_day), seed=0)
    return frame.assign(date=day.isoformat()), np.asarray(labels)


def window(frames, first: dt.date, days: int):
    import numpy as np
    import pandas as pd

    parts = [day_features(frames, first + dt.timedelta(days=i)) for i in range(days)]
    return pd.concat([p[0] for p in parts], ignore_index=True), np.concatenate([p[1] for p in parts])


def scored(y, p, threshold: float, days) -> dict:
    from ml_assets.ml.metrics import compute_metrics, metric_intervals

    interval = metric_intervals(y, p, ["ece"], threshold=threshold, resamples=1000, seed=13)["ece"]
    by_day = metric_intervals(y, p, ["ece"], threshold=threshold, resamples=1000, seed=13, groups=days)["ece"]
    return {"ece": round(interval["estimate"], 4), "ece_interval": [round(interval["low"], 4), round(interval["high"], 4)],
            "ece_interval_days": [round(by_day["low"], 4), round(by_day["high"], 4)],
            "in_the_large": round(abs(float(p.mean()) - float(y.mean())), 4),
            "roc_auc": round(compute_metrics(y, p, threshold).roc_auc, 4)}


def cycle(frames, as_of: dt.date, flavors: list[str], spec) -> dict:
    from ml_assets.ml.calibration import calibration_split, fit_calibrator
    from ml_assets.ml.models import (
        FeatureColumns,
        KerasParams,
        SklearnParams,
        train_keras,
        train_sklearn,
    )

    holdout_days, window_days = spec.training.holdout_days, spec.training.window_days
    holdout_start = as_of - dt.timedelta(days=holdout_days - 1)
    train_x, train_y = window(frames, holdout_start - dt.timedelta(days=window_days), window_days)
    test_x, test_y = window(frames, holdout_start, holdout_days)
    columns = FeatureColumns.from_spec(spec)
    threshold = spec.promotion.decision_threshold
    days = test_x["date"].to_numpy()
    splits = {split: calibration_split(train_x["date"].to_numpy(), spec.training.calibration_days, split)
              for split in SPLITS}
    out = {"as_of": as_of.isoformat(), "train_rows": len(train_x), "holdout_rows": len(test_x),
           "positive_rate": {"train": round(float(train_y.mean()), 4), "holdout": round(float(test_y.mean()), 4),
                             **{f"{split}_days": round(float(train_y[rows].mean()), 4)
                                for split, (_, rows, _) in splits.items()}},
           "calibration_days": {split: held for split, (_, _, held) in splits.items()}}
    trainers = {"keras": (train_keras, KerasParams()), "sklearn": (train_sklearn, SklearnParams())}
    for flavor in flavors:
        trainer, params = trainers[flavor]
        began = time.perf_counter()
        full = trainer(train_x, train_y, columns, params, seed=13)
        result = {"uncalibrated": scored(test_y, full.predict_proba(test_x), threshold, days)}
        for split, (fit_rows, cal_rows, _) in splits.items():
            short = trainer(train_x.iloc[fit_rows], train_y[fit_rows], columns, params, seed=13)
            raw_calibration = short.predict_proba(train_x.iloc[cal_rows])
            raw = short.predict_proba(test_x)
            result[f"{split}_uncalibrated"] = scored(test_y, raw, threshold, days)
            for method in ("isotonic", "platt"):
                calibrator = fit_calibrator(raw_calibration, train_y[cal_rows], method)
                result[f"{split}_{method}"] = scored(test_y, calibrator.apply(raw), threshold, days)
        result["seconds"] = round(time.perf_counter() - began, 1)
        out[flavor] = result
        print(json.dumps({"as_of": out["as_of"], flavor: result}), file=sys.stderr, flush=True)
    return out


def summary(cycles: list[dict], flavors: list[str], bar: float) -> dict:
    out = {}
    for flavor in flavors:
        rows = [c[flavor] for c in cycles]
        out[flavor] = {
            variant: {
                "mean_ece": round(sum(r[variant]["ece"] for r in rows) / len(rows), 4),
                "mean_roc_auc": round(sum(r[variant]["roc_auc"] for r in rows) / len(rows), 4),
                "cycles_ece_above_bar_point": sum(r[variant]["ece"] > bar for r in rows),
                "cycles_ece_above_bar_interval": sum(r[variant]["ece_interval"][0] > bar for r in rows),
                "cycles_ece_above_bar_interval_days": sum(r[variant]["ece_interval_days"][0] > bar for r in rows),
            }
            for variant in VARIANTS
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--as-of", default=AS_OF, help="comma-separated last holdout days")
    parser.add_argument("--flavors", default="keras,sklearn")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ml_assets.examples import load_example
    from ml_assets.spec import load_spec

    spec = load_spec("flights")
    frames = load_example(spec.example_data)
    flavors = [f for f in args.flavors.split(",") if f]
    started = time.perf_counter()
    cycles = [cycle(frames, dt.date.fromisoformat(d), flavors, spec) for d in args.as_of.split(",") if d]
    bar = spec.promotion.absolute.get("ece", 0.1)
    result = {
        "benchmark": "holdout ECE before/after post-hoc calibration, flights training cycles",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "window_days": spec.training.window_days, "holdout_days": spec.training.holdout_days,
        "calibration_days": spec.training.calibration_days, "ece_bar": bar,
        "confidence": 0.95,
        "summary": summary(cycles, flavors, bar), "cycles": cycles,
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "calibration.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
