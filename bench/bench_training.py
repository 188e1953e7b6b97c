"""Time to train both candidates on a 28-day window of real flights data; prints one JSON object.

The window is 2013-01-01..01-28 (the spec's training.window_days), features built as the spec
declares; the 7 days after it are scored to show the models learned something. Each trainer
runs once warm (TensorFlow imported, one tiny fit done) so import time is reported separately.
"""

import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml_assets.examples import load_example
from ml_assets.examples.flights_features import flights_features
from ml_assets.ml.evaluation import compute_metrics
from ml_assets.ml.models import (
    FeatureColumns,
    KerasParams,
    SklearnParams,
    train_keras,
    train_sklearn,
)
from ml_assets.spec import load_spec

TARGET_SECONDS = 60.0


def window(frames, first_day: int, last_day: int):
    flights = frames["flights"]
    in_window = flights[(flights.month == 1) & flights.day.between(first_day, last_day)]
    return flights_features({**frames, "flights": in_window}, n_rows=len(in_window), seed=0)


def main() -> None:
    spec = load_spec("flights")
    columns = FeatureColumns.from_spec(spec)
    frames = load_example(spec.example_data)
    train_x, train_y = window(frames, 1, 28)
    test_x, test_y = window(frames, 29, 31)

    started = time.perf_counter()
    import tensorflow  # noqa: F401

    tf_import = time.perf_counter() - started
    train_keras(train_x.head(500), train_y[:500], columns, KerasParams(epochs=1), seed=1)  # warm-up
    train_sklearn(train_x.head(500), train_y[:500], columns, SklearnParams(max_iter=5), seed=1)

    timings, aucs = {}, {}
    for name, trainer, params in (("keras", train_keras, KerasParams()), ("sklearn", train_sklearn, SklearnParams())):
        began = time.perf_counter()
        model = trainer(train_x, train_y, columns, params, seed=13)
        timings[name] = round(time.perf_counter() - began, 2)
        aucs[name] = round(compute_metrics(test_y, model.predict_proba(test_x)).roc_auc, 4)
    both = round(sum(timings.values()), 2)
    print(json.dumps({
        "benchmark": "train both candidates on a 28-day window",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "train_rows": len(train_x), "features": len(columns.names), "holdout_rows": len(test_x),
        "tensorflow_import_seconds": round(tf_import, 2),
        "train_seconds": timings, "both_candidates_seconds": both,
        "holdout_roc_auc": aucs,
        "target_seconds": TARGET_SECONDS, "target_met": both < TARGET_SECONDS,
    }, indent=2))


if __name__ == "__main__":
    main()
