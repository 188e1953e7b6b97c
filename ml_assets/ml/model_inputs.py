"""Raw feature records -> validated columns: the input rules every model flavor shares.

A saved artifact takes the *raw* feature values named in the spec (numbers, strings, nulls):
these rules decide what is accepted, for batch scoring and serving alike.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

MISSING_CATEGORY = ""


class InvalidRecordsError(ValueError):
    """Records a model cannot score; the message names the record index, the field and the problem."""



@dataclass(frozen=True)
class FeatureColumns:
    """The feature names a model reads, in order: numeric first, then categorical."""

    numeric: list[str]
    categorical: list[str]

    def __post_init__(self) -> None:
        names = [*self.numeric, *self.categorical]
        if not names:
            raise ValueError("a model needs at least one feature column")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"feature columns listed more than once: {duplicates}")

    @classmethod
    def from_spec(cls, spec: Any) -> FeatureColumns:
        return cls(numeric=list(spec.features.numeric_names),
                   categorical=list(spec.features.categorical_names))

    @property
    def names(self) -> list[str]:
        return [*self.numeric, *self.categorical]


# ---------------------------------------------------------------------------------------------
# Raw records -> validated columns


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(index: int, name: str, problem: str) -> InvalidRecordsError:
    return InvalidRecordsError(f"record {index}: feature {name!r} {problem}")


def _numeric_value(value: Any, index: int, name: str) -> float:
    """One raw numeric value as a float; None and NaN are missing (NaN)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return math.nan
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise _bad(index, name, f"must be a number or null, got {type(value).__name__} {_show(value)}")
    try:
        number = float(value)
    except (OverflowError, ValueError):
        raise _bad(index, name, f"is not representable as a float: {_show(value)}") from None
    if math.isinf(number):
        raise _bad(index, name, f"must be finite, got {_show(value)}")
    return number


def _categorical_value(value: Any, index: int, name: str) -> str:
    """One raw categorical value as a string; None and NaN are missing ("")."""
    if isinstance(value, str):
        return value
    if value is None or value is pd.NA:
        return MISSING_CATEGORY
    if isinstance(value, float | np.floating) and math.isnan(value):
        return MISSING_CATEGORY
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return str(int(value))
    raise _bad(index, name, f"must be a string, an integer or null, got {type(value).__name__} {_show(value)}")


def _check_finite(name: str, values: np.ndarray) -> None:
    infinite = np.isinf(values)
    if infinite.any():
        index = int(np.argmax(infinite))
        raise _bad(index, name, f"must be finite, got {values[index]!r}")


def _columns_from_records(records: list[dict], columns: FeatureColumns) -> dict[str, np.ndarray]:
    """Row-wise validation for a list of mappings (the serving path: one to a few hundred rows)."""
    n = len(records)
    numeric = {name: np.empty(n, dtype=np.float64) for name in columns.numeric}
    categorical = {name: np.empty(n, dtype=object) for name in columns.categorical}
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise InvalidRecordsError(
                f"record {index}: expected an object mapping feature names to values, "
                f"got {type(record).__name__}")
        for name, out in numeric.items():
            try:
                value = record[name]
            except KeyError:
                raise InvalidRecordsError(f"record {index}: missing feature {name!r}") from None
            kind = type(value)
            if kind is float and not math.isinf(value):
                out[index] = value
            else:
                out[index] = _numeric_value(value, index, name)
        for name, out in categorical.items():
            try:
                value = record[name]
            except KeyError:
                raise InvalidRecordsError(f"record {index}: missing feature {name!r}") from None
            out[index] = value if type(value) is str else _categorical_value(value, index, name)
    return {**numeric, **categorical}


def _numeric_column(name: str, series: pd.Series) -> np.ndarray:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise _bad(0, name, f"must be a number or null, got a boolean column ({dtype})")
    if pd.api.types.is_numeric_dtype(dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        raw = series.to_numpy(dtype=object)
        values = np.fromiter((_numeric_value(v, i, name) for i, v in enumerate(raw)),
                             dtype=np.float64, count=len(raw))
    _check_finite(name, values)
    return values


def _categorical_column(name: str, series: pd.Series) -> np.ndarray:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise _bad(0, name, f"must be a string, an integer or null, got a boolean column ({dtype})")
    if isinstance(dtype, pd.CategoricalDtype):
        series = series.astype(object)
    raw = series.to_numpy(dtype=object)
    missing = pd.isna(raw)
    kind = pd.api.types.infer_dtype(raw, skipna=True)
    if kind in ("string", "empty"):
        values = raw.copy()
        values[missing] = MISSING_CATEGORY
        return values
    if kind == "integer" and not missing.any():
        return np.array([str(int(v)) for v in raw], dtype=object)
    return np.array([_categorical_value(v, i, name) for i, v in enumerate(raw)], dtype=object)


def _columns_from_frame(frame: pd.DataFrame, columns: FeatureColumns) -> dict[str, np.ndarray]:
    for name in columns.names:
        if name not in frame.columns:
            raise InvalidRecordsError(f"record 0: missing feature {name!r} (the frame has no such column)")
    out = {name: _numeric_column(name, frame[name]) for name in columns.numeric}
    out.update({name: _categorical_column(name, frame[name]) for name in columns.categorical})
    return out


def _feature_columns(records: list[dict] | pd.DataFrame, columns: FeatureColumns) -> dict[str, np.ndarray]:
    if isinstance(records, pd.DataFrame):
        return _columns_from_frame(records, columns)
    if isinstance(records, Mapping | str | bytes):
        raise InvalidRecordsError(
            f"expected a list of records or a DataFrame, got a single {type(records).__name__}")
    return _columns_from_records(list(records), columns)


def records_to_frame(records: list[dict] | pd.DataFrame, columns: FeatureColumns) -> pd.DataFrame:
    """Validated raw records as a frame of exactly the feature columns, numeric then categorical.

    Numeric values must be int/float or null (bool and str are errors, +-inf too); missing is
    NaN and the column float64. Categorical values must be str/int or null; ints become their
    decimal string, missing becomes "" and the column holds Python str (object dtype). Keys
    that are not features are ignored. A DataFrame keeps its index; a list gets 0..n-1.
    Raises InvalidRecordsError naming the record index, the feature and the problem.
    """
    values = _feature_columns(records, columns)
    index = records.index if isinstance(records, pd.DataFrame) else None
    return pd.DataFrame(values, columns=columns.names, index=index)


def _labels(y: Any, rows: int) -> np.ndarray:
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != rows:
        raise ValueError(f"labels must be a 1-d array of {rows} values, got shape {labels.shape}")
    if len(labels) and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    labels = labels.astype(np.int64)
    if len(np.unique(labels)) < 2:
        raise ValueError(f"training needs both classes; the {rows} labels are all one class")
    return labels



@runtime_checkable
class TabularModel(Protocol):
    flavor: str
    columns: FeatureColumns

    def predict_proba(self, records: list[dict] | pd.DataFrame) -> np.ndarray:
        """P(label = 1) for each record, float64, shape (n,)."""
        ...
