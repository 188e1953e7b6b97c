"""A faster, numerically identical predict for the sklearn pipeline of `ml_assets.ml.models`.

`SklearnTabularModel.predict_proba` pays a fixed ~2-5 ms per call whatever the row count: pandas
frame construction, the pipeline's ColumnTransformer + OrdinalEncoder, and
HistGradientBoostingClassifier's own internal ColumnTransformer + OrdinalEncoder and input
validation. For one serving row that is the whole latency budget.

`accelerate(model)` composes both encoders into one dict lookup per categorical feature, built
by running the model's OWN fitted transformers over every category they know (so infrequent-
category grouping, unknown and missing values come out exactly as they do in the pipeline), and
then sums the trees with the classifier's own predictors. It returns None, and the caller keeps
`model.predict_proba`, unless the model has exactly the structure it understands AND the fast
function reproduces `model.predict_proba` to 1e-12 on ~500 verification rows covering every known
category, unknown / missing / integer categories, missing numbers and values at every split
threshold. It relies on private scikit-learn attributes (`_predictors`, `_preprocessor`,
`_predict_iterations`, `_baseline_prediction`, `_loss`); the verification is what makes a future
scikit-learn that changes them fall back to the slow path rather than predict differently.

Input records must already be validated (the serving app does that, with the same rules as
`records_to_frame`): numbers or None for numeric features; str, int or None for categorical.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Predict = Callable[[list[dict]], np.ndarray]
_NAN = float("nan")
_TOLERANCE = 1e-12


def _category(value: Any) -> str:
    """A validated categorical value as records_to_frame stores it."""
    if value is None or (type(value) is float and math.isnan(value)):
        return ""
    return str(value)


def accelerate(model: Any) -> Predict | None:
    """A verified fast predict for `model`, or None (use `model.predict_proba`)."""
    if getattr(model, "flavor", None) != "sklearn":
        return None
    try:
        predict = _compile_sklearn(model)
        if predict is None:
            return None
        problem = _verify(model, predict)
    except Exception as error:  # anything unexpected: the slow path is always correct
        log.info("no fast path for this sklearn model: %s: %s", type(error).__name__, error)
        return None
    if problem:
        log.warning("fast path disabled: %s", problem)
        return None
    return predict


def _classifier(pipeline: Any) -> Any:
    """The pipeline's classifier, unwrapped from its calibration step if it has one."""
    step = pipeline.steps[1][1]
    return getattr(step, "estimator", step)


def _compile_sklearn(model: Any) -> Predict | None:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    pipeline = model.pipeline
    columns = model.columns
    numeric, categorical = list(columns.numeric), list(columns.categorical)
    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return None
    outer, classifier = pipeline.steps[0][1], _classifier(pipeline)
    calibrator = getattr(pipeline.steps[1][1], "calibrator", None)  # a CalibratedClassifier's, applied last
    if not isinstance(outer, ColumnTransformer) or not isinstance(
        classifier, HistGradientBoostingClassifier
    ):
        return None
    if classifier.n_trees_per_iteration_ != 1 or list(classifier.classes_) != [0, 1]:
        return None
    # Known categories per categorical feature, from the fitted OrdinalEncoder(s). The rest of
    # the structure is not assumed: it is probed below and the result verified.
    known: dict[str, list[str]] = {}
    for _, step, cols in outer.transformers_:
        if isinstance(step, OrdinalEncoder):
            if step.handle_unknown != "use_encoded_value" or not np.isnan(step.unknown_value):
                return None  # unknown categories would not simply be NaN
            for j, name in enumerate(cols):
                known[name] = [str(c) for c in step.categories_[j]]
    if any(name not in known for name in categorical):
        return None

    # The composed transform (outer ColumnTransformer, then the classifier's own preprocessing)
    # of a probe frame tells where each feature lands and what each category becomes.
    def composed(frame: pd.DataFrame) -> np.ndarray:
        inner = outer.transform(frame)
        return np.asarray(classifier._preprocess_X(inner, reset=False), dtype=np.float64)

    rows = max([len(values) for values in known.values()] + [2])
    probe: dict[str, Any] = {}
    for i, name in enumerate(numeric):
        probe[name] = np.arange(rows, dtype=np.float64) + 1000.0 * (i + 1) + 0.25
    for name in categorical:
        values = known[name] or [""]
        probe[name] = np.array([values[r % len(values)] for r in range(rows)], dtype=object)
    final = composed(pd.DataFrame(probe, columns=[*numeric, *categorical]))
    width = final.shape[1]
    if width != len(numeric) + len(categorical):
        return None

    numeric_targets: list[tuple[int, str]] = []
    used: set[int] = set()
    for name in numeric:
        matches = [c for c in range(width) if np.array_equal(final[:, c], probe[name])]
        if len(matches) != 1:
            return None
        numeric_targets.append((matches[0], name))
        used.add(matches[0])
    categorical_targets: list[tuple[int, str, dict[str, float]]] = []
    remaining = [c for c in range(width) if c not in used]
    for name in categorical:
        # Shift this one feature by one category: the output column that changes is its own.
        values = known[name] or [""]
        shifted = dict(probe)
        shifted[name] = np.array([values[(r + 1) % len(values)] for r in range(rows)], dtype=object)
        moved = composed(pd.DataFrame(shifted, columns=[*numeric, *categorical]))
        changed = [
            c for c in remaining if not np.array_equal(moved[:, c], final[:, c], equal_nan=True)
        ]
        if len(values) > 1 and len(changed) != 1:
            return None
        if len(values) == 1:  # a constant feature: find the column by elimination below
            changed = changed or [None]
        column = changed[0]
        lookup: dict[str, float] = {}
        if column is not None:
            for r, value in enumerate(probe[name]):
                lookup[value] = float(final[r, column])
            remaining.remove(column)
        categorical_targets.append((column, name, lookup))
    # Constant categorical features get whatever columns are left, in order.
    for index, (column, name, lookup) in enumerate(categorical_targets):
        if column is None:
            if not remaining:
                return None
            column = remaining.pop(0)
            value = known[name][0] if known[name] else ""
            lookup = {value: float(final[0, column])}
            categorical_targets[index] = (column, name, lookup)
    if remaining:
        return None

    baseline = classifier._baseline_prediction
    predictors = classifier._predictors
    loss = classifier._loss

    def predict(records: list[dict]) -> np.ndarray:
        n = len(records)
        matrix = np.empty((n, width), dtype=np.float64)
        for column, name in numeric_targets:
            matrix[:, column] = [record[name] for record in records]
        for column, name, lookup in categorical_targets:
            get = lookup.get
            matrix[:, column] = [
                get(v if type(v) is str else _category(v), _NAN)
                for v in (record[name] for record in records)
            ]
        raw = np.zeros((n, 1), dtype=baseline.dtype, order="F")
        raw += baseline
        classifier._predict_iterations(matrix, predictors, raw, False, 1)
        probability = np.asarray(loss.predict_proba(raw)[:, 1], dtype=np.float64)
        return probability if calibrator is None else calibrator.apply(probability)

    return predict


def _verification_records(model: Any, rows: int = 500, seed: int = 0) -> list[dict]:
    """Rows that exercise every category, odd categorical values and every split threshold."""
    rng = np.random.default_rng(seed)
    columns = model.columns
    pipeline = model.pipeline
    outer, classifier = pipeline.steps[0][1], _classifier(pipeline)
    from sklearn.preprocessing import OrdinalEncoder

    known: dict[str, list[str]] = {}
    for _, step, cols in outer.transformers_:
        if isinstance(step, OrdinalEncoder):
            for j, name in enumerate(cols):
                known[name] = [str(c) for c in step.categories_[j]]
    thresholds = [np.asarray(t, dtype=np.float64) for t in classifier._bin_mapper.bin_thresholds_]
    pool = np.concatenate([t for t in thresholds if t.size] or [np.zeros(1)])
    records = []
    for r in range(rows):
        record: dict[str, Any] = {}
        for name in columns.numeric:
            pick = rng.random()
            if pick < 0.1:
                record[name] = None
            elif pick < 0.6 and pool.size:
                base = float(rng.choice(pool))
                record[name] = base + float(rng.choice([-1e-9, 0.0, 1e-9]))
            elif pick < 0.7:
                record[name] = int(rng.integers(-50, 3000))
            else:
                record[name] = float(rng.normal(0, 1000))
        for name in columns.categorical:
            values = known.get(name, [])
            pick = rng.random()
            if r < len(values):  # every known category at least once
                record[name] = values[r]
            elif pick < 0.8 and values:
                record[name] = str(rng.choice(values))
            elif pick < 0.85:
                record[name] = None
            elif pick < 0.9:
                record[name] = ""
            elif pick < 0.95:
                record[name] = int(rng.integers(0, 10))
            else:
                record[name] = "never-seen-category"
        records.append(record)
    return records


def _verify(model: Any, predict: Predict) -> str | None:
    records = _verification_records(model)
    slow = np.asarray(model.predict_proba(records), dtype=np.float64)
    for size in (len(records), 1, 7):
        fast = np.concatenate(
            [predict(records[i : i + size]) for i in range(0, len(records), size)]
        )
        if fast.shape != slow.shape:
            return f"fast path returned shape {fast.shape}, expected {slow.shape}"
        deviation = float(np.max(np.abs(fast - slow)))
        if not deviation <= _TOLERANCE:
            return f"fast path deviates from predict_proba by {deviation:.3g} (batch size {size})"
    return None
